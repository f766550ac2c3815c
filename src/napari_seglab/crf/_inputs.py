"""Validation of CRF inputs: image channels, probabilities, labels and spacing.

Every function returns arrays in the layout the CRF uses: channels first,
``(C, *spatial)`` with ``spatial`` ``(Y, X)`` or ``(Z, Y, X)``; nothing is
modified in place.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Largest allowed deviation of per-pixel class probabilities from a sum of 1.
SUM_TOLERANCE = 1e-2


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Voxel size per spatial axis (``(y, x)`` or ``(z, y, x)``); ``None`` means all 1."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.asarray(spacing, dtype=float).reshape(-1)
    if values.size != ndim:
        raise ValueError(
            f"Expected spacing with {ndim} values (one per spatial axis), got {tuple(values)}."
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"Expected positive, finite spacing values, got {tuple(values)}.")
    return tuple(float(v) for v in values)


def check_spatial_shape(shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    """Raise unless ``shape`` is 2D or 3D with no empty axis."""
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(
            f"Expected {what} over 2D (Y, X) or 3D (Z, Y, X) space, got spatial shape {shape}."
        )
    return tuple(int(s) for s in shape)


def image_channels(
    image: np.ndarray, spatial_shape: tuple[int, ...], channel_axis: int | None = None
) -> np.ndarray:
    """The image as ``(C, *spatial)`` (a view when possible).

    Parameters
    ----------
    image : array
        ``spatial_shape`` (greyscale), ``(*spatial_shape, C)`` (RGB or channels
        last) or ``(C, *spatial_shape)`` (channels first); ``channel_axis``
        names the channel axis explicitly.
    spatial_shape : tuple of int
        Shape of the probabilities or labels the image must match.
    channel_axis : int, optional
        Axis of ``image`` that holds channels.
    """
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"Expected a numeric image, got dtype {arr.dtype}.")
    if channel_axis is not None:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {arr.shape}."
            )
        arr = np.moveaxis(arr, channel_axis, 0)
        if arr.shape[1:] != spatial_shape:
            raise ValueError(
                f"Expected an image with spatial shape {spatial_shape} besides channel axis "
                f"{channel_axis}, got image shape {np.shape(image)}."
            )
        return arr
    if arr.shape == spatial_shape:
        return arr[np.newaxis]
    if arr.ndim == len(spatial_shape) + 1:
        if arr.shape[:-1] == spatial_shape:
            return np.moveaxis(arr, -1, 0)
        if arr.shape[1:] == spatial_shape:
            return arr
    raise ValueError(
        f"Expected an image of shape {spatial_shape} (greyscale), {(*spatial_shape, 'C')} "
        f"(RGB / channels last) or {('C', *spatial_shape)} (channels first) to match the "
        f"probabilities or labels, got image shape {arr.shape}."
    )


def check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Class probabilities as float32 ``(C, *spatial)`` with ``C >= 2``.

    A single channel ``(1, *spatial)`` is a foreground probability and becomes
    ``[1 - p, p]``. With two or more channels, every pixel's probabilities
    must sum to 1 (within ``SUM_TOLERANCE``); values must lie in ``[0, 1]``.
    """
    arr = np.asarray(probabilities)
    if arr.ndim not in (3, 4):
        raise ValueError(
            "Expected probabilities of shape (C, Y, X) or (C, Z, Y, X) (classes first), "
            f"got shape {arr.shape}. For a single foreground map pass probabilities[None]."
        )
    check_spatial_shape(arr.shape[1:], "probabilities")
    if arr.shape[0] < 1:
        raise ValueError(f"Expected at least one probability channel, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"Expected numeric probabilities, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("Expected finite probabilities, got NaN or infinite values.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"Expected probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(apply softmax or sigmoid to logits first)."
        )
    if arr.shape[0] == 1:
        return np.concatenate([1.0 - arr, arr], axis=0)
    total = arr.sum(axis=0)
    worst = float(np.abs(total - 1.0).max())
    if worst > SUM_TOLERANCE:
        raise ValueError(
            f"Expected class probabilities summing to 1 at every pixel (tolerance "
            f"{SUM_TOLERANCE}), got sums between {float(total.min()):.4g} and "
            f"{float(total.max()):.4g}; pass softmax output, or a single foreground channel."
        )
    return arr


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Integer labels ``(Y, X)`` or ``(Z, Y, X)`` with no negative values."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Expected integer labels, got dtype {arr.dtype}.")
    check_spatial_shape(arr.shape, "labels")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"Expected labels >= 0 (0 is background), got minimum {int(arr.min())}.")
    return arr


#: Ids up to this (or up to 4x the number of objects) index ``find_objects`` directly.
DIRECT_ID_LIMIT = 1 << 16


def object_regions(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """Every positive id of ``labels`` with its bounding box, in increasing id order.

    ``scipy.ndimage.find_objects`` makes one list entry per value up to the
    largest id; sparse ids (say ``3_000_000_000`` or ``2**40``) are first
    numbered ``1..n`` (``numpy.searchsorted`` over the sorted distinct ids), so
    memory follows the number of objects, never the largest id.

    Parameters
    ----------
    labels : int array, any number of axes
        0 (and negative values) is background.

    Returns
    -------
    list of (int, tuple of slice)
        The id as a Python int and its bounding box in the array's axis order.
    """
    values = np.unique(labels)
    values = values[values > 0]
    if values.size == 0:
        return []
    if int(values[-1]) <= max(4 * values.size, DIRECT_ID_LIMIT):
        boxes = ndi.find_objects(labels)
        return [(int(v), boxes[int(v) - 1]) for v in values]
    dense = np.zeros(labels.shape, dtype=np.intp)
    mask = labels > 0
    dense[mask] = np.searchsorted(values, labels[mask]) + 1
    boxes = ndi.find_objects(dense)
    return [(int(v), box) for v, box in zip(values, boxes)]
