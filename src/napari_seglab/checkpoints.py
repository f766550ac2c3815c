"""Writing model files safely: one place for the atomic ``torch.save``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to a temporary file beside ``path``, then rename it.

    A crash or a full disk never leaves a half-written checkpoint at ``path``.
    Save only tensors, numbers, strings, lists and dicts so that the file
    reads back with ``torch.load(..., weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    import torch

    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder for {path.name!r} not found: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
