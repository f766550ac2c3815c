"""Loading SAM for inference: registered or local weights, plus an optional fine-tuned decoder.

:func:`load_model` is the one entry point for weights on disk. It sits above
:mod:`.model` (building the network), :mod:`.download` (finding or fetching a
registered file) and :mod:`.decoder_files` (checking and applying a decoder
fine-tuned on the same base model).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .decoder_files import load_decoder
from .model import SamModel, build_sam
from .registry import CheckpointSpec, get_architecture, get_checkpoint
from .sam2_download import load_sam2_model
from .sam2_model import Sam2Model
from .sam2_registry import Sam2CheckpointSpec, is_sam2_name
from .weights import load_checkpoint_file, load_state_into

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["load_model"]


def load_model(
    model_type: str | CheckpointSpec | Sam2CheckpointSpec = "vit_b",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    decoder_checkpoint: str | Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> SamModel | Sam2Model:
    """Load a SAM (or SAM 2) model for inference.

    Parameters
    ----------
    model_type : str or CheckpointSpec
        A registered checkpoint (``"vit_b"``, ``"vit_l"``, ``"vit_h"``,
        ``"medsam"``) or, with ``checkpoint`` given, an architecture name
        (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"tiny"``). SAM 2.1 names
        (``"sam2.1_hiera_tiny"``, ``"_small"``, ``"_base_plus"``, ``"_large"``;
        with ``checkpoint`` also a ``sam2`` config name) return a
        :class:`~.sam2_model.Sam2Model` (needs the ``sam2`` extra,
        :func:`~.sam2_download.load_sam2_model`).
    checkpoint : path, optional
        A local ``.pth`` file with the full model state dict. None takes the
        registered file from the cache folder, downloading it if needed.
    device : str or torch.device
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"`` ...
    decoder_checkpoint : path, optional
        Fine-tuned decoder weights applied on top (see
        :func:`~.decoder_files.save_decoder`).
    download : bool
        False never uses the network (offline): a missing file is an error that
        says where to put it.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    SamModel or Sam2Model

    Raises
    ------
    FileNotFoundError
        A checkpoint that is neither given, cached nor downloadable.
    RuntimeError
        A corrupt file, a hash mismatch, or weights that do not fit the model.
    """
    from ..device import resolve_device
    from .download import ensure_checkpoint, file_digest, verify_file

    if is_sam2_name(model_type):
        if decoder_checkpoint is not None:
            raise ValueError(
                "decoder_checkpoint= applies to SAM models (vit_b ...); SAM 2 decoders "
                f"cannot be fine-tuned here (got model_type={model_type!r})."
            )
        return load_sam2_model(
            model_type, checkpoint, device, download=download, progress=progress
        )
    device = resolve_device(device)
    if checkpoint is None:
        if isinstance(model_type, str) and model_type == "tiny":
            raise ValueError(
                "The 'tiny' architecture has no published weights: use build_tiny_sam() "
                "or pass checkpoint=<path>."
            )
        spec = get_checkpoint(model_type) if isinstance(model_type, str) else model_type
        path = ensure_checkpoint(spec, download=download, progress=progress)
        verify_file(path, spec.hash)
        arch = get_architecture(spec.architecture)
        encoder_hash = spec.hash
        name = spec.name
    else:
        path = Path(checkpoint).expanduser()
        if isinstance(model_type, CheckpointSpec):
            arch = get_architecture(model_type.architecture)
        else:
            try:
                arch = get_architecture(model_type)
            except ValueError:
                arch = get_architecture(get_checkpoint(model_type).architecture)
        if not path.is_file():
            found = " (it is a folder)" if path.is_dir() else ""
            raise FileNotFoundError(f"Checkpoint file not found: {path}{found}")
        encoder_hash = "sha256:" + file_digest(path)
        name = path.name
    state = load_checkpoint_file(path)
    sam = build_sam(arch)
    load_state_into(sam, state, path, f"SAM {arch.name} architecture")
    sam.to(device)
    model = SamModel(
        sam=sam,
        architecture=arch,
        device=device,
        encoder_hash=encoder_hash,
        model_hash=encoder_hash,
        name=name,
        checkpoint=path,
    )
    if decoder_checkpoint is not None:
        load_decoder(model, decoder_checkpoint)  # checks the decoder's base model first
    return model
