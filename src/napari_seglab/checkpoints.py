"""Writing files safely: one place for atomic writes (arrays, tables, model files).

Every file this package writes goes through :func:`atomic_path`: the writer
fills a temporary file in the target's folder and it is renamed onto the target
(``os.replace``) only once complete, so a crash, a kill or a full disk never
leaves a half-written file at the target, and an existing file stays intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Start of every temporary file name :func:`atomic_path` creates.
TEMP_PREFIX = ".seglab-tmp-"
#: A temporary file untouched this long (seconds) is stale even if its writer may live.
STALE_AFTER_S = 3600.0


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or unknown): leave its file alone
    return True


def clean_stale_temps(
    folder: str | os.PathLike, *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove temporary files of :func:`atomic_path` whose writer is gone.

    A temporary file (``.seglab-tmp-HOST-PID-...``) is stale when the process
    that made it no longer runs on this machine, or when nobody has written to
    it for ``max_age_s`` seconds (temporaries of other machines, e.g. on a
    shared folder). Files that cannot be removed are left.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    host = _host_tag()
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        parts = entry.name[len(TEMP_PREFIX) :].split("-", 3)
        try:
            same_host = parts[0] == host
            pid = int(parts[1])
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except (IndexError, ValueError, OSError):
            continue
        if (same_host and pid != os.getpid() and not _pid_alive(pid)) or age > max_age_s:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``target``'s content to; moved onto ``target`` on success.

    The temporary file is created (empty, with the usual permissions) in the
    folder of ``target`` and its name ends with ``target``'s name, so writers
    that pick the format by suffix (``nibabel``, ``tifffile``) behave as for
    ``target``. When the ``with`` block ends normally the file replaces
    ``target`` in one step (``os.replace``); on any exception (a full disk, a
    kill by Ctrl+C) it is removed and ``target`` is left as it was. Stale
    temporaries left in that folder by killed writers are removed first
    (see :func:`clean_stale_temps`).

    Examples
    --------
    >>> with atomic_path("scores.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("class,dice\\n1,0.9\\n")

    Raises
    ------
    FileNotFoundError
        If the folder of ``target`` does not exist.
    IsADirectoryError
        If ``target`` is an existing folder.
    """
    target = Path(target).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder for {target.name!r} not found: {folder}")
    if target.is_dir():
        raise IsADirectoryError(f"Expected a file name, got the folder {str(target)!r}.")
    clean_stale_temps(folder)
    stem = f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}-"
    tmp = folder / (stem + target.name[-(200 - len(stem)) :])
    # O_EXCL: never reuse a name; 0o666 lets the umask give the usual file permissions.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to a temporary file beside ``path``, then rename it.

    A crash or a full disk never leaves a half-written checkpoint at ``path``.
    Save only tensors, numbers, strings, lists and dicts so that the file
    reads back with ``torch.load(..., weights_only=True)``.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    OSError
        The file could not be written (a full disk, a file-size limit): the
        operating system's error, not the text torch's zip writer makes of it
        ("enforce fail at inline_container.cc ... unexpected pos").
    """
    import torch

    path = Path(path).expanduser()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        stream = _WriteErrors(fh)
        try:
            torch.save(payload, stream)
        except RuntimeError:
            if stream.error is None:
                raise
            error = stream.error
            raise OSError(error.errno, error.strerror, str(path)) from None
    return path


class _WriteErrors:
    """A binary file wrapper that keeps the ``OSError`` a write raised.

    torch's zip writer turns a failed write into a ``RuntimeError`` whose text
    says nothing about the disk; :func:`atomic_torch_save` raises the kept
    error instead.
    """

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def load_error_text(exc: BaseException) -> str:
    """One line saying why ``torch.load(path, weights_only=True)`` failed.

    torch's messages run over several lines and, for a file that is not a
    plain-tensor checkpoint, start by suggesting ``weights_only=False`` (which
    could run code from the file). This keeps the part that says what is wrong:
    the unpickler's complaint (``Unsupported operand 110``: not a PyTorch file)
    or the zip reader's first sentence (a file cut short).
    """
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if "Weights only load failed" in text:
        rest = text.split(marker, 1)[1] if marker in text else ""
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        detail = f" ({lines[0][:160]})" if lines else ""
        return (
            "not a PyTorch file of plain tensors; files holding other Python objects are "
            f"never loaded, as they could run code{detail}"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    if "PytorchStreamReader" in first:
        return f"the file is cut short or damaged ({first.split('. ')[0].rstrip('.')})"
    return first
