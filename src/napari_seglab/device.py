"""Choice of compute device and mixed-precision dtype.

``"auto"`` picks CUDA, then Apple MPS, then the CPU. The environment variable
``SEGLAB_DEVICE`` (for example ``cpu`` or ``cuda:1``) overrides ``"auto"``.
torch is imported inside the functions so that importing this module is cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

ENV_VAR = "SEGLAB_DEVICE"
_VALID_KINDS = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (or None) chooses ``cuda`` > ``mps`` > ``cpu``, unless the
        ``SEGLAB_DEVICE`` environment variable names a device. Any other value
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is used as given.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the name is not a device kind torch knows.
    RuntimeError
        If the requested device is not available on this machine.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        name = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    kind = name.split(":", 1)[0]
    if kind not in _VALID_KINDS:
        raise ValueError(
            f"Unknown device {device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"Device {name!r} was requested but CUDA is not available here.")
    if kind == "mps" and not _mps_available():
        raise RuntimeError(f"Device {name!r} was requested but Apple MPS is not available here.")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype to use on ``device``, or None for full fp32.

    bf16 on CUDA devices that support it, otherwise fp16 on CUDA; None on CPU
    and MPS (fp32 there: CPU autocast is slower than fp32 for these models).
    """
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    """Context manager: autocast on CUDA with :func:`autocast_dtype`, no-op elsewhere."""
    import contextlib

    import torch

    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
