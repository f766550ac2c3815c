"""Folders written atomically: fill a temporary folder beside the target, then rename it.

The folder counterpart of :func:`napari_seglab.checkpoints.atomic_path`, for
outputs that are folders (zarr and OME-Zarr stores). The temporary folder's
name starts with :data:`~napari_seglab.checkpoints.TEMP_PREFIX` and carries the
host and process id, like atomic_path's temporary files, so a killed write
leaves only a ``.seglab-tmp-...`` folder (which the next write into that
folder removes), never a folder under the target's name that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..checkpoints import TEMP_PREFIX, _host_tag, _pid_alive

__all__ = ["atomic_dir", "clean_stale_dirs"]


def clean_stale_dirs(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary folders of :func:`atomic_dir` whose writer is gone.

    Only folders made on this host by a process that no longer runs are
    removed (a folder's age says nothing about whether a long write into its
    subfolders still runs, so folders of other hosts are left alone).

    Returns
    -------
    list of Path
        The folders removed.
    """
    removed = []
    host = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        parts = entry.name[len(TEMP_PREFIX) :].split("-", 3)
        try:
            same_host, pid = parts[0] == host, int(parts[1])
        except (IndexError, ValueError):
            continue
        if same_host and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary folder to write ``target``'s content into; renamed to ``target`` on success.

    The temporary folder is created beside ``target`` (same file system, so
    the rename is one step). When the ``with`` block ends normally, an existing
    ``target`` is first moved aside (to another temporary name) and removed
    after the new folder took its place; on any exception the temporary folder
    is removed and ``target`` is left as it was. Stale temporary folders of
    killed writers in that folder are removed first (:func:`clean_stale_dirs`).

    Parameters
    ----------
    target : path-like
        The folder to create (or replace).
    overwrite : bool
        Replace an existing ``target``; False raises ``FileExistsError``.

    Raises
    ------
    FileNotFoundError
        If the folder that should hold ``target`` does not exist.
    FileExistsError
        ``target`` exists and ``overwrite`` is False, or it is a file.
    """
    target = Path(target).expanduser()
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"Folder for {target.name!r} not found: {parent}")
    if target.exists() and (not overwrite or not target.is_dir()):
        kind = "folder" if target.is_dir() else "file"
        raise FileExistsError(
            f"Expected a new folder name, {str(target)!r} is an existing {kind}."
        )
    clean_stale_dirs(parent)
    stem = f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-"
    tmp = parent / (stem + secrets.token_hex(4) + "-" + target.name[-(180 - len(stem)) :])
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = parent / (stem + secrets.token_hex(4) + "-old-" + target.name[-160:])
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
