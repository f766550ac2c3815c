"""The Mask R-CNN network (torchvision) built from JSON-serialisable settings.

:func:`build_maskrcnn` makes a randomly initialised
``torchvision.models.detection.MaskRCNN`` with a ResNet + FPN backbone (no
download). Differences from torchvision's COCO configuration, for microscopy:

* **No rescaling**: images are used at their pixel size (torchvision would
  resize every image so its short side is 800 px). Training crops and the
  planes predicted keep their scale, so objects look the same size in both;
  masks come back pasted on the full-resolution plane. Inputs are already
  normalised by the model's intensity recipe, so the network's own
  normalisation is the identity (mean 0, std 1 per channel).
* **Any channel count**: the backbone's first convolution takes
  ``in_channels``.
* **Small anchors** (8 to 128 px by default) and up to 300 objects per plane.
* **Group normalisation** in the backbone by default: it trains from
  scratch on the few crops per step a CPU or a small GPU allows (batch
  normalisation is unreliable there).

Settings (``network_kwargs``) are listed in :func:`maskrcnn_defaults`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["BACKBONES", "SMALL_PRESET", "build_maskrcnn", "maskrcnn_defaults", "maskrcnn_settings"]

#: Backbone names: torchvision ResNets (random weights) and a small ResNet for tests and CPUs.
BACKBONES = ("resnet18", "resnet34", "resnet50", "small")
#: Normalisation layers of the backbone.
NORMS = ("group", "batch", "frozen")
#: Defaults that change with the ``"small"`` backbone: narrow FPN and heads too.
SMALL_PRESET = {"fpn_channels": 64, "box_head": 256, "mask_head": 64, "rpn_proposals": 300}


def maskrcnn_settings(overrides: dict | None = None, backbone: str | None = None) -> dict:
    """Full ``network_kwargs``: the defaults, the small preset, then ``overrides``.

    Parameters
    ----------
    overrides : dict, optional
        Settings of :func:`maskrcnn_defaults` to change.
    backbone : str, optional
        The backbone (the ``encoder=`` keyword); wins over ``overrides``.
        With ``"small"``, :data:`SMALL_PRESET` replaces the defaults it names.
    """
    settings = maskrcnn_defaults()
    overrides = dict(overrides or {})
    if backbone is not None:
        overrides["backbone"] = backbone
    if overrides.get("backbone") == "small":
        settings.update(SMALL_PRESET)
    settings.update(overrides)
    return settings


def maskrcnn_defaults() -> dict:
    """Default ``network_kwargs`` of the ``"maskrcnn"`` family.

    Returns
    -------
    dict
        ``backbone`` (:data:`BACKBONES`), ``widths`` (the ``"small"``
        backbone's four stage widths), ``norm`` (:data:`NORMS`),
        ``fpn_channels``, ``anchor_sizes`` (one per FPN level, pixels),
        ``detections_per_image``, ``rpn_proposals`` (kept after NMS in
        training and prediction), ``box_samples`` (RoIs sampled per image in
        training), ``box_head`` (width of the box head's two layers) and
        ``mask_head`` (channels of the mask head's four convolutions).
    """
    return {
        "backbone": "resnet18",
        "widths": [32, 64, 128, 256],
        "norm": "group",
        "fpn_channels": 256,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "detections_per_image": 300,
        "rpn_proposals": 1000,
        "box_samples": 256,
        "box_head": 1024,
        "mask_head": 256,
    }


def _norm_layer(name: str):
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    if name == "batch":
        return torch.nn.BatchNorm2d
    if name == "frozen":
        return FrozenBatchNorm2d

    def group_norm(channels: int) -> torch.nn.Module:
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2)
        return torch.nn.GroupNorm(groups, channels)

    return group_norm


def _small_resnet(in_channels: int, widths: Sequence[int], norm):
    """Four stages of one residual block each, strides 4, 8, 16, 32 (as a ResNet's)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = norm(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = norm(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))

    first = int(widths[0])
    layers = OrderedDict(
        stem=nn.Sequential(
            nn.Conv2d(in_channels, first, 3, 2, 1, bias=False),
            norm(first),
            nn.ReLU(inplace=True),
        ),
        layer1=Block(first, first, 2),
    )
    for k in range(1, 4):
        layers[f"layer{k + 1}"] = Block(int(widths[k - 1]), int(widths[k]), 2)
    return nn.Sequential(layers), [int(w) for w in widths]


def _torchvision_resnet(name: str, in_channels: int, norm):
    import torch
    from torchvision.models import resnet

    net = getattr(resnet, name)(weights=None, norm_layer=norm)
    if in_channels != 3:
        net.conv1 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    del net.fc, net.avgpool
    expansion = 4 if name == "resnet50" else 1
    return net, [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]


def build_maskrcnn(in_channels: int, num_classes: int, kwargs: dict):
    """A randomly initialised Mask R-CNN (see the module docstring).

    Parameters
    ----------
    in_channels : int
        Input channels of the planes ``(C, Y, X)``.
    num_classes : int
        Classes including background (2: background and "object").
    kwargs : dict
        Settings of :func:`maskrcnn_defaults` (missing ones take the defaults).

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        In training mode ``model(images, targets)`` gives a dict of losses; in
        eval mode ``model(images)`` a list of dicts with ``boxes`` ``(N, 4)``,
        ``scores`` ``(N,)``, ``labels`` and ``masks`` ``(N, 1, Y, X)``
        probabilities pasted on each full-resolution plane.

    Raises
    ------
    ValueError
        For unknown settings, backbones or normalisations.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    settings = maskrcnn_defaults()
    unknown = sorted(set(kwargs) - set(settings))
    if unknown:
        raise ValueError(
            f"Unknown 'maskrcnn' settings {unknown}: expected some of {sorted(settings)}."
        )
    settings.update(kwargs)
    if settings["backbone"] not in BACKBONES:
        raise ValueError(
            f"Unknown Mask R-CNN backbone {settings['backbone']!r}: expected one of {BACKBONES}."
        )
    if settings["norm"] not in NORMS:
        raise ValueError(f"Unknown backbone norm {settings['norm']!r}: expected one of {NORMS}.")
    if len(settings["anchor_sizes"]) != 5 or len(settings["widths"]) != 4:
        raise ValueError(
            "Expected 5 anchor_sizes (one per FPN level) and 4 widths, got "
            f"{settings['anchor_sizes']} and {settings['widths']}."
        )
    norm = _norm_layer(settings["norm"])
    if settings["backbone"] == "small":
        body, channels = _small_resnet(in_channels, settings["widths"], norm)
    else:
        body, channels = _torchvision_resnet(settings["backbone"], in_channels, norm)
    layers = {f"layer{k}": str(k - 1) for k in range(1, 5)}
    backbone = BackboneWithFPN(body, layers, channels, int(settings["fpn_channels"]))
    anchors = AnchorGenerator(
        tuple((int(s),) for s in settings["anchor_sizes"]), ((0.5, 1.0, 2.0),) * 5
    )
    proposals = int(settings["rpn_proposals"])
    fpn, box, mask = (int(settings[k]) for k in ("fpn_channels", "box_head", "mask_head"))
    model = MaskRCNN(
        backbone,
        num_classes=None,  # given by the predictors
        min_size=1,
        max_size=1,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=proposals,
        rpn_post_nms_top_n_train=proposals,
        rpn_pre_nms_top_n_test=proposals,
        rpn_post_nms_top_n_test=proposals,
        box_detections_per_img=int(settings["detections_per_image"]),
        box_batch_size_per_image=int(settings["box_samples"]),
        box_head=TwoMLPHead(fpn * 7 * 7, box),
        box_predictor=FastRCNNPredictor(box, int(num_classes)),
        mask_head=MaskRCNNHeads(fpn, [mask] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask, mask, int(num_classes)),
    )
    model.transform.resize = _keep_size  # images keep their pixel size
    return model


def _keep_size(image, target=None):
    """Replacement of ``GeneralizedRCNNTransform.resize``: no rescaling."""
    return image, target
