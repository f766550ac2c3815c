"""SAM networks built from :mod:`segment_anything.modeling` classes, with their identity.

:class:`SamModel` carries the torch module with the identity of its weights:
the embedding cache keys on :attr:`SamModel.encoder_hash` (decoder
fine-tuning does not invalidate image embeddings). :func:`build_sam` builds a
randomly initialised network of a registered architecture and
:func:`build_tiny_sam` small ones for tests and benchmarks; loading published
or local weights is :func:`napari_seglab.sam.load_model` (:mod:`.loading`).

Decoder weights (from the fine-tuning tool) are a checkpoint holding the
``mask_decoder`` (and optionally ``prompt_encoder``) state; see
:func:`apply_decoder_weights` and :func:`save_decoder_checkpoint` here, and
:mod:`.decoder_files` for files with provenance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .compat import check_segment_anything
from .registry import SamArchitecture, get_architecture
from .weights import load_state_into, state_dict_hash

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import Sam

__all__ = [
    "DECODER_PARTS",
    "SamModel",
    "apply_decoder_weights",
    "build_sam",
    "build_tiny_sam",
    "decoder_state",
    "save_decoder_checkpoint",
]

#: Parts of a SAM whose weights a decoder checkpoint may hold.
DECODER_PARTS = ("mask_decoder", "prompt_encoder")


@dataclass
class SamModel:
    """A SAM network ready for inference, with the identity of its weights.

    Attributes
    ----------
    sam : segment_anything.modeling.Sam
        The torch module, in eval mode, on :attr:`device`.
    architecture : SamArchitecture
    device : torch.device
    encoder_hash : str
        Hex digest identifying the image-encoder weights (the file hash for
        checkpoints, a hash of the parameters for in-process models). Keys
        the embedding cache.
    model_hash : str
        Identity of all weights (encoder plus decoder/prompt encoder).
    name : str
        Registry name or file name, for display.
    checkpoint, decoder_checkpoint : Path or None
        Files the weights came from.
    """

    sam: Sam
    architecture: SamArchitecture
    device: torch.device
    encoder_hash: str
    model_hash: str
    name: str = ""
    checkpoint: Path | None = None
    decoder_checkpoint: Path | None = None
    _dense_pe: Any = field(default=None, repr=False)
    _pe_tokens: Any = field(default=None, repr=False)

    @property
    def img_size(self) -> int:
        """Side of the square encoder input (1024 for published models)."""
        return int(self.sam.image_encoder.img_size)

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (256 for published models)."""
        return 4 * self.architecture.embedding_size

    @property
    def is_large_encoder(self) -> bool:
        """True for encoders too slow for interactive use on a CPU (ViT-L, ViT-H)."""
        return self.architecture.encoder_embed_dim >= 1024

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid, ``(1, C, h, w)``, computed once.

        SAM's ``prompt_encoder.get_dense_pe()`` recomputes it on every call; it
        depends only on the (frozen) prompt encoder, so it is cached here.
        Call :meth:`invalidate` after changing prompt-encoder weights.
        """
        if self._dense_pe is None:
            import torch

            with torch.inference_mode():
                self._dense_pe = self.sam.prompt_encoder.get_dense_pe()
        return self._dense_pe

    def pe_tokens(self) -> torch.Tensor:
        """:meth:`dense_pe` as contiguous ``(h*w, C)`` rows (for the fast decoder)."""
        if self._pe_tokens is None:
            self._pe_tokens = self.dense_pe()[0].flatten(1).T.contiguous()
        return self._pe_tokens

    def invalidate(self) -> None:
        """Forget derived tensors after the weights changed in place."""
        self._dense_pe = None
        self._pe_tokens = None


def build_sam(architecture: SamArchitecture | str) -> Sam:
    """A randomly initialised SAM of ``architecture`` (eval mode, on the CPU)."""
    check_segment_anything()
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    arch = get_architecture(architecture) if isinstance(architecture, str) else architecture
    grid = arch.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_tiny_sam(
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    architecture: SamArchitecture | str = "tiny",
    **sizes: Any,
) -> SamModel:
    """A small SAM of the real classes with random weights (tests, benchmarks).

    Parameters
    ----------
    seed : int
        Seeds the random initialisation: the same seed gives the same weights.
    device : str or torch.device
    architecture : SamArchitecture or str
        Start from this configuration (default ``"tiny"``: 256 px input, 16x16
        embedding, 32 channels). ``"vit_b"`` gives the real ViT-B shape with
        random weights, as used for latency benchmarks.
    **sizes
        Field overrides of :class:`SamArchitecture` (e.g. ``img_size=128``).
    """
    import dataclasses

    import torch

    from ..device import resolve_device

    arch = get_architecture(architecture) if isinstance(architecture, str) else architecture
    if sizes:
        arch = dataclasses.replace(arch, name=f"{arch.name}-custom", **sizes)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        sam = build_sam(arch)  # includes the random positional-encoding buffer
    finally:
        torch.random.set_rng_state(generator_state)
    device = resolve_device(device)
    sam.to(device)
    encoder_hash = state_dict_hash(sam.image_encoder)
    return SamModel(
        sam=sam,
        architecture=arch,
        device=device,
        encoder_hash=encoder_hash,
        model_hash=state_dict_hash(sam),
        name=f"{arch.name} (random weights, seed {seed})",
    )


def decoder_state(model: SamModel, *, include_prompt_encoder: bool = False) -> dict:
    """The decoder-side weights of ``model`` as ``{"mask_decoder": ..., ...}`` (CPU tensors)."""
    parts = ("mask_decoder", "prompt_encoder") if include_prompt_encoder else ("mask_decoder",)
    return {
        part: {
            k: v.detach().cpu().clone() for k, v in getattr(model.sam, part).state_dict().items()
        }
        for part in parts
    }


def save_decoder_checkpoint(
    path: str | Path,
    model: SamModel,
    *,
    include_prompt_encoder: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Write the decoder weights of ``model`` to ``path`` (readable by :func:`load_model`).

    The file holds ``{"mask_decoder": state, ["prompt_encoder": state,]
    "architecture": name}`` plus the entries of ``metadata`` (plain values);
    it is written to a temporary file and moved into place, so a crash never
    leaves a half-written checkpoint.
    """
    from ..checkpoints import atomic_torch_save

    payload: dict[str, Any] = decoder_state(model, include_prompt_encoder=include_prompt_encoder)
    payload["architecture"] = model.architecture.name
    payload.update(metadata or {})
    return atomic_torch_save(payload, path)


