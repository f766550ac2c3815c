"""Registry of segmentation networks (MONAI, and DeepLabV3+ from segmentation-models-pytorch).

Each entry knows how to fill in constructor arguments for a given number of
spatial dimensions and voxel spacing, which patch sizes the network accepts
(every spatial size must be a multiple of :func:`patch_multiple`) and how to
build the ``torch.nn.Module``. The full argument dictionary is stored with a
trained model so that :func:`build_network` rebuilds exactly the same network.
The registry keys are the model families of :mod:`.families`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import families

#: MONAI architecture names (the widget's choices); :func:`build_network` also
#: accepts every name of :data:`~.families.FAMILY_NAMES`.
ARCHITECTURE_NAMES = families.MONAI_NAMES


@dataclass(frozen=True)
class Architecture:
    """One network family.

    Attributes
    ----------
    name : str
        Registry key.
    description : str
        One line for menus and ``--help``.
    defaults : callable ``(spatial_dims, spacing) -> dict``
        Constructor arguments (besides dims and channels) with small defaults.
    multiple : callable ``(kwargs, spatial_dims) -> tuple[int, ...]``
        Per-axis factor every patch size must be divisible by.
    """

    name: str
    description: str
    defaults: Callable[[int, Sequence[float] | None], dict]
    multiple: Callable[[dict, int], tuple[int, ...]]


def _unet_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    channels = [16, 32, 64, 128] if spatial_dims == 2 else [8, 16, 32, 64]
    return {
        "channels": channels,
        "strides": [2] * (len(channels) - 1),
        "num_res_units": 1,
        "norm": "INSTANCE",
        "dropout": 0.0,
    }


def _unet_multiple(kwargs: dict, spatial_dims: int) -> tuple[int, ...]:
    factor = [1] * spatial_dims
    for stride in kwargs["strides"]:
        per_axis = stride if isinstance(stride, Sequence) else [stride] * spatial_dims
        factor = [f * int(s) for f, s in zip(factor, per_axis)]
    return tuple(factor)


def _basicunet_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    return {"features": [16, 16, 32, 64, 128, 16], "dropout": 0.0}


def _segresnet_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    return {"init_filters": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}


def _segresnet_multiple(kwargs: dict, spatial_dims: int) -> tuple[int, ...]:
    return (2 ** (len(kwargs["blocks_down"]) - 1),) * spatial_dims


def _swin_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    return {
        "feature_size": 12,
        "depths": [1, 1, 1, 1],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
    }


def _dynunet_strides(spatial_dims: int, spacing: Sequence[float] | None, levels: int) -> list:
    """nnU-Net-style strides: halve an axis only while it is not much coarser than the finest."""
    current = list(spacing) if spacing is not None else [1.0] * spatial_dims
    strides: list = [[1] * spatial_dims]
    kernels: list = []
    for _ in range(levels):
        finest = min(current)
        kernels.append([3 if s <= 2 * finest else 1 for s in current])
        step = [2 if s <= 2 * finest else 1 for s in current]
        strides.append(step)
        current = [s * f for s, f in zip(current, step)]
    kernels.append([3] * spatial_dims)
    return strides, kernels


def _dynunet_defaults(spatial_dims: int, spacing: Sequence[float] | None) -> dict:
    strides, kernels = _dynunet_strides(spatial_dims, spacing, levels=3)
    return {
        "kernel_size": kernels,
        "strides": strides,
        "upsample_kernel_size": strides[1:],
        "filters": [16, 32, 64, 128],
        "res_block": True,
    }


def _dynunet_multiple(kwargs: dict, spatial_dims: int) -> tuple[int, ...]:
    return _unet_multiple({"strides": kwargs["strides"]}, spatial_dims)


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture("unet", "MONAI UNet (residual units)", _unet_defaults, _unet_multiple),
    "basicunet": Architecture(
        "basicunet",
        "MONAI BasicUNet (classic U-Net, 4 levels)",
        _basicunet_defaults,
        lambda kwargs, dims: (16,) * dims,
    ),
    "segresnet": Architecture(
        "segresnet", "MONAI SegResNet (residual encoder)", _segresnet_defaults, _segresnet_multiple
    ),
    "swinunetr": Architecture(
        "swinunetr",
        "MONAI SwinUNETR (transformer encoder; slow on CPU)",
        _swin_defaults,
        lambda kwargs, dims: (32,) * dims,
    ),
    "dynunet": Architecture(
        "dynunet",
        "MONAI DynUNet (anisotropic strides from the voxel spacing)",
        _dynunet_defaults,
        _dynunet_multiple,
    ),
    "deeplabv3plus": Architecture(
        "deeplabv3plus",
        "DeepLabV3+ (segmentation-models-pytorch; 2D, encoder choice)",
        families.deeplab_defaults,
        families.deeplab_multiple,
    ),
}


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}: expected one of {list(ARCHITECTURES)}.")
    return ARCHITECTURES[key]


def network_kwargs(
    name: str,
    spatial_dims: int,
    *,
    spacing: Sequence[float] | None = None,
    overrides: dict | None = None,
) -> dict:
    """Full constructor arguments (besides dims and channels) for ``name``.

    Parameters
    ----------
    name : str
        One of :data:`ARCHITECTURE_NAMES`.
    spatial_dims : {2, 3}
    spacing : sequence of float, optional
        Voxel size in the image's axis order; DynUNet uses it for its strides.
    overrides : dict, optional
        Arguments replacing the defaults (for example ``{"channels": [8, 16, 32]}``).

    Returns
    -------
    dict
        JSON-serialisable (lists, numbers, strings).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"Expected spatial_dims 2 or 3, got {spatial_dims}.")
    if spacing is not None and len(spacing) != spatial_dims:
        raise ValueError(
            f"Expected {spatial_dims} spacing values (one per spatial axis), got {tuple(spacing)}."
        )
    kwargs = get_architecture(name).defaults(spatial_dims, spacing)
    kwargs.update(_jsonable(overrides or {}))
    if name == "unet" and overrides and "channels" in overrides and "strides" not in overrides:
        kwargs["strides"] = [2] * (len(kwargs["channels"]) - 1)
    return _jsonable(kwargs)


