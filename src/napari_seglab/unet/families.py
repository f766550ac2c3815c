"""Model families beyond MONAI: DeepLabV3+ (segmentation-models-pytorch), and the family choice.

A *family* names the network the trainer builds. The MONAI networks keep
their architecture names (``"unet"``, ``"basicunet"``, ``"segresnet"``,
``"swinunetr"``, ``"dynunet"``), so ``family="unet"`` and
``architecture="unet"`` mean the same; :data:`FAMILY_NAMES` adds
``"deeplabv3plus"``. A saved model records its family under ``architecture``
(and ``family``) with its constructor arguments in ``network_kwargs``.

DeepLabV3+ is 2D: on 3D stacks it trains on the annotated planes and predicts
plane by plane, as the U-Net's 2D models do. Its encoder downsamples by its
output stride (16 by default), so every patch side is a multiple of it. Its
ASPP pooling branch applies batch normalisation to one value per patch and
channel, so it trains on at least 2 patches per step (:data:`MIN_BATCH`);
prediction runs in eval mode, where any batch size works.

Families with their own module
------------------------------
Families that are not a dense per-pixel network (Mask R-CNN, later
Mask2Former) are *family modules*: :data:`FAMILY_MODULES` maps the family
name to a module path, imported on first use. Adding one is one line there
plus a module that defines:

``KIND : str``
    ``"instance"`` (prediction gives instance labels), ``"panoptic"`` or
    ``"semantic"``.
``build_network(spatial_dims, in_channels, out_channels, kwargs) -> torch.nn.Module``
    The randomly initialised network from the saved ``network_kwargs`` (no
    download); called under ``torch.device("meta")`` by
    :meth:`~.model.SegmentationModel.load` to check a file's weights.
``train_events(image, labels, **keywords) -> Generator[EpochEvent, None, SegmentationModel]``
    The job :func:`~.training.train_events` hands over to, with every keyword
    it received (``family``/``architecture`` resolved to the name, the others
    as given: ``time_budget_s``, ``max_epochs``, ``device``, ``seed``,
    ``validation_fraction``, ``augment``, ``cancel`` ...). It returns a
    :class:`~.model.SegmentationModel` whose ``architecture`` is the family
    name, so ``save``/``load`` work unchanged (same file format,
    ``weights_only`` loading); on cancel it raises ``JobCancelled`` with the
    best model so far as ``partial``, like the dense families.
``predict_events(model, image, *, cancel=None, **keywords)``
    A job (``Generator[ProgressEvent, None, Prediction]``) giving
    the whole prediction as a :class:`~.postprocess.Prediction`:
    ``probabilities`` ``(C, *spatial)`` float32, ``labels`` (class values) and,
    for instance and panoptic families, ``instances`` (ids from 1).
    :func:`~.inference.predict` returns its ``probabilities`` and
    :func:`~.postprocess.predict_and_split` the whole object.

A family module listed here is offered (in :data:`FAMILY_NAMES`, the widget
and ``seglab train --family``) only once its file exists.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

#: The MONAI architecture names (as in :data:`~.architectures.ARCHITECTURE_NAMES`).
MONAI_NAMES = ("unet", "basicunet", "segresnet", "swinunetr", "dynunet")
#: Families trained and predicted by their own module: name -> module path.
FAMILY_MODULES = {
    "maskrcnn": "napari_seglab.models.maskrcnn",
    "mask2former": "napari_seglab.models.mask2former",
}


def _module_exists(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except ImportError:
        return False


#: Family names accepted by ``train(family=...)``.
FAMILY_NAMES = (
    *MONAI_NAMES,
    "deeplabv3plus",
    *(name for name, path in FAMILY_MODULES.items() if _module_exists(path)),
)
#: Default DeepLabV3+ encoder.
DEFAULT_ENCODER = "resnet34"
#: Fewest patches per training step of families with batch normalisation.
MIN_BATCH = {"deeplabv3plus": 2}
#: ``network_kwargs`` key recording the ImageNet weights file a DeepLabV3+ encoder started
#: from (``pretrained=True``); not a segmentation-models-pytorch argument.
PRETRAINED_KEY = "pretrained_encoder"


def encoder_names() -> list[str]:
    """Encoder names segmentation-models-pytorch can build for DeepLabV3+."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


