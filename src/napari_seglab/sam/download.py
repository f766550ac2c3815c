"""Checkpoint files: cache folder, verified downloads, offline guidance.

A download streams into a temporary file next to the target, hashing as it
goes; only a complete file with the expected hash is moved into place with
:func:`os.replace` (atomic on one file system). Any failure (network error,
truncated transfer, hash mismatch, cancel) removes the temporary file, so the
cache never holds a partial checkpoint.

Cache folder: ``$SEGLAB_CACHE_DIR`` if set, else the platform's user cache
folder for ``napari-seglab`` (``platformdirs.user_cache_dir``). Checkpoints
live in its ``sam`` sub-folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..cache import ENV_VAR as CACHE_ENV_VAR
from .registry import CheckpointSpec, get_checkpoint

__all__ = [
    "CACHE_ENV_VAR",
    "cache_dir",
    "checkpoint_path",
    "download_file",
    "ensure_checkpoint",
    "file_digest",
    "verify_file",
]

_CHUNK = 1 << 20

ProgressCallback = Callable[[int, "int | None"], None]


def cache_dir(subfolder: str | None = None) -> Path:
    """The cache folder (created if missing), optionally a sub-folder of it.

    Delegates to :func:`napari_seglab.cache.cache_dir` (``$SEGLAB_CACHE_DIR``,
    else the platform's user cache folder).
    """
    from ..cache import cache_dir as shared_cache_dir

    return shared_cache_dir(*((subfolder,) if subfolder else ()))


def checkpoint_path(spec: CheckpointSpec | str) -> Path:
    """Where the cached file of a registered checkpoint lives (it may not exist yet)."""
    spec = get_checkpoint(spec) if isinstance(spec, str) else spec
    return cache_dir("sam") / spec.filename


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verify_file(path: str | Path, expected_hash: str) -> None:
    """Check a file against ``"<algorithm>:<hex>"``; raise RuntimeError naming both digests.

    A successful check is remembered in ``<file>.verified.json`` (size, mtime
    and digest), so a file that did not change is not hashed again.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    algorithm, expected = expected_hash.split(":", 1)
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": expected_hash}
    sidecar = _sidecar(path)
    try:
        if json.loads(sidecar.read_text()) == stamp:
            return
    except (OSError, ValueError):
        pass
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise RuntimeError(
            f"Checkpoint {path} does not match its registered {algorithm.upper()}: expected "
            f"{expected}, got {actual} ({stat.st_size} bytes). The file is corrupt, incomplete "
            "or a different model: delete it and download it again."
        )
    with contextlib.suppress(OSError):  # read-only cache: verify again next time
        sidecar.write_text(json.dumps(stamp))


def download_file(
    url: str,
    destination: str | Path,
    expected_hash: str | None,
    *,
    progress: bool | ProgressCallback = True,
    timeout: float = 60.0,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its hash.

    Parameters
    ----------
    url : str
    destination : path
        Final file path; its folder is created if needed.
    expected_hash : str or None
        ``"sha256:<hex>"`` or ``"md5:<hex>"``; None skips the check.
    progress : bool or callable
        True shows a tqdm progress bar; a callable receives
        ``(bytes_done, bytes_total_or_None)`` after each block.
    timeout : float
        Seconds to wait for the server on connect and on each read.
    cancel : callable, optional
        Returns True to abort; the partial file is removed.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    RuntimeError
        Network failure, truncated transfer or hash mismatch; the message names
        the URL and what did not match. No file is left behind.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    algorithm, expected = expected_hash.split(":", 1) if expected_hash else ("sha256", None)
    digest = hashlib.new(algorithm)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    tmp = Path(tmp_name)
    bar = None
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(f"Could not download {url}: {reason}") from exc
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            total_header = response.headers.get("Content-Length")
            total = int(total_header) if total_header and total_header.isdigit() else None
            if progress is True:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=destination.name)
            done = 0
            while True:
                if cancel is not None and cancel():
                    raise RuntimeError(f"Download of {url} was cancelled.")
                try:
                    block = response.read(_CHUNK)
                except (http.client.IncompleteRead, OSError) as exc:
                    raise RuntimeError(
                        f"Download of {url} was interrupted after {done} bytes"
                        + (f" of {total}" if total else "")
                        + f" ({exc.__class__.__name__}); try again."
                    ) from exc
                if not block:
                    break
                out.write(block)
                digest.update(block)
                done += len(block)
                if bar is not None:
                    bar.update(len(block))
                elif callable(progress):
                    progress(done, total)
        if total is not None and done != total:
            raise RuntimeError(
                f"Download of {url} is truncated: received {done} of {total} bytes; try again."
            )
        actual = digest.hexdigest()
        if expected is not None and actual != expected.lower():
            raise RuntimeError(
                f"Downloaded file from {url} does not match its registered "
                f"{algorithm.upper()}: expected {expected}, got {actual} ({done} bytes). "
                "The server sent a different or corrupt file; nothing was saved."
            )
        os.replace(tmp, destination)
        if expected_hash:
            stat = destination.stat()
            stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": expected_hash}
            with contextlib.suppress(OSError):
                _sidecar(destination).write_text(json.dumps(stamp))
        return destination
    finally:
        if bar is not None:
            bar.close()
        if fd != -1:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


def ensure_checkpoint(
    spec: CheckpointSpec | str,
    *,
    download: bool = True,
    progress: bool | ProgressCallback = True,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """Path of a registered checkpoint in the cache, downloading it if missing.

    Parameters
    ----------
    spec : CheckpointSpec or str
        Registry entry or its name (``"vit_b"``, ``"medsam"`` ...).
    download : bool
        False never touches the network (offline use).
    progress, cancel
        See :func:`download_file`.

    Raises
    ------
    FileNotFoundError
        The file is not cached and cannot be downloaded; the message gives the
        exact path to place the file at, its URL and hash.
    RuntimeError
        The cached file does not match the registered hash.
    """
    spec = get_checkpoint(spec) if isinstance(spec, str) else spec
    target = checkpoint_path(spec)
    if target.is_file():
        verify_file(target, spec.hash)
        return target
    how = (
        f"To work offline, download {spec.url} on another machine and place it at {target} "
        f"(file name {spec.filename}, {spec.hash_algorithm.upper()} {spec.hash_value}"
        + (f", {spec.size} bytes" if spec.size else "")
        + f"), or set {CACHE_ENV_VAR} to the folder that holds 'sam/{spec.filename}', "
        "or pass checkpoint=<path to the .pth file>."
    )
    if not download:
        raise FileNotFoundError(f"SAM checkpoint {spec.name!r} is not in the cache. {how}")
    try:
        return download_file(spec.url, target, spec.hash, progress=progress, cancel=cancel)
    except RuntimeError as exc:
        if "Could not download" in str(exc):
            raise FileNotFoundError(
                f"SAM checkpoint {spec.name!r} is not in the cache and could not be downloaded "
                f"({exc}). {how}"
            ) from exc
        raise
