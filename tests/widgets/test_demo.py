"""The demo behind ``make demo`` lives with the widgets and docks every manifest widget."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from npe2 import PluginManager

from napari_seglab._widgets import demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_is_a_widget_module_not_a_core_one():
    assert demo.__name__ == "napari_seglab._widgets.demo"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("napari_seglab.demo")


def test_demo_docks_exactly_the_manifest_widgets():
    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-seglab")
    assert set(demo.WIDGETS) == {w.display_name for w in manifest.contributions.widgets}


def test_make_demo_runs_the_moved_module():
    makefile = (ROOT / "Makefile").read_text()
    assert "-m napari_seglab._widgets.demo" in makefile
    done = subprocess.run(
        [sys.executable, "-m", "napari_seglab._widgets.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--headless" in done.stdout