def check_encoder(name: str) -> str:
    """Return ``name`` if segmentation-models-pytorch knows it, else raise listing the choices.

    Raises
    ------
    ValueError
        Naming the received encoder and every accepted one.
    """
    choices = encoder_names()
    if name not in choices:
        raise ValueError(
            f"Unknown DeepLabV3+ encoder {name!r}: expected one of {', '.join(choices)} "
            f"(default {DEFAULT_ENCODER!r})."
        )
    return name


def resolve_family(family: str | None, architecture: str | None) -> str:
    """The family to train from the ``family=`` and legacy ``architecture=`` keywords.

    Either may be given (they are the same names); both must then agree. With
    neither, ``"unet"``.

    Raises
    ------
    ValueError
        For an unknown name (listing :data:`FAMILY_NAMES`) or two different names.
    """
    names = {}
    for keyword, value in (("model family", family), ("architecture", architecture)):
        if value is None:
            continue
        key = str(value).strip().lower()
        if key not in FAMILY_NAMES:
            raise ValueError(
                f"Unknown {keyword} {value!r}: expected one of {', '.join(FAMILY_NAMES)}."
            )
        names[keyword] = key
    if len(set(names.values())) > 1:
        raise ValueError(
            f"family={family!r} and architecture={architecture!r} disagree: give one of them "
            "(they take the same names)."
        )
    return next(iter(names.values()), "unet")


def family_overrides(
    family: str, network_kwargs: dict | None, encoder: str | None, pretrained: bool
) -> dict | None:
    """``network_kwargs`` with the ``encoder=`` and ``pretrained=`` choices folded in.

    With ``pretrained=True`` (DeepLabV3+ only) the result records the file name
    of the ImageNet weights under :data:`PRETRAINED_KEY`; :func:`load_pretrained`
    then loads them into the new network. A saved model keeps the record, and
    its weights: loading it never downloads anything.

    Raises
    ------
    ValueError
        ``encoder`` for a family without one, an unknown encoder, ``pretrained=True``
        for another family or for an encoder without ImageNet weights here
        (listing those with them).
    """
    overrides = dict(network_kwargs or {})
    if encoder is not None:
        if family != "deeplabv3plus":
            raise ValueError(
                f"encoder={encoder!r} applies to the 'deeplabv3plus' family only, not {family!r}."
            )
        overrides["encoder_name"] = encoder
    if family == "deeplabv3plus":
        check_encoder(overrides.get("encoder_name", DEFAULT_ENCODER))
        for key in ("encoder_weights", PRETRAINED_KEY):
            if key in overrides:
                raise ValueError(
                    f"network_kwargs may not set {key!r}: networks start from random weights "
                    "(pretrained=True is the opt-in for ImageNet encoders)."
                )
    if pretrained:
        if family != "deeplabv3plus":
            raise ValueError(
                f"pretrained=True: the {family!r} family has no pretrained weights; it trains "
                "from random initialisation."
            )
        from ..models.maskrcnn_weights import BACKBONE_WEIGHTS

        name = overrides.get("encoder_name", DEFAULT_ENCODER)
        if name not in BACKBONE_WEIGHTS:
            raise ValueError(
                f"pretrained=True: no ImageNet weights for the DeepLabV3+ encoder {name!r}; "
                f"encoders with pretrained weights: {', '.join(BACKBONE_WEIGHTS)}. Choose one "
                "of them, or train from random weights (pretrained=False)."
            )
        overrides[PRETRAINED_KEY] = BACKBONE_WEIGHTS[name].rsplit("/", 1)[-1]
    return overrides or None


