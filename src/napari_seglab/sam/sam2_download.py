"""SAM 2 checkpoint files: cache, size-pinned download and loading.

Downloads go through :func:`.download.download_file` (pooch, atomic move,
progress, cancel, deadline, truncation check). No checksum is published for
SAM 2 files, so the pin is the file size from :mod:`.sam2_registry`: a file
of another size is deleted (download) or refused (cache) with a message that
names both sizes. The file's SHA-256 is computed once and remembered in
``<file>.sha256.json`` (with its size and modification time); it identifies
the weights (:attr:`~.sam2_model.Sam2Model.encoder_hash`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import ENV_VAR as CACHE_ENV_VAR
from ..cache import cache_dir
from ..jobs import CancelLike
from .download import ProgressCallback, download_file, file_digest
from .sam2_model import Sam2Model, build_sam2_model, check_sam2
from .sam2_registry import SAM2_CHECKPOINTS, Sam2CheckpointSpec, get_sam2_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ensure_sam2_checkpoint", "file_identity", "load_sam2_model", "sam2_checkpoint_path"]


def sam2_checkpoint_path(spec: Sam2CheckpointSpec | str) -> Path:
    """Where a registered SAM 2 file lives: ``<cache folder>/sam/<filename>``."""
    spec = get_sam2_checkpoint(spec) if isinstance(spec, str) else spec
    return cache_dir("sam") / spec.filename


def _check_size(path: Path, spec: Sam2CheckpointSpec, what: str) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise RuntimeError(
            f"{what} {path} has {size} bytes, expected {spec.size} for {spec.name} "
            f"({spec.url}; no checksum is published, the file size is the pin). The file is "
            "incomplete or a different model: delete it and download it again."
        )


def ensure_sam2_checkpoint(
    spec: Sam2CheckpointSpec | str,
    *,
    download: bool = True,
    progress: bool | ProgressCallback = True,
    cancel: CancelLike = None,
) -> Path:
    """Path of a registered SAM 2 file in the cache, downloading it if missing.

    Raises
    ------
    FileNotFoundError
        Not cached and not downloadable (or ``download=False``); the message
        gives the exact path to place the file at, its URL and size.
    RuntimeError
        A cached or downloaded file of the wrong size (a downloaded one is deleted).
    """
    spec = get_sam2_checkpoint(spec) if isinstance(spec, str) else spec
    target = sam2_checkpoint_path(spec)
    if target.is_file():
        _check_size(target, spec, "Cached SAM 2 checkpoint")
        return target
    how = (
        f"To work offline, download {spec.url} on another machine and place it at {target} "
        f"(file name {spec.filename}, {spec.size} bytes; no checksum is published), or set "
        f"{CACHE_ENV_VAR} to the folder that holds 'sam/{spec.filename}', or pass "
        "checkpoint=<path to the .pt file>."
    )
    if not download:
        raise FileNotFoundError(f"SAM 2 checkpoint {spec.name!r} is not in the cache. {how}")
    try:
        download_file(spec.url, target, None, progress=progress, cancel=cancel)
    except RuntimeError as exc:
        if str(exc).startswith("Could not download"):
            raise FileNotFoundError(
                f"SAM 2 checkpoint {spec.name!r} is not in the cache and could not be "
                f"downloaded ({exc}). {how}"
            ) from exc
        raise
    try:
        _check_size(target, spec, "Downloaded SAM 2 checkpoint")
    except RuntimeError:
        target.unlink(missing_ok=True)
        raise
    return target


def file_identity(path: str | Path) -> str:
    """``"sha256:<hex>"`` of a file, remembered in ``<file>.sha256.json`` while it is unchanged."""
    path = Path(path)
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = path.with_name(path.name + ".sha256.json")
    with contextlib.suppress(OSError, ValueError, TypeError):
        stored = json.loads(sidecar.read_text())
        if {k: stored.get(k) for k in stamp} == stamp and stored.get("sha256"):
            return "sha256:" + stored["sha256"]
    digest = file_digest(path)
    with contextlib.suppress(OSError):  # a read-only folder: hash again next time
        sidecar.write_text(json.dumps({**stamp, "sha256": digest}))
    return "sha256:" + digest


def load_sam2_model(
    model_type: str | Sam2CheckpointSpec = "sam2.1_hiera_tiny",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    download: bool = True,
    progress: bool | ProgressCallback = True,
) -> Sam2Model:
    """A SAM 2 model from a registered file (cached or downloaded) or a local one.

    Parameters
    ----------
    model_type : str or Sam2CheckpointSpec
        A registered name (``"sam2.1_hiera_tiny"``, ``"sam2.1_hiera_small"``,
        ``"sam2.1_hiera_base_plus"``, ``"sam2.1_hiera_large"`` or an alias),
        or with ``checkpoint`` given also a ``sam2`` config name.
    checkpoint : path, optional
        A local ``.pt`` file; None takes the registered file.
    device, download, progress
        As :func:`~.loading.load_model`.
    """
    from ..device import resolve_device

    check_sam2()  # before any download
    device = resolve_device(device)
    if isinstance(model_type, str) and model_type.startswith("configs/"):
        if checkpoint is None:
            raise ValueError(
                f"The config {model_type!r} names no weights: pass checkpoint=<path to a .pt "
                f"file> or a registered name ({', '.join(sorted(SAM2_CHECKPOINTS))})."
            )
        config, name = model_type, ""
    else:
        spec = get_sam2_checkpoint(model_type) if isinstance(model_type, str) else model_type
        config, name = spec.config, spec.name
        if checkpoint is None:
            checkpoint = ensure_sam2_checkpoint(spec, download=download, progress=progress)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        found = " (it is a folder)" if path.is_dir() else ""
        raise FileNotFoundError(f"Checkpoint file not found: {path}{found}")
    return build_sam2_model(
        config,
        path,
        device,
        name=name or path.name,
        encoder_hash=file_identity(path),
    )
