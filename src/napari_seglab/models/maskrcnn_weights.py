"""ImageNet ResNet weights for ``pretrained=True`` (``"maskrcnn"``, ``"deeplabv3plus"``), cached.

DeepLabV3+ loads them into its encoder with
:func:`napari_seglab.unet.families.load_pretrained`; Mask R-CNN with
:func:`load_backbone_weights` here. :data:`BACKBONE_WEIGHTS` is the one registry.

The ResNet weights are torchvision's ``IMAGENET1K_V1`` files. They are
downloaded once into the plugin cache (:func:`napari_seglab.cache.cache_dir`,
sub-folder ``weights``) through :func:`napari_seglab.sam.download.download_file`
(atomic, progress, cancel, time limits), and checked against the SHA-256
prefix in their file name, the check ``torch.hub`` makes for these files
(torchvision publishes no full digest; the prefix is 8 hex digits). Without a
network the error names the exact path where to place the file by hand.

:func:`load_backbone_weights` copies them into the backbone of a network from
:func:`~.maskrcnn_net.build_maskrcnn`; for inputs with other than 3 channels
the first convolution's weights are averaged over RGB and repeated.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["BACKBONE_WEIGHTS", "ensure_backbone_weights", "load_backbone_weights", "weights_path"]

#: Backbone name -> URL of its ImageNet weights (torchvision ``IMAGENET1K_V1``).
BACKBONE_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")


def weights_path(url: str) -> Path:
    """Where the file of ``url`` lives in the plugin cache (it may not exist yet)."""
    from ..cache import cache_dir

    return cache_dir("weights") / url.rsplit("/", 1)[-1]


def _check_prefix(path: Path, url: str) -> None:
    from ..sam.download import file_digest

    prefix = _PREFIX.search(url.rsplit("/", 1)[-1])
    if prefix is None:
        raise ValueError(f"{url} has no SHA-256 prefix in its file name to check against.")
    digest = file_digest(path, "sha256")
    if not digest.startswith(prefix.group(1)):
        raise RuntimeError(
            f"{path} does not match the SHA-256 prefix in its name: expected "
            f"{prefix.group(1)}..., got {digest}. The file is corrupt or a different one: "
            "delete it and download it again."
        )


def ensure_backbone_weights(
    backbone: str, *, url: str | None = None, download: bool = True, progress=False, cancel=None
) -> Path:
    """Path of the cached ImageNet weights of ``backbone``, downloading them if missing.

    Parameters
    ----------
    backbone : str
        A key of :data:`BACKBONE_WEIGHTS`.
    url : str, optional
        Another source of the same file name convention (tests, mirrors).
    download : bool
        False never touches the network.
    progress, cancel
        See :func:`napari_seglab.sam.download.download_file`.

    Raises
    ------
    ValueError
        For a backbone without ImageNet weights (the ``"small"`` one).
    FileNotFoundError
        The file is not cached and could not be downloaded; the message names
        the exact path to place it at and its URL.
    RuntimeError
        The file does not match the SHA-256 prefix in its name (a downloaded
        one is deleted).
    """
    if url is None:
        if backbone not in BACKBONE_WEIGHTS:
            raise ValueError(
                f"pretrained=True: the {backbone!r} backbone has no ImageNet weights; expected "
                f"one of {', '.join(BACKBONE_WEIGHTS)}."
            )
        url = BACKBONE_WEIGHTS[backbone]
    target = weights_path(url)
    if target.is_file():
        _check_prefix(target, url)
        return target
    how = (
        f"To work offline, download {url} on another machine and place it at {target} "
        "(or train with pretrained=False)."
    )
    if not download:
        raise FileNotFoundError(f"ImageNet weights of {backbone!r} are not cached. {how}")
    from ..sam.download import download_file

    try:
        download_file(url, target, None, progress=progress, cancel=cancel)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"ImageNet weights of {backbone!r} are not cached and could not be downloaded "
            f"({str(exc).splitlines()[0]}). {how}"
        ) from exc
    try:
        _check_prefix(target, url)
    except RuntimeError:
        target.unlink(missing_ok=True)
        raise
    return target


def load_backbone_weights(network, path: Path) -> None:
    """Copy the ResNet weights at ``path`` into ``network``'s backbone (in place).

    Raises
    ------
    ValueError
        When the file's tensors do not fit the backbone (another ResNet, or a
        backbone with group normalisation: pretrained weights need
        ``norm="frozen"`` or ``"batch"``).
    """
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    body = network.backbone.body
    own = body.state_dict()
    conv = state.get("conv1.weight")
    if conv is not None and "conv1.weight" in own and own["conv1.weight"].shape != conv.shape:
        channels = own["conv1.weight"].shape[1]
        state["conv1.weight"] = conv.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or wrong:
        raise ValueError(
            f"{path} does not fit the backbone ({len(missing)} tensor(s) missing, e.g. "
            f"{missing[:1]}; {len(wrong)} of another shape, e.g. {wrong[:1]}): pretrained "
            "weights need the same ResNet and norm='frozen' or 'batch'."
        )
    body.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