def load_pretrained(network, kwargs: dict, *, progress=False, cancel=None) -> None:
    """Load the ImageNet encoder weights ``kwargs`` records into ``network`` (in place).

    A no-op unless ``kwargs`` holds :data:`PRETRAINED_KEY` (set by
    :func:`family_overrides` for ``pretrained=True``). The file comes from the
    plugin cache, downloaded once and checked against the SHA-256 prefix in
    its name (:func:`~napari_seglab.models.maskrcnn_weights.ensure_backbone_weights`);
    segmentation-models-pytorch never downloads anything itself.

    Parameters
    ----------
    network : segmentation_models_pytorch.DeepLabV3Plus
        From :func:`build_deeplab`; its ``encoder`` is a torchvision ResNet without ``fc``.
    kwargs : dict
        The network's ``network_kwargs``.
    progress, cancel
        See :func:`napari_seglab.sam.download.download_file`.

    Raises
    ------
    FileNotFoundError
        Not cached and not downloadable: the message names the URL and the exact path.
    ValueError
        The file's tensors do not fit the encoder.
    """
    if PRETRAINED_KEY not in kwargs:
        return
    import torch

    from ..models.maskrcnn_weights import ensure_backbone_weights

    name = kwargs.get("encoder_name", DEFAULT_ENCODER)
    path = ensure_backbone_weights(name, progress=progress, cancel=cancel)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv, own = state.get("conv1.weight"), network.encoder.conv1.weight
    conv = None if conv is None else conv.to(own.dtype)
    if conv is not None and conv.shape[1] != own.shape[1]:  # not RGB: the sum over RGB, shared
        channels = own.shape[1]
        state["conv1.weight"] = conv.sum(1, keepdim=True).repeat(1, channels, 1, 1) / channels
    try:
        network.encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} does not fit the {name!r} encoder: {str(exc).splitlines()[0]}"
        ) from exc


def deeplab_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    """DeepLabV3+ constructor arguments (besides channels), smp's defaults with a ResNet-34."""
    return {
        "encoder_name": DEFAULT_ENCODER,
        "encoder_depth": 5,
        "encoder_output_stride": 16,
        "decoder_channels": 256,
        "decoder_atrous_rates": [12, 24, 36],
    }


def deeplab_multiple(kwargs: dict, spatial_dims: int) -> tuple[int, ...]:
    """Patch sides must be multiples of the encoder's output stride (16 or 8)."""
    return (int(kwargs.get("encoder_output_stride", 16)),) * spatial_dims


def build_deeplab(spatial_dims: int, in_channels: int, out_channels: int, kwargs: dict):
    """A randomly initialised ``smp.DeepLabV3Plus`` (no download).

    Returns
    -------
    torch.nn.Module
        ``(B, in_channels, Y, X)`` -> logits ``(B, out_channels, Y, X)``; ``Y`` and
        ``X`` multiples of the output stride.

    Raises
    ------
    ValueError
        For 3D, an unknown encoder or arguments smp refuses.
    """
    if spatial_dims != 2:
        raise ValueError(
            f"The 'deeplabv3plus' family is 2D, got spatial_dims={spatial_dims}: pass "
            "spatial_dims=2 to train on the planes of a 3D stack (it then predicts plane by "
            "plane)."
        )
    import segmentation_models_pytorch as smp

    args = dict(kwargs)
    args.pop(PRETRAINED_KEY, None)  # the weights come from load_pretrained or the model file
    if "encoder_weights" in args:
        raise ValueError("DeepLabV3+ network_kwargs may not set 'encoder_weights'.")
    check_encoder(args.get("encoder_name", DEFAULT_ENCODER))
    if "decoder_atrous_rates" in args:
        args["decoder_atrous_rates"] = tuple(args["decoder_atrous_rates"])
    try:
        return smp.DeepLabV3Plus(
            encoder_weights=None, in_channels=in_channels, classes=out_channels, **args
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"Invalid arguments for the 'deeplabv3plus' family: {exc}") from exc


def family_module(name: str) -> ModuleType | None:
    """The module of a family listed in :data:`FAMILY_MODULES`, None for a dense family.

    Raises
    ------
    ValueError
        For a listed family whose module is not installed.
    """
    key = str(name).strip().lower()
    if key not in FAMILY_MODULES:
        return None
    if key not in FAMILY_NAMES:
        raise ValueError(
            f"The {key!r} model family is not available in this installation "
            f"(module {FAMILY_MODULES[key]} is missing); expected one of "
            f"{', '.join(FAMILY_NAMES)}."
        )
    return importlib.import_module(FAMILY_MODULES[key])
