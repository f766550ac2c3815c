"""Dice per plane along one axis, for plots, in one pass over the voxels."""

from __future__ import annotations

from typing import Any

import numpy as np

from .contingency import (
    array_chunks,
    check_label_pair,
    compact,
    read_slab,
    slab_ranges,
    slab_runs,
)


def per_slice(
    pred: Any,
    gt: Any,
    axis: int = 0,
    *,
    classes: Any = None,
    foreground: bool = False,
) -> dict[int, np.ndarray]:
    """Dice of every plane along ``axis``, per class.

    Parameters
    ----------
    pred, gt : array-like of integers, same shape ``(Z, Y, X)`` (or ``(Y, X)``)
        Label images; numpy, dask, zarr or any sliceable array, read slab by slab.
    axis : int
        Axis whose planes are scored (0: one value per z plane of a stack).
    classes : iterable of int, optional
        Classes to score; default every non-zero id present in either input.
    foreground : bool
        Score the foreground (any non-zero id) as a single class 1; use it for
        instance labels, where per-id Dice per plane means little.

    Returns
    -------
    dict
        ``{class_id: ndarray of float64, shape (shape[axis],)}``. A plane where
        the class is absent from both images has Dice NaN (0/0).
    """
    shape = check_label_pair(pred, gt)
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an axis of a {ndim}D array, got {axis}")
    axis %= ndim
    n_planes = shape[axis]
    chunks = array_chunks(pred) or array_chunks(gt)
    parts = []
    for start, stop in slab_ranges(shape, axis, chunks=chunks):
        slab_p = read_slab(pred, start, stop, axis)
        slab_g = read_slab(gt, start, stop, axis)
        if foreground:
            slab_p = (slab_p != 0).view(np.uint8)
            slab_g = (slab_g != 0).view(np.uint8)
        runs = slab_runs(slab_p, slab_g)
        plane_size = max(int(np.prod(slab_p.shape[1:], dtype=np.int64)), 1)
        plane = runs.start // plane_size + start
        parts.append(_reduce_triplets(plane, runs.pred, runs.gt, runs.length))
    planes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.intp)
    ids_p = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    ids_g = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
    counts = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)

    if classes is None:
        labels = sorted({int(v) for v in np.unique(ids_p)} | {int(v) for v in np.unique(ids_g)})
        labels = [v for v in labels if v != 0]
    else:
        labels = sorted({int(c) for c in np.atleast_1d(np.asarray(classes)).ravel()})
    out: dict[int, np.ndarray] = {}
    for label in labels:
        in_p = _is(ids_p, label)
        in_g = _is(ids_g, label)
        tp = np.bincount(planes[in_p & in_g], counts[in_p & in_g], minlength=n_planes)
        size_p = np.bincount(planes[in_p], counts[in_p], minlength=n_planes)
        size_g = np.bincount(planes[in_g], counts[in_g], minlength=n_planes)
        total = size_p + size_g
        with np.errstate(invalid="ignore", divide="ignore"):
            out[label] = np.where(total > 0, 2 * tp / np.where(total > 0, total, 1), np.nan)
    return out


def _is(ids: np.ndarray, label: int) -> np.ndarray:
    if ids.dtype.kind == "u" and label < 0:
        return np.zeros(ids.shape, dtype=bool)
    if ids.dtype.kind in "iu" and not np.iinfo(ids.dtype).min <= label <= np.iinfo(ids.dtype).max:
        return np.zeros(ids.shape, dtype=bool)
    return ids == label


def _reduce_triplets(plane, first, second, weights):
    """Sum ``weights`` over unique ``(plane, first, second)`` triplets."""
    up, ip = compact(first)
    ug, ig = compact(second)
    key = (plane.astype(np.int64) * len(up) + ip) * len(ug) + ig
    ukey, inverse = compact(key)
    sums = np.rint(np.bincount(inverse, weights=weights, minlength=len(ukey))).astype(np.int64)
    pair, g = np.divmod(ukey, len(ug))
    plane_of, p = np.divmod(pair, len(up))
    return plane_of.astype(np.intp), up[p], ug[g], sums
