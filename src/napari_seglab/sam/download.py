"""Checkpoint files: cache paths, verified downloads through pooch, offline guidance.

Fetching, hashing and the progress bar are :func:`pooch.retrieve`'s: it
streams into a temporary file in the target's folder, checks the pinned hash
(``sha256:`` or ``md5:``) and only then moves the file into place (a rename on
one file system, so atomic); on any failure the temporary file is deleted, so
the cache never holds a partial checkpoint. What pooch lacks is added here: a
progress callback and cancel, errors that name the URL, the expected and the
received hash, and, when the network is unreachable, the exact path where to
place the file by hand. A cached file is checked once; the result is
remembered in ``<file>.verified.json``.

The cache folder is :func:`napari_seglab.cache.cache_dir` (``$SEGLAB_CACHE_DIR``,
else the platform's user cache folder); checkpoints live in its ``sam``
sub-folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..cache import ENV_VAR as CACHE_ENV_VAR
from ..cache import cache_dir
from ..jobs import CancelCheck, CancelLike
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


def checkpoint_path(spec: CheckpointSpec | str) -> Path:
    """Where the cached file of a registered checkpoint lives (it may not exist yet)."""
    spec = get_checkpoint(spec) if isinstance(spec, str) else spec
    return cache_dir("sam") / spec.filename


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's contents (``pooch.file_hash``)."""
    import pooch

    return pooch.file_hash(str(path), alg=algorithm)


def _stamp(path: Path, expected_hash: str) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": expected_hash}


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
    stamp = _stamp(path, expected_hash)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(_sidecar(path).read_text()) == stamp:
            return
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise RuntimeError(
            f"Checkpoint {path} does not match its registered {algorithm.upper()}: expected "
            f"{expected}, got {actual} ({stamp['size']} bytes). The file is corrupt, incomplete "
            "or a different model: delete it and download it again."
        )
    with contextlib.suppress(OSError):  # read-only cache: verify again next time
        _sidecar(path).write_text(json.dumps(stamp))


class _Downloader:
    """pooch's HTTPDownloader with progress, cancel, and errors that name the URL.

    It is also the progress-bar object HTTPDownloader drives (``total``,
    ``update``, ``reset``, ``close``): it reads the bytes written, polls cancel, and passes
    ``(done, total)`` to the callback or a tqdm bar. It raises RuntimeError,
    which pooch does not retry; pooch then deletes its temporary file.
    """

    def __init__(self, progress: bool | ProgressCallback, cancel: CancelLike, timeout: float):
        self.progress, self.cancel, self.timeout = progress, CancelCheck(cancel), timeout
        self.url, self.out, self.total, self.done, self._bar = "", "", 0, 0, None

    def __call__(self, url: str, output_file: str, pooch_obj, check_only: bool = False):
        import pooch
        import requests

        self.url, self.out, self.total, self.done = url, output_file, 0, 0
        self.cancel.raise_if_set(f"Download of {url}")
        http = pooch.HTTPDownloader(progressbar=self, chunk_size=_CHUNK, timeout=self.timeout)
        try:
            http(url, output_file, pooch_obj)
        except requests.exceptions.RequestException as exc:
            received = os.path.getsize(output_file)
            if received or isinstance(exc, requests.exceptions.ChunkedEncodingError):
                raise RuntimeError(
                    f"Download of {url} was interrupted after {received} bytes of "
                    f"{self.total or 'unknown'} ({exc.__class__.__name__}); try again."
                ) from exc
            raise RuntimeError(f"Could not download {url}: {exc}") from exc
        finally:
            self.close()
        received = os.path.getsize(output_file)
        if self.total and received != self.total:
            raise RuntimeError(
                f"Download of {url} is truncated: received {received} of {self.total} "
                "bytes; try again."
            )

    def update(self, n: int) -> None:
        self.cancel.raise_if_set(f"Download of {self.url}")
        self.done = os.path.getsize(self.out)  # pooch counts whole chunks, and flushes each
        if callable(self.progress):
            self.progress(self.done, self.total or None)
        elif self.progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                name = self.url.rsplit("/", 1)[-1].split("?")[0]
                self._bar = tqdm(total=self.total or None, unit="B", unit_scale=True, desc=name)
            self._bar.update(self.done - self._bar.n)

    def reset(self) -> None:  # pooch ends with reset() + update(total) to fill the bar
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def download_file(
    url: str,
    destination: str | Path,
    expected_hash: str | None,
    *,
    progress: bool | ProgressCallback = True,
    timeout: float = 60.0,
    cancel: CancelLike = None,
) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its hash (pooch).

    Parameters
    ----------
    url : str
    destination : path
        Final file path; its folder is created if needed. A file already there
        with the expected hash is kept (not downloaded again).
    expected_hash : str or None
        ``"sha256:<hex>"`` or ``"md5:<hex>"``; None skips the check.
    progress : bool or callable
        True shows a tqdm progress bar; a callable receives
        ``(bytes_done, bytes_total_or_None)`` after each 1 MiB block.
    timeout : float
        Seconds to wait for the server on connect and on each read.
    cancel : threading.Event or callable, optional
        Set (or returning True) to stop; see :class:`napari_seglab.jobs.CancelCheck`.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    RuntimeError
        Network failure, truncated transfer or hash mismatch; the message names
        the URL and what did not match. No file is left behind.
    napari_seglab.jobs.JobCancelled
        ``cancel`` was set; no file is left behind.
    """
    import pooch

    destination = Path(destination)
    try:
        pooch.retrieve(
            url,
            known_hash=expected_hash,
            fname=destination.name,
            path=destination.parent,
            downloader=_Downloader(progress, cancel, timeout),
        )
    except ValueError as exc:  # pooch's hash mismatch, which names the received hash
        algorithm, expected = (expected_hash or "sha256:").split(":", 1)
        got = re.search(r"but got ([0-9a-fA-F]+)", str(exc))
        raise RuntimeError(
            f"Downloaded file from {url} does not match its registered {algorithm.upper()}: "
            f"expected {expected}, got {got.group(1) if got else str(exc)}. The server sent a "
            "different or corrupt file; nothing was saved."
        ) from exc
    if expected_hash:  # pooch just hashed it: spare the next verify_file
        with contextlib.suppress(OSError):
            _sidecar(destination).write_text(json.dumps(_stamp(destination, expected_hash)))
    return destination


def ensure_checkpoint(
    spec: CheckpointSpec | str,
    *,
    download: bool = True,
    progress: bool | ProgressCallback = True,
    cancel: CancelLike = None,
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
        The cached or downloaded file does not match the registered hash.
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
        if str(exc).startswith("Could not download"):
            raise FileNotFoundError(
                f"SAM checkpoint {spec.name!r} is not in the cache and could not be downloaded "
                f"({exc}). {how}"
            ) from exc
        raise