def patch_multiple(name: str, kwargs: dict, spatial_dims: int) -> tuple[int, ...]:
    """Per-axis factor that every patch size must be divisible by."""
    return get_architecture(name).multiple(kwargs, spatial_dims)


def build_network(name: str, spatial_dims: int, in_channels: int, out_channels: int, kwargs: dict):
    """Instantiate the MONAI network ``name`` with ``kwargs``.

    Raises
    ------
    ValueError
        For unknown names or invalid arguments (DeepLabV3+: 3D, unknown encoder).
    RuntimeError
        If an optional package the network needs is missing (SwinUNETR: einops).

    Returns
    -------
    torch.nn.Module
        Takes ``(B, in_channels, *spatial)`` and returns logits
        ``(B, out_channels, *spatial)``.
    """
    arch = get_architecture(name)
    if arch.name == "deeplabv3plus":
        return families.build_deeplab(spatial_dims, in_channels, out_channels, kwargs)
    from monai.networks import nets

    if arch.name == "swinunetr":
        import importlib.util

        if importlib.util.find_spec("einops") is None:
            raise RuntimeError(
                "The 'swinunetr' architecture needs the 'einops' package, which is not "
                "installed: pip install einops (or choose another architecture)."
            )
    common = {"spatial_dims": spatial_dims, "in_channels": in_channels}
    args = dict(kwargs)
    try:
        if arch.name == "unet":
            return nets.UNet(out_channels=out_channels, **common, **args)
        if arch.name == "basicunet":
            args["features"] = tuple(args["features"])
            return nets.BasicUNet(out_channels=out_channels, **common, **args)
        if arch.name == "segresnet":
            args["blocks_down"] = tuple(args["blocks_down"])
            args["blocks_up"] = tuple(args["blocks_up"])
            return nets.SegResNet(out_channels=out_channels, **common, **args)
        if arch.name == "swinunetr":
            return nets.SwinUNETR(out_channels=out_channels, **common, **args)
        return nets.DynUNet(out_channels=out_channels, **common, **args)
    except TypeError as exc:
        raise ValueError(f"Invalid arguments for architecture {name!r}: {exc}") from exc


def default_patch_size(
    spatial_shape: Sequence[int],
    multiple: Sequence[int],
    *,
    spacing: Sequence[float] | None = None,
) -> tuple[int, ...]:
    """A patch size that fits the network and (roughly) the image.

    2D: up to 128 pixels per axis. 3D: up to 64 pixels in-plane; along a
    coarser axis the patch covers about the same physical extent as in-plane
    (at least 2x the required multiple). Sizes are rounded up to ``multiple``;
    images smaller than the patch are padded during training and prediction.
    """
    ndim = len(spatial_shape)
    target = [128] * ndim if ndim == 2 else [64] * ndim
    if spacing is not None and ndim == 3:
        finest = min(spacing)
        target = [max(round(64 * finest / s), 2 * m) for s, m in zip(spacing, multiple)]
    patch = []
    for size, want, m in zip(spatial_shape, target, multiple):
        edge = min(int(size), want)
        patch.append(max(m, math.ceil(edge / m) * m))
    return tuple(patch)


def check_patch_size(
    patch_size: Sequence[int], multiple: Sequence[int], spatial_dims: int
) -> tuple[int, ...]:
    """Validate a user patch size against the network's required multiple."""
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != spatial_dims:
        raise ValueError(
            f"Expected a patch size with {spatial_dims} values (one per spatial axis), "
            f"got {patch}."
        )
    bad = [p for p, m in zip(patch, multiple) if p <= 0 or p % m]
    if bad:
        raise ValueError(
            f"Patch size {patch} does not fit the network: every axis must be a positive "
            f"multiple of {tuple(multiple)}."
        )
    if all(p == m for p, m in zip(patch, multiple)):
        # The deepest feature map would be a single voxel, which the networks'
        # instance/batch normalisation cannot train on.
        raise ValueError(
            f"Patch size {patch} is too small for the network: at least one axis must be "
            f"larger than {tuple(multiple)} (a multiple of it)."
        )
    return patch


def check_image_size(
    shape: Sequence[int], patch: Sequence[int], multiple: Sequence[int], name: str
) -> None:
    """Refuse training images too small for the network ``name``.

    Smaller images are padded to the patch, but a patch equal to the network's
    size multiple on every axis leaves a single voxel in the deepest feature
    map, which instance/batch normalisation cannot train on (PyTorch fails
    with an internal error). The smallest accepted image therefore has one
    axis longer than the multiple.

    Raises
    ------
    ValueError
        Naming the received shape and the smallest shape accepted.
    """
    if any(int(p) != int(m) for p, m in zip(patch, multiple)):
        return
    smallest = (1,) * (len(multiple) - 1) + (int(multiple[-1]) + 1,)
    raise ValueError(
        f"Images of shape {tuple(int(s) for s in shape)} are too small to train the {name!r} "
        f"network: it downsamples by {tuple(int(m) for m in multiple)}, so at least one axis "
        f"must be longer than that (the smallest accepted shape is e.g. {smallest}, "
        "shorter axes are padded)."
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
