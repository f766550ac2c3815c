"""Fine-tuned decoder files: save with provenance, check the base model, load.

A decoder learns to read one image encoder's embeddings, so a decoder file
records which base model it was tuned on (architecture, checkpoint hash and a
hash of the encoder weights) and is refused on any other. The file is a plain
``torch.save`` dict readable with ``weights_only=True``: ``mask_decoder`` (and
``prompt_encoder`` when it was trained) state dicts, ``architecture``, and the
metadata under :data:`METADATA_KEY`.

:func:`load_decoder` refuses a file that also holds other weights (e.g. a
nested ``image_encoder`` part, which would otherwise be ignored) and warns
when a file has no provenance (a plain decoder state dict): such a file is
applied without any check of the base model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .. import __version__
from .model import DECODER_PARTS, SamModel, apply_decoder_weights, save_decoder_checkpoint
from .weights import load_checkpoint_file, state_dict_hash

__all__ = [
    "METADATA_KEY",
    "DecoderMismatchError",
    "TuningRecord",
    "check_decoder_compatible",
    "load_decoder",
    "read_decoder_metadata",
    "save_decoder",
]

#: Key of the fine-tuning metadata inside a decoder checkpoint.
METADATA_KEY = "seglab_finetune"
#: Version of the metadata layout.
METADATA_FORMAT = 1


class DecoderMismatchError(RuntimeError):
    """A decoder checkpoint was trained for another base model."""


class TuningRecord(Protocol):
    """What :func:`save_decoder` stores about how a decoder was tuned.

    :class:`~napari_seglab.sam.finetune.FinetuneResult` is one.

    Attributes
    ----------
    recipe : mapping
        Prompt recipe and optimisation settings (plain values).
    before, after : mapping of str to float
        Validation Dice per prompt kind and ``"mean"``, of the untrained and of
        the kept decoder.
    """

    recipe: Mapping
    before: Mapping[str, float]
    after: Mapping[str, float]


def _encoder_content_hash(model: SamModel) -> str:
    return state_dict_hash(model.sam.image_encoder)


def save_decoder(
    model: SamModel,
    path: str | Path,
    *,
    result: TuningRecord | None = None,
    include_prompt_encoder: bool | None = None,
) -> Path:
    """Write the fine-tuned parts of ``model`` and their provenance to ``path``.

    The file (``torch.save``, readable with ``weights_only=True``, written
    atomically) holds ``mask_decoder`` (and ``prompt_encoder`` when it was
    trained) state dicts, ``architecture``, and under ``"seglab_finetune"``:
    the base model's architecture, name, checkpoint hash and encoder-weights
    hash, the prompt recipe and settings, and the validation Dice before and
    after. :func:`napari_seglab.sam.load_model` ``(decoder_checkpoint=path)``
    applies it; :func:`load_decoder` also checks the base model.

    Returns
    -------
    Path
    """
    if include_prompt_encoder is None:
        include_prompt_encoder = bool(result and result.recipe.get("train_prompt_encoder"))
    parts = ["mask_decoder", "prompt_encoder"] if include_prompt_encoder else ["mask_decoder"]
    metadata = {
        "format": METADATA_FORMAT,
        "architecture": model.architecture.name,
        "base_model": model.name,
        "base_checkpoint": model.checkpoint.name if model.checkpoint else None,
        "base_encoder_hash": model.encoder_hash,
        "encoder_weights_hash": _encoder_content_hash(model),
        "parts": parts,
        "recipe": dict(result.recipe) if result else {},
        "validation_dice": (
            {"before": dict(result.before), "after": dict(result.after)} if result else {}
        ),
        "package_version": __version__,
    }
    return save_decoder_checkpoint(
        path,
        model,
        include_prompt_encoder=include_prompt_encoder,
        metadata={METADATA_KEY: metadata},
    )


def read_decoder_metadata(path: str | Path) -> dict:
    """The ``seglab_finetune`` metadata of a decoder checkpoint (``{}`` for plain files)."""
    state = load_checkpoint_file(Path(path).expanduser())
    metadata = state.get(METADATA_KEY, {})
    return dict(metadata) if isinstance(metadata, dict) else {}


def check_decoder_compatible(
    model: SamModel, metadata: dict, *, source: str | Path = "<memory>"
) -> None:
    """Refuse decoder weights fine-tuned on another base model than ``model``.

    A decoder learns to read one image encoder's embeddings: on another
    encoder (another architecture, or other weights such as MedSAM vs SAM)
    its masks are meaningless even when the tensor shapes fit.

    Raises
    ------
    DecoderMismatchError (a RuntimeError)
        The architecture or the encoder weights differ.
    """
    if not metadata:
        return
    arch = metadata.get("architecture")
    if arch and arch != model.architecture.name:
        raise DecoderMismatchError(
            f"Decoder checkpoint {source} was fine-tuned for a SAM {arch!r} base model "
            f"({metadata.get('base_model') or 'unknown'}), but the loaded model is "
            f"{model.architecture.name!r} ({model.name}). Load the base model it was "
            "trained on."
        )
    if metadata.get("base_encoder_hash") == model.encoder_hash:
        return
    expected = metadata.get("encoder_weights_hash")
    if expected and expected != _encoder_content_hash(model):
        raise DecoderMismatchError(
            f"Decoder checkpoint {source} was fine-tuned on the image encoder of "
            f"{metadata.get('base_model') or 'another model'} (weights hash "
            f"{str(expected)[:12]}...), but the loaded model {model.name} has other encoder "
            f"weights ({model.encoder_hash[:19]}...). Load the base checkpoint it was "
            "trained on."
        )


def _refuse_other_parts(state: Mapping, path: Path) -> None:
    """Refuse weights other than the decoder parts in a nested decoder file."""
    import torch

    if not any(isinstance(state.get(part), Mapping) for part in DECODER_PARTS):
        return  # flat layouts: model.apply_decoder_weights checks each key
    allowed = {*DECODER_PARTS, "architecture", METADATA_KEY}
    others = sorted(
        str(key)
        for key, value in state.items()
        if key not in allowed and isinstance(value, (Mapping, torch.Tensor))
    )
    if others:
        raise RuntimeError(
            f"Decoder checkpoint {path} also holds {', '.join(map(repr, others))}: a decoder "
            "file holds only 'mask_decoder' and 'prompt_encoder' weights. Load full models "
            "(image encoder included) with load_model(checkpoint=...)."
        )


def _warn_no_provenance(model: SamModel, path: Path) -> None:
    import warnings

    warnings.warn(
        f"Decoder checkpoint {path} has no provenance (no {METADATA_KEY!r} metadata), so "
        f"nothing checks that it was tuned on the loaded base model {model.name}; on another "
        "image encoder its masks are meaningless. To record provenance, save decoders with "
        "napari_seglab.sam.save_decoder(model, path) or 'seglab finetune -o decoder.pt'.",
        UserWarning,
        stacklevel=3,
    )


def load_decoder(model: SamModel, path: str | Path) -> dict:
    """Apply a decoder checkpoint to ``model`` in place after checking its base model.

    A file without provenance metadata (a plain decoder state dict) is applied
    with a ``UserWarning``: its base model cannot be checked.

    Returns
    -------
    dict
        The checkpoint's fine-tuning metadata (``{}`` for a plain decoder file).

    Raises
    ------
    FileNotFoundError, RuntimeError
        Missing or unreadable file, weights that do not fit, weights other than
        the decoder's (e.g. an ``image_encoder`` part), or a decoder trained for
        another base model (:class:`DecoderMismatchError`).
    """
    path = Path(path).expanduser()
    state = load_checkpoint_file(path)
    _refuse_other_parts(state, path)
    metadata = state.get(METADATA_KEY, {})
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    check_decoder_compatible(model, metadata, source=path)
    apply_decoder_weights(model, state, source=path)
    if not metadata:
        _warn_no_provenance(model, path)
    model.decoder_checkpoint = path
    return metadata
