"""Weights on disk and in modules: reading checkpoints, hashing and loading state dicts.

The bottom of :mod:`napari_seglab.sam` next to :mod:`.registry`: it works on
files and ``torch.nn.Module`` objects only and knows nothing of
:class:`~.model.SamModel`. Every checkpoint is read with
``torch.load(..., weights_only=True)`` onto the CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .registry import ARCHITECTURES

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["guess_architecture", "load_checkpoint_file", "load_state_into", "state_dict_hash"]


def state_dict_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of a module's state dict."""
    import numpy as np

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(array.shape)}:{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array.float().numpy()).tobytes())
    return digest.hexdigest()


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    A dict wrapping the state under ``"model"`` or ``"state_dict"`` is unwrapped.

    Raises
    ------
    FileNotFoundError
        No such file.
    RuntimeError
        Not a readable PyTorch checkpoint, or not a dict of tensors.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        found = " (it is a folder)" if path.is_dir() else ""
        raise FileNotFoundError(f"Checkpoint file not found: {path}{found}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        from ..checkpoints import load_error_text

        raise RuntimeError(
            f"Could not read {path} as a PyTorch checkpoint with weights_only=True "
            f"({load_error_text(exc)}). The file is corrupt, truncated or not a SAM .pth file."
        ) from exc
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise RuntimeError(
            f"Checkpoint {path} holds a {type(state).__name__}, expected a state dict "
            "(a mapping of parameter names to tensors)."
        )
    return state


def guess_architecture(state: dict) -> str | None:
    """Name of the registered architecture whose encoder shapes match ``state``.

    None when ``state`` has no image encoder; a description of the encoder
    when no registered architecture fits.
    """
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, arch in ARCHITECTURES.items():
        if arch.encoder_embed_dim == weight.shape[0] and arch.encoder_depth == depth:
            return name
    return f"an unregistered encoder (width {weight.shape[0]}, {depth} blocks)"


def load_state_into(module: torch.nn.Module, state: dict, source: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatch.

    Parameters
    ----------
    module : torch.nn.Module
    state : dict
        Parameter names to tensors.
    source : str or Path
        Where ``state`` came from (for the message).
    what : str
        What ``module`` is, e.g. ``"SAM vit_b architecture"``; names starting
        with ``"SAM "`` get a hint naming the architecture the file looks like.

    Raises
    ------
    RuntimeError
        Missing, unexpected or differently shaped weights.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
        for k in sorted(set(own) & set(state))
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} with another shape (e.g. {wrong_shape[:2]})")
        hint = ""
        if what.startswith("SAM "):
            guess = guess_architecture(state)
            if guess:
                hint = f" The file looks like {guess}."
        raise RuntimeError(
            f"Checkpoint {source} does not fit the {what}: " + "; ".join(parts) + "." + hint
        )
    module.load_state_dict(state, strict=True)