def apply_decoder_weights(
    model: SamModel, state: dict, *, source: str | Path = "<memory>"
) -> None:
    """Load decoder (and optionally prompt-encoder) weights into ``model`` in place.

    Accepted layouts: ``{"mask_decoder": {...}, "prompt_encoder": {...}}``,
    a flat dict with ``mask_decoder.``/``prompt_encoder.`` prefixed keys, or a
    bare mask-decoder state dict. Image-encoder keys are refused (use
    ``checkpoint=`` for full models). Updates ``model.model_hash``.
    """
    source = Path(source) if not isinstance(source, Path) else source
    parts: dict[str, dict] = {}
    if any(k in state for k in DECODER_PARTS) and all(
        isinstance(state.get(k, {}), dict) for k in DECODER_PARTS
    ):
        parts = {k: state[k] for k in DECODER_PARTS if k in state}
    elif any("." in k and k.split(".", 1)[0] in DECODER_PARTS for k in state):
        for key, value in state.items():
            prefix, _, rest = key.partition(".")
            if prefix not in DECODER_PARTS:
                raise RuntimeError(
                    f"Decoder checkpoint {source} holds {key!r}: expected only mask_decoder.* "
                    "and prompt_encoder.* weights (load full models with checkpoint=)."
                )
            parts.setdefault(prefix, {})[rest] = value
    else:
        parts = {"mask_decoder": {k: v for k, v in state.items() if k != "architecture"}}
    for part, part_state in parts.items():
        load_state_into(getattr(model.sam, part), part_state, source, f"SAM {part} ({model.name})")
    model.invalidate()
    model.model_hash = hashlib.sha256(
        (
            model.encoder_hash
            + state_dict_hash(model.sam.mask_decoder)
            + state_dict_hash(model.sam.prompt_encoder)
        ).encode()
    ).hexdigest()
