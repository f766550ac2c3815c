"""Per-id bounding boxes gathered from the runs of the contingency pass.

Each run lies in one row, so its box is its leading coordinates plus the
column range ``[x0, x0 + length)``. Reducing runs per id (minimum of starts,
maximum of ends) gives the bounding box of every id of a label volume without
a second pass over the voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contingency import compact


@dataclass(frozen=True)
class Boxes:
    """Bounding boxes of ids: ``lo[i] <= index < hi[i]`` per axis for ``ids[i]``.

    Attributes
    ----------
    ids : ndarray, shape ``(K,)``
    lo, hi : ndarray of int64, shape ``(K, ndim)``
    """

    ids: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def box(self, label: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(lo, hi)`` of ``label``, or None when the id does not occur."""
        i = int(np.searchsorted(self.ids, label))  # ids are sorted and unique
        if i == len(self.ids) or self.ids[i] != label:
            return None
        return self.lo[i], self.hi[i]


def run_boxes(
    values: np.ndarray, start: np.ndarray, length: np.ndarray, slab_shape: tuple, offset: int
) -> Boxes:
    """Bounding boxes of every id in ``values`` from runs of one slab.

    Parameters
    ----------
    values : ndarray, shape ``(R,)``
        Id of each run.
    start, length : ndarray, shape ``(R,)``
        Flat start index inside the slab and run length (runs stay in one row).
    slab_shape : tuple of int
        Shape of the slab (axis 0 first).
    offset : int
        Index of the slab's first plane along axis 0 of the whole volume.
    """
    unique, inverse = compact(values)
    coords = [c.astype(np.int64, copy=False) for c in np.unravel_index(start, slab_shape)]
    coords[0] = coords[0] + offset
    ends = [c + 1 for c in coords[:-1]] + [coords[-1] + length]
    return Boxes(unique, *_reduce_boxes(len(unique), inverse, coords, ends))


def _reduce_boxes(n_ids: int, inverse: np.ndarray, starts: list, stops: list):
    """Per-axis minimum of ``starts`` and maximum of ``stops`` per id (1D ufunc.at is fast)."""
    ndim = len(starts)
    lo = np.full((ndim, n_ids), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((ndim, n_ids), -1, dtype=np.int64)
    for axis in range(ndim):
        np.minimum.at(lo[axis], inverse, starts[axis])
        np.maximum.at(hi[axis], inverse, stops[axis])
    return np.ascontiguousarray(lo.T), np.ascontiguousarray(hi.T)


def merge_boxes(parts: list[Boxes], ndim: int, dtype) -> Boxes:
    """Union of boxes of the same ids coming from several slabs."""
    if not parts:
        empty = np.zeros((0, ndim), dtype=np.int64)
        return Boxes(np.zeros(0, dtype=dtype), empty, empty.copy())
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p.ids for p in parts])
    unique, inverse = compact(ids)
    lo = np.concatenate([p.lo for p in parts])
    hi = np.concatenate([p.hi for p in parts])
    return Boxes(unique, *_reduce_boxes(len(unique), inverse, list(lo.T), list(hi.T)))
