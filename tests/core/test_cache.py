"""The one cache folder: ``SEGLAB_CACHE_DIR``, else the platform's user cache folder."""

from __future__ import annotations

import ast
from pathlib import Path

from platformdirs import user_cache_dir

import napari_seglab
from napari_seglab.cache import ENV_VAR, cache_dir


def test_env_var_sets_the_folder_and_parts_join(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "root"))
    assert cache_dir(create=False) == tmp_path / "root"
    assert not (tmp_path / "root").exists()
    sam = cache_dir("sam", "x")
    assert sam == tmp_path / "root" / "sam" / "x"
    assert sam.is_dir()


def test_platform_folder_when_env_var_unset_or_blank(monkeypatch):
    expected = Path(user_cache_dir("napari-seglab", appauthor=False))
    monkeypatch.delenv(ENV_VAR)
    assert cache_dir(create=False) == expected
    monkeypatch.setenv(ENV_VAR, "  ")
    assert cache_dir("sam", create=False) == expected / "sam"


def test_user_folder_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # Windows
    monkeypatch.setenv(ENV_VAR, "~/seglab")
    assert cache_dir(create=False) == tmp_path / "seglab"


def test_one_cache_dir_function_in_the_package():
    """Only ``napari_seglab.cache`` defines ``cache_dir``; everyone else imports it."""
    root = Path(napari_seglab.__file__).parent
    defined = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined += [
            path.relative_to(root).as_posix()
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name == "cache_dir"
        ]
    assert defined == ["cache.py"]
