"""SAM 2 networks (optional ``sam2`` package): building, identity and image encoding.

:class:`Sam2Model` carries a ``sam2.sam2_video_predictor.SAM2VideoPredictor``
(a ``SAM2Base`` subclass, so the same network serves 2D prompting and video
propagation) with the identity of its weights. :func:`build_sam2_model` builds
it from one of the package's hydra configs (random weights, or a checkpoint
read with ``torch.load(weights_only=True)``); :func:`encode_plane` runs the
image encoder on one uint8 RGB plane.

Notes for code that feeds these embeddings to the video predictor's memory
--------------------------------------------------------------------------
* :func:`encode_plane` returns exactly what ``net.forward_image(x)`` returns
  for the official preprocessing (``SAM2Transforms``: ``ToTensor`` → resize to
  ``image_size × image_size`` with torchvision's antialiased bilinear resize →
  ImageNet mean/std), i.e. ``backbone_fpn`` (three levels, strides 4, 8, 16;
  levels 0 and 1 already passed through ``sam_mask_decoder.conv_s0``/``conv_s1``
  as ``forward_image`` does), ``vision_pos_enc`` (three levels, same shapes
  with 256 channels) and ``vision_features`` (``backbone_fpn[-1]``). Nothing
  else is applied: no ``no_mem_embed`` (the 2D decoder in :mod:`.sam2_decode`
  adds it itself), no flattening (call ``net._prepare_backbone_features`` on
  :meth:`Sam2Embedding.backbone_out` as the video predictor's
  ``_get_image_feature`` does).
* Tensors are float32 on the CPU with a batch axis of 1; move them to
  ``model.device`` before use (:meth:`Sam2Embedding.backbone_out` does).
* ``vision_pos_enc`` does not depend on the image: every embedding of one
  model and size shares the same tensor objects (cached on the model), so the
  embedding cache stores them once. Do not modify them in place.
* The embedding cache key is :func:`napari_seglab.sam.embedding.embedding_key`
  (``model.encoder_hash``, ``model.img_size``, the plane's content hash).
  :attr:`Sam2Model.encoder_hash` covers the image encoder plus ``conv_s0`` and
  ``conv_s1`` of the mask decoder, since ``forward_image`` applies them.
* For tests, ``build_sam2_model(image_size=256)`` (or 128) builds the real
  config with a smaller input; the memory-attention RoPE feature sizes are
  overridden to ``image_size // 16`` to match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .weights import load_checkpoint_file, load_state_into, state_dict_hash

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictor

__all__ = [
    "SAM2_CONFIGS",
    "SAM2_INSTALL_HINT",
    "Sam2Embedding",
    "Sam2Model",
    "Sam2NotInstalledError",
    "build_sam2_model",
    "check_sam2",
    "encode_plane",
    "is_sam2_available",
    "preprocess_plane",
    "shared_pos_enc",
]

#: The SAM 2.1 configs shipped in the ``sam2`` package, by short name.
SAM2_CONFIGS = {
    "hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

SAM2_INSTALL_HINT = (
    "SAM 2 needs the optional package 'sam2' (1.1.0). Install it with\n"
    '    SAM2_BUILD_CUDA=0 pip install --no-build-isolation "sam2==1.1.0" '
    "hydra-core iopath\n"
    "(setuptools and wheel must be installed; drop SAM2_BUILD_CUDA=0 to build its "
    'CUDA extension), or pip install "napari-seglab[sam2]" with the same '
    "environment variable and --no-build-isolation."
)

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class Sam2NotInstalledError(ImportError):
    """The optional ``sam2`` package (or one of its dependencies) cannot be imported."""


def is_sam2_available() -> bool:
    """Whether ``sam2`` can be imported (does not import it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("sam2") is not None
    except (ImportError, ValueError):
        return False


def check_sam2() -> None:
    """Import ``sam2``'s builder, or raise :class:`Sam2NotInstalledError` saying how to install."""
    try:
        import sam2  # noqa: F401
        from sam2.build_sam import build_sam2_video_predictor  # noqa: F401
    except ImportError as error:
        raise Sam2NotInstalledError(f"{SAM2_INSTALL_HINT}\n(import failed: {error})") from error


@dataclass
class Sam2Model:
    """A SAM 2 network ready for inference, with the identity of its weights.

    Attributes
    ----------
    net : sam2.sam2_video_predictor.SAM2VideoPredictor
        The torch module, in eval mode, on :attr:`device`.
    config : str
        The package config it was built from, e.g. ``"configs/sam2.1/sam2.1_hiera_t.yaml"``.
    device : torch.device
    encoder_hash : str
        Identity of the weights that produce an embedding (image encoder plus
        the decoder's ``conv_s0``/``conv_s1``): the checkpoint file's SHA-256,
        or a hash of those parameters for random weights. Keys the embedding cache.
    model_hash : str
        Identity of all weights.
    name : str
        Registry name or file name, for display.
    checkpoint : Path or None
        The file the weights came from.
    """

    net: SAM2VideoPredictor
    config: str
    device: torch.device
    encoder_hash: str
    model_hash: str
    name: str = ""
    checkpoint: Path | None = None
    _pos_enc: dict = field(default_factory=dict, repr=False)
    _dense_pe: Any = field(default=None, repr=False)

    #: Tells SAM 2 models from SAM ones without importing this module.
    is_sam2 = True

    @property
    def img_size(self) -> int:
        """Side of the square encoder input (1024 for published models)."""
        return int(self.net.image_size)

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (``img_size // 4``; 256 published)."""
        return self.img_size // 4

    @property
    def is_large_encoder(self) -> bool:
        """True for encoders too slow for interactive use on a CPU (Hiera large)."""
        return "hiera_l" in self.config

    def dense_pe(self) -> torch.Tensor:
        """``sam_prompt_encoder.get_dense_pe()`` ``(1, 256, h, w)``, computed once."""
        if self._dense_pe is None:
            import torch

            with torch.inference_mode():
                self._dense_pe = self.net.sam_prompt_encoder.get_dense_pe()
        return self._dense_pe

    def invalidate(self) -> None:
        """Forget derived tensors after the weights changed in place."""
        self._dense_pe = None


@dataclass(frozen=True)
class Sam2Embedding:
    """The output of ``net.forward_image`` for one plane (CPU, float32, batch 1).

    Attributes
    ----------
    backbone_fpn : list of torch.Tensor
        Three levels ``(1, C_l, S/4, S/4)``, ``(1, C_l, S/8, S/8)``,
        ``(1, 256, S/16, S/16)`` (S = ``img_size``; for Hiera configs
        ``C_0 = 32`` and ``C_1 = 64`` after ``conv_s0``/``conv_s1``).
    vision_pos_enc : list of torch.Tensor
        Positional encodings of the three levels, 256 channels each (shared
        between embeddings of one model; read-only).
    vision_features : torch.Tensor
        ``(1, 256, S/16, S/16)``, the same tensor as ``backbone_fpn[-1]``.
    original_size : (int, int)
        ``(Y, X)`` of the plane.
    key : str
        Cache key (filled in by :class:`~.embedding.EmbeddingCache`; "" otherwise).
    """

    backbone_fpn: list
    vision_pos_enc: list
    vision_features: torch.Tensor
    original_size: tuple[int, int]
    key: str = ""

    @property
    def input_size(self) -> tuple[int, int]:
        """``(S, S)``: SAM 2 resizes every plane to the square encoder input."""
        side = int(self.vision_features.shape[-1]) * 16
        return (side, side)

    @property
    def features(self) -> torch.Tensor:
        """``vision_features`` (the lowest-resolution level), for code written for SAM."""
        return self.vision_features

    def backbone_out(self, device: Any = None) -> dict:
        """A fresh dict like ``net.forward_image`` returns, tensors on ``device``."""
        fpn = [t.to(device) if device is not None else t for t in self.backbone_fpn]
        pos = [t.to(device) if device is not None else t for t in self.vision_pos_enc]
        return {"vision_features": fpn[-1], "vision_pos_enc": pos, "backbone_fpn": fpn}

    def nbytes(self) -> int:
        """Bytes held by this embedding alone (the shared positional encodings excluded)."""
        return sum(t.numel() * t.element_size() for t in self.backbone_fpn)


def _overrides(image_size: int | None) -> list[str]:
    if image_size is None:
        return []
    if image_size % 64 or image_size < 64:
        raise ValueError(f"Expected image_size a multiple of 64 (>= 64), got {image_size}.")
    grid = image_size // 16
    rope = f"[{grid},{grid}]"
    layer = "++model.memory_attention.layer"
    return [
        f"++model.image_size={image_size}",
        f"{layer}.self_attention.feat_sizes={rope}",
        f"{layer}.cross_attention.feat_sizes={rope}",
    ]


def _embedding_weights_hash(net: torch.nn.Module) -> str:
    digest = hashlib.sha256(state_dict_hash(net.image_encoder).encode())
    for part in ("conv_s0", "conv_s1"):
        module = getattr(net.sam_mask_decoder, part, None)
        if module is not None:
            digest.update(state_dict_hash(module).encode())
    return "params:" + digest.hexdigest()


def build_sam2_model(
    config: str = SAM2_CONFIGS["hiera_t"],
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    image_size: int | None = None,
    name: str = "",
    seed: int | None = 0,
    encoder_hash: str | None = None,
) -> Sam2Model:
    """Build a SAM 2 video predictor network from a ``sam2`` package config.

    Parameters
    ----------
    config : str
        A config name inside the ``sam2`` package (see :data:`SAM2_CONFIGS`).
    checkpoint : path, optional
        A ``.pt`` file (``{"model": state_dict}`` as published, or a bare
        state dict), read with ``torch.load(weights_only=True)`` and loaded
        strictly. None keeps random weights.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"auto"`` ...
    image_size : int, optional
        Override the encoder input side (multiple of 64; tests use 128 or 256).
        The memory-attention RoPE sizes follow it.
    name : str
        Display name (default: the file name, or the config with the seed).
    seed : int or None
        Seeds the random initialisation (same seed, same weights); None leaves
        torch's generator as it is. The global generator state is restored.
    encoder_hash : str, optional
        Identity of the checkpoint when the caller already knows it (e.g. a
        registry entry); by default the file's SHA-256.

    Raises
    ------
    Sam2NotInstalledError
        ``sam2`` is not installed.
    FileNotFoundError, RuntimeError
        A missing, unreadable or non-fitting checkpoint.
    """
    check_sam2()
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from ..device import resolve_device

    device = resolve_device(device)
    path = Path(checkpoint).expanduser() if checkpoint is not None else None
    state = load_checkpoint_file(path) if path is not None else None
    generator_state = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        net = build_sam2_video_predictor(
            config,
            ckpt_path=None,
            device="cpu",
            hydra_overrides_extra=_overrides(image_size),
        )
    finally:
        torch.random.set_rng_state(generator_state)
    if state is not None:
        load_state_into(net, state, path, f"SAM 2 network of {config}")
        from .download import file_digest

        file_hash = encoder_hash or "sha256:" + file_digest(path)
        embed_hash = model_hash = file_hash
    else:
        embed_hash = _embedding_weights_hash(net)
        model_hash = "params:" + state_dict_hash(net)
    net = net.to(device).eval()
    if not name:
        name = path.name if path is not None else f"{Path(config).stem} (random weights)"
    return Sam2Model(
        net=net,
        config=config,
        device=device,
        encoder_hash=embed_hash,
        model_hash=model_hash,
        name=name,
        checkpoint=path,
    )


def preprocess_plane(model: Sam2Model, rgb: np.ndarray) -> torch.Tensor:
    """``(1, 3, S, S)`` float32 encoder input on ``model.device``, as ``SAM2Transforms``.

    ``rgb`` ``(Y, X, 3)`` uint8 → ``[0, 1]`` → resize to ``S × S`` (bilinear,
    antialiased, ``align_corners=False``: the interpolation torchvision's
    ``Resize`` runs on tensors) → ImageNet mean/std. Written with torch alone
    (importing ``torchvision.transforms`` costs seconds); a test checks it
    equals ``SAM2Transforms`` exactly.
    """
    import torch
    import torch.nn.functional as F

    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected a (Y, X, 3) uint8 plane, got {rgb.shape} {rgb.dtype}.")
    side = model.img_size
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(model.device)
    tensor = tensor.permute(2, 0, 1).float().div(255.0)[None]
    if tuple(tensor.shape[-2:]) != (side, side):
        tensor = F.interpolate(
            tensor, size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(_MEAN, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std = torch.tensor(_STD, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)


def shared_pos_enc(model: Sam2Model, fpn: list, pos: list | None = None) -> list:
    """The model's CPU positional encodings for feature maps shaped like ``fpn``.

    Computed once per grid size (from ``pos``, the ``vision_pos_enc`` of a
    ``forward_image`` call, or else by the neck's position encoding, which
    depends on the shapes only) and shared by every embedding of that size.
    """
    key = tuple(tuple(int(n) for n in t.shape[-2:]) for t in fpn)
    cached = model._pos_enc.get(key)
    if cached is None:
        if pos is None:
            import torch

            encoding = model.net.image_encoder.neck.position_encoding
            with torch.inference_mode():
                pos = [encoding(t.to(model.device)).to(t.dtype) for t in fpn]
        cached = [t.detach().float().cpu().clone() for t in pos]
        model._pos_enc[key] = cached
    return cached


def encode_plane(model: Sam2Model, rgb: np.ndarray, *, key: str = "") -> Sam2Embedding:
    """Run ``net.forward_image`` on one plane with the official SAM 2 preprocessing.

    Parameters
    ----------
    model : Sam2Model
    rgb : array ``(Y, X, 3)`` uint8
        Not modified.
    key : str
        Stored in the result (the cache passes its key).

    Returns
    -------
    Sam2Embedding
        Float32 CPU tensors with a batch axis of 1 (see the module notes).
    """
    import torch

    batch = preprocess_plane(model, rgb)
    with torch.inference_mode():
        out = model.net.forward_image(batch)
    fpn = [t.detach().float().cpu().clone() for t in out["backbone_fpn"]]
    pos = shared_pos_enc(model, fpn, out["vision_pos_enc"])
    return Sam2Embedding(
        backbone_fpn=fpn,
        vision_pos_enc=pos,
        vision_features=fpn[-1],
        original_size=(int(rgb.shape[0]), int(rgb.shape[1])),
        key=key,
    )
