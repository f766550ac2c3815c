"""The part of a large (lazy) stack that training reads: annotated voxels plus a margin.

Training samples patches centred on annotated voxels, so with an ignore label
(unannotated voxels) only the box around the annotated ones, grown by half a
patch, ever reaches the network. :func:`annotated_box` finds that box reading
the labels one slab at a time; the caller then reads only that box of the
image and the labels (e.g. from a dask or zarr layer of a 2 GB stack).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["annotated_box"]


def annotated_box(
    labels: Any,
    ignore_label: int,
    margin: Sequence[int],
    *,
    slab_elements: int = 2**24,
) -> tuple[slice, ...]:
    """Bounding box of the voxels whose label is not ``ignore_label``, grown by ``margin``.

    Parameters
    ----------
    labels : array-like ``(*spatial)``
        Integer labels; numpy, zarr, dask or memmap (read a slab of axis 0 at a time).
    ignore_label : int
        Value of unannotated voxels.
    margin : sequence of int
        Voxels added on each side per axis (clipped to the array).
    slab_elements : int
        About how many voxels are read at a time.

    Returns
    -------
    tuple of slice
        One slice per axis.

    Raises
    ------
    ValueError
        When no voxel is annotated (every voxel is ``ignore_label``).
    """
    shape = tuple(int(n) for n in labels.shape)
    if len(margin) != len(shape):
        raise ValueError(f"Expected a margin per axis of {shape}, got {tuple(margin)}.")
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, slab_elements // row)
    low = np.full(len(shape), np.iinfo(np.int64).max)
    high = np.full(len(shape), -1)
    for start in range(0, shape[0], step):
        slab = np.asarray(labels[start : start + step])
        found = np.nonzero(slab != ignore_label)
        if not found[0].size:
            continue
        firsts = np.array([axis.min() for axis in found])
        lasts = np.array([axis.max() for axis in found])
        firsts[0] += start
        lasts[0] += start
        low, high = np.minimum(low, firsts), np.maximum(high, lasts)
    if high[0] < 0:
        raise ValueError(
            f"The labels hold no annotated voxels: every voxel is the ignore label {ignore_label}."
        )
    return tuple(
        slice(max(int(lo) - int(m), 0), min(int(hi) + 1 + int(m), n))
        for lo, hi, m, n in zip(low, high, margin, shape)
    )
