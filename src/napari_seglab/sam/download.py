"""Checkpoint files: cache paths, verified downloads through pooch, offline guidance.

Hashing and the atomic move are :func:`pooch.retrieve`'s: it has the file
written to a temporary file in the target's folder, checks the pinned hash
(``sha256:`` or ``md5:``) and only then moves the file into place (a rename on
one file system, so atomic); on any failure the temporary file is deleted, so
the cache never holds a partial checkpoint. The transfer itself is done here
(requests, read as data arrives) with a progress callback, cancel checked
between any two reads, an overall deadline and a slowest accepted rate; errors
name the URL, the expected and the received hash, and, when the network is
unreachable, the exact path where to place the file by hand. A cached file is
checked once; the result is
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
import time
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

_CHUNK = 1 << 20  # progress is reported after each block of this size
_READ = 1 << 16  # the most one read returns
#: Default overall time limit of one download, in seconds.
DEFAULT_DEADLINE = 4 * 3600.0
#: Default slowest accepted transfer, in bytes per second (averaged over ``timeout``).
DEFAULT_MIN_RATE = 1024.0

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
    """Fetches for pooch, with progress, cancel, a deadline and errors that name the URL.

    pooch calls it with a temporary file name; it streams the response with
    ``read1`` (each call returns as soon as the socket has data), so between
    any two reads it polls cancel, the overall ``deadline`` and the transfer
    rate: a server that sends a byte now and then cannot keep it alive. Each
    single read waits at most ``timeout`` seconds. ``(done, total)`` goes to
    the callback or a tqdm bar after each 1 MiB block and at the end. It
    raises RuntimeError, which pooch does not retry; pooch then deletes its
    temporary file.
    """

    def __init__(
        self,
        progress: bool | ProgressCallback,
        cancel: CancelLike,
        timeout: float,
        deadline: float | None = None,
        min_rate: float = 0.0,
    ):
        self.progress, self.cancel, self.timeout = progress, CancelCheck(cancel), timeout
        self.deadline, self.min_rate = deadline, min_rate
        self.url, self.total, self.done, self._bar = "", 0, 0, None
        self._start = self._window_start = 0.0
        self._window_done = 0

    def __call__(self, url: str, output_file: str, pooch_obj, check_only: bool = False):
        import requests
        import urllib3

        self.url, self.total, self.done = url, 0, 0
        self.cancel.raise_if_set(f"Download of {url}")
        self._start = self._window_start = time.monotonic()
        self._window_done = 0
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                response.raise_for_status()
                self.total = int(response.headers.get("content-length") or 0)
                with open(output_file, "wb") as out:
                    self._stream(response.raw, out)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            received = self.done
            if received or isinstance(
                exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)
            ):
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

    def _stream(self, raw, out) -> None:
        reported = -1
        while True:
            self._check()
            data = raw.read1(min(_READ, _CHUNK - self.done % _CHUNK), decode_content=True)
            if not data:
                break
            out.write(data)
            self.done += len(data)
            if self.done % _CHUNK == 0:
                out.flush()
                self.update(self.done)
                reported = self.done
        if reported != self.done:
            self.update(self.done)

    def _check(self) -> None:
        """Raise on cancel, past the deadline, or when the last window was too slow."""
        self.cancel.raise_if_set(f"Download of {self.url}")
        now = time.monotonic()
        got = f"{self.done} of {self.total or 'unknown'} bytes received"
        if self.deadline is not None and now - self._start > self.deadline:
            raise RuntimeError(
                f"Download of {self.url} did not finish within its {self.deadline:g} s "
                f"deadline ({got}); try again later or download the file by hand."
            )
        window = now - self._window_start
        if window >= self.timeout > 0:
            rate = (self.done - self._window_done) / window
            if rate < self.min_rate:
                raise RuntimeError(
                    f"Download of {self.url} is too slow: {rate:.0f} bytes/s over the last "
                    f"{window:.0f} s, below {self.min_rate:g} bytes/s ({got}); try again later "
                    "or download the file by hand."
                )
            self._window_start, self._window_done = now, self.done

    def update(self, done: int) -> None:
        """Report ``done`` bytes to the callback or the progress bar."""
        self.done = done
        if callable(self.progress):
            self.progress(self.done, self.total or None)
        elif self.progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                name = self.url.rsplit("/", 1)[-1].split("?")[0]
                self._bar = tqdm(total=self.total or None, unit="B", unit_scale=True, desc=name)
            self._bar.update(self.done - self._bar.n)

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
    deadline: float | None = DEFAULT_DEADLINE,
    min_rate: float = DEFAULT_MIN_RATE,
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
        Seconds to wait for the server on connect and on each read; also the
        window over which ``min_rate`` is averaged.
    cancel : threading.Event or callable, optional
        Set (or returning True) to stop; see :class:`napari_seglab.jobs.CancelCheck`.
        Checked before the request and between any two reads.
    deadline : float or None
        Overall limit in seconds for the whole transfer (None: none).
    min_rate : float
        Bytes per second below which (over each ``timeout`` window) the
        transfer is given up, so a server that drips bytes cannot hold it.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    RuntimeError
        Network failure, truncated, too slow or past the deadline, or hash
        mismatch; the message names the URL and what did not match. No file is
        left behind.
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
            downloader=_Downloader(progress, cancel, timeout, deadline, min_rate),
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
