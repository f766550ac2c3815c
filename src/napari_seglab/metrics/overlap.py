"""Semantic (per-class) metrics: Dice, IoU, precision, recall, volumes and surface metrics.

Everything comes from one pass over the voxels (:mod:`.contingency`), which
also records the bounding box of every class; surface metrics then read only
the bounding box of each class (:mod:`.surface`).

Conventions
-----------
* A ratio whose denominator is 0 is NaN. So a class absent from both
  prediction and ground truth has Dice, IoU, precision and recall NaN, and a
  class absent from the prediction only has precision NaN (no predicted voxel)
  but Dice, IoU and recall 0.
* Surface metrics: both masks empty gives NaN; exactly one empty gives
  ``hd95 = assd = inf`` and ``surface_dice = 0``.
* ``ignore_label``: voxels where the ground truth equals it count for nothing
  (neither prediction nor ground truth there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..jobs import CancelCheck, CancelLike
from .boxes import Boxes, merge_boxes, run_boxes
from .classes import apply_class_map
from .contingency import (
    ContingencyTable,
    PairAccumulator,
    array_chunks,
    check_label_pair,
    read_slab,
    reduce_pairs,
    slab_ranges,
    slab_runs,
)
from .surface import surface_scores

#: Keys of the per-class dictionaries returned by :func:`semantic`, in table order.
SEMANTIC_KEYS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "assd",
    "surface_dice",
    "volume_gt",
    "volume_pred",
)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def check_spacing(spacing: Any, ndim: int) -> tuple[float, ...] | None:
    """Validate a spacing: ``ndim`` positive finite numbers (axis order of the array)."""
    if spacing is None:
        return None
    values = np.atleast_1d(np.asarray(spacing, dtype=float))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"spacing: expected {ndim} positive numbers (one per axis), got {spacing!r}"
        )
    return tuple(float(v) for v in values)


def scan(pred: Any, gt: Any, boxes: bool = True) -> tuple[ContingencyTable, Boxes, Boxes]:
    """One pass over two label arrays: contingency table and per-id bounding boxes.

    Returns ``(table, pred_boxes, gt_boxes)``; see
    :func:`.contingency.contingency_table` for the table and accepted inputs.
    With ``boxes=False`` the boxes are left empty (faster).
    """
    shape = check_label_pair(pred, gt)
    chunks = array_chunks(pred) or array_chunks(gt)
    pairs = PairAccumulator()
    pred_parts, gt_parts = [], []
    for start, stop in slab_ranges(shape, 0, chunks=chunks):
        slab_p = read_slab(pred, start, stop)
        runs = slab_runs(slab_p, read_slab(gt, start, stop))
        pairs.add(*reduce_pairs(runs.pred, runs.gt, runs.length))
        if not boxes:
            continue
        pred_parts.append(run_boxes(runs.pred, runs.start, runs.length, slab_p.shape, start))
        gt_parts.append(run_boxes(runs.gt, runs.start, runs.length, slab_p.shape, start))
    table = pairs.table(pred, gt, shape)
    ndim = len(shape)
    return (
        table,
        merge_boxes(pred_parts, ndim, table.pred_ids.dtype),
        merge_boxes(gt_parts, ndim, table.gt_ids.dtype),
    )


def semantic(
    pred: Any,
    gt: Any,
    *,
    classes: Any = None,
    spacing: Any = None,
    ignore_label: int | None = None,
    tolerance: float = 1.0,
    surface: bool = True,
    foreground: bool = False,
    class_map: Mapping[int, int] | None = None,
    cancel: CancelLike = None,
) -> dict[int, dict[str, float]]:
    """Per-class overlap and surface metrics of a semantic segmentation.

    Parameters
    ----------
    pred, gt : array-like of integers, same shape ``(Y, X)`` or ``(Z, Y, X)``
        Class-id images (0 is background). Numpy, dask, zarr or any array
        supporting slicing along axis 0; chunked inputs are read slab by slab.
    classes : iterable of int, optional
        Classes to report. Default: every non-zero id present in either input
        (except ``ignore_label``). Include 0 to get background scores.
    spacing : sequence of float, optional
        Voxel size per axis in the array's axis order (``(z, y, x)`` in 3D).
        Distances and volumes are then in these physical units; without it
        they are in voxels.
    ignore_label : int, optional
        Ground-truth id marking voxels to leave out of every metric.
    tolerance : float
        Tolerance of the surface Dice, in the units of ``spacing``.
    surface : bool
        Compute ``hd95``, ``assd`` and ``surface_dice`` (NaN when False).
    foreground : bool
        Score foreground vs background: every non-zero id is class 1 on both
        sides (the ground truth's ``ignore_label`` is still left out).
    class_map : dict of int to int, optional
        ``{prediction class: ground-truth class}``: prediction ids renamed
        before scoring (``{1: 1, 2: 1}`` merges classes 1 and 2); ids not in
        it keep their id. See :mod:`.classes`.
    cancel : threading.Event or callable, optional
        Checked before each class's surface metrics (the slow part),
        through :class:`~napari_seglab.jobs.CancelCheck`.

    Returns
    -------
    dict
        ``{class_id: {"dice", "iou", "precision", "recall", "hd95", "assd",
        "surface_dice", "volume_gt", "volume_pred"}}`` with float values, in
        ascending class order. See :mod:`.overlap` for empty-class conventions.

    Raises
    ------
    napari_seglab.jobs.JobCancelled
        When ``cancel`` was set; nothing is returned.
    """
    pred, gt = apply_class_map(
        pred, gt, foreground=foreground, class_map=class_map, ignore_label=ignore_label
    )
    check = CancelCheck(cancel)
    table, pred_boxes, gt_boxes = scan(pred, gt, boxes=surface)
    ndim = len(table.shape)
    spacing = check_spacing(spacing, ndim)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance: expected a finite number >= 0, got {tolerance!r}")
    if ignore_label is not None:
        table = table.without_gt(ignore_label)
    class_ids = _class_ids(table, classes, ignore_label)
    voxel_volume = float(np.prod(spacing)) if spacing is not None else 1.0

    pred_ids, pred_sizes = table.pred_sizes()
    gt_ids, gt_sizes = table.gt_sizes()
    same = _equal_ids(table.pred_ids, table.gt_ids)
    diag_ids, diag_counts = table.pred_ids[same], table.counts[same]

    results: dict[int, dict[str, float]] = {}
    for label in class_ids:
        n_pred = _lookup(pred_ids, pred_sizes, label)
        n_gt = _lookup(gt_ids, gt_sizes, label)
        tp = _lookup(diag_ids, diag_counts, label)
        scores = {
            "dice": ratio(2 * tp, n_pred + n_gt),
            "iou": ratio(tp, n_pred + n_gt - tp),
            "precision": ratio(tp, n_pred),
            "recall": ratio(tp, n_gt),
            "hd95": float("nan"),
            "assd": float("nan"),
            "surface_dice": float("nan"),
            "volume_gt": n_gt * voxel_volume,
            "volume_pred": n_pred * voxel_volume,
        }
        if surface:
            check.raise_if_set("Evaluation")
            box = _union_box(pred_boxes, gt_boxes, label)
            if box is None:
                pred_mask = gt_mask = np.zeros((1,) * ndim, dtype=bool)
            else:
                pred_mask, gt_mask = _class_masks(pred, gt, box, label, ignore_label)
            found = surface_scores(pred_mask, gt_mask, spacing, tolerance)
            scores.update(hd95=found.hd95, assd=found.assd, surface_dice=found.surface_dice)
        results[label] = scores
    return results


def mean_dice(
    pred: Any, gt: Any, *, classes: Any = None, ignore_label: int | None = None
) -> float:
    """Mean Dice over classes, leaving out classes absent from both inputs.

    Parameters
    ----------
    pred, gt : array-like of integers or bools, same shape
        As for :func:`semantic` (bool masks count ``True`` as class 1).
    classes : iterable of int, optional
        Classes to average; default every non-zero id present (except ``ignore_label``).
    ignore_label : int, optional
        Ground-truth id of voxels that count for nothing (unannotated).

    Returns
    -------
    float
        NaN when every class is absent from both inputs.
    """
    scores = semantic(pred, gt, classes=classes, ignore_label=ignore_label, surface=False)
    values = [s["dice"] for s in scores.values() if not np.isnan(s["dice"])]
    return float(np.mean(values)) if values else float("nan")


def _class_ids(table: ContingencyTable, classes: Any, ignore_label: int | None) -> list[int]:
    if classes is not None:
        wanted = [int(c) for c in np.atleast_1d(np.asarray(classes)).ravel()]
        return sorted(dict.fromkeys(wanted))
    present = {int(v) for v in np.unique(table.pred_ids)} | {
        int(v) for v in np.unique(table.gt_ids)
    }
    present.discard(0)
    if ignore_label is not None:
        present.discard(int(ignore_label))
    return sorted(present)


def _equal_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise ``a == b`` that stays exact for mixed signed/unsigned 64-bit ids."""
    if a.dtype.kind != b.dtype.kind and np.dtype(np.uint64) in (a.dtype, b.dtype):
        signed = a if a.dtype.kind == "i" else b
        unsigned = b if a.dtype.kind == "i" else a
        nonneg = signed >= 0
        return nonneg & (unsigned == signed.astype(np.uint64))
    return a == b


def _lookup(ids: np.ndarray, values: np.ndarray, label: int) -> int:
    """``values`` at ``label`` in the sorted unique ``ids``, 0 when absent."""
    if not _representable(label, ids.dtype):
        return 0
    i = int(np.searchsorted(ids, label))
    return int(values[i]) if i < len(ids) and ids[i] == label else 0


def _representable(label: int, dtype: np.dtype) -> bool:
    if np.dtype(dtype) == bool:
        return label in (0, 1)
    info = np.iinfo(dtype)
    return info.min <= label <= info.max


def _union_box(pred_boxes: Boxes, gt_boxes: Boxes, label: int):
    found = [b.box(label) for b in (pred_boxes, gt_boxes) if _representable(label, b.ids.dtype)]
    found = [f for f in found if f is not None]
    if not found:
        return None
    lo = np.min([f[0] for f in found], axis=0)
    hi = np.max([f[1] for f in found], axis=0)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _class_masks(pred: Any, gt: Any, box: tuple, label: int, ignore_label: int | None):
    pred_crop = np.asarray(pred[box])
    gt_crop = np.asarray(gt[box])
    pred_mask = pred_crop == label if _representable(label, pred_crop.dtype) else None
    gt_mask = gt_crop == label if _representable(label, gt_crop.dtype) else None
    if pred_mask is None:
        pred_mask = np.zeros(pred_crop.shape, dtype=bool)
    if gt_mask is None:
        gt_mask = np.zeros(gt_crop.shape, dtype=bool)
    if ignore_label is not None and _representable(ignore_label, gt_crop.dtype):
        valid = gt_crop != ignore_label
        pred_mask &= valid
        gt_mask &= valid
    return pred_mask, gt_mask
