"""Where napari-seglab keeps downloaded models and on-disk caches."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SEGLAB_CACHE_DIR"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The cache folder, or a sub-folder of it.

    ``$SEGLAB_CACHE_DIR`` when set, else the platform's user cache folder
    (``~/.cache/napari-seglab`` on Linux, ``~/Library/Caches/napari-seglab`` on
    macOS, ``%LOCALAPPDATA%\\napari-seglab\\Cache`` on Windows).

    Parameters
    ----------
    *parts : str
        Sub-folder names, e.g. ``cache_dir("models")``.
    create : bool
        Create the folder if it does not exist.
    """
    root = os.environ.get(ENV_VAR, "").strip()
    if root:
        base = Path(root).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("napari-seglab", appauthor=False))
    path = base.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
