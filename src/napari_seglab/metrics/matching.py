"""Instance metrics: one-to-one object matching by IoU, detection scores and panoptic quality.

Matching
--------
A predicted object and a ground-truth object *may* match when their IoU is at
least the threshold. The matching is one-to-one and maximises the number of
matched pairs, then their total IoU.

* For thresholds above 0.5 no conflicts exist: two disjoint objects cannot
  both overlap a third by IoU > 0.5, so every candidate pair is a match and no
  solver runs. At exactly 0.5 ties are possible (an object split into two
  equal halves); the code checks for conflicts instead of assuming.
* When candidates conflict (thresholds <= 0.5), each connected group of
  conflicting candidates is solved with ``scipy.optimize.linear_sum_assignment``
  on its own small matrix, with weight ``1 + IoU / (k + 1)`` for a candidate
  and 0 otherwise (``k`` = size of the smaller side), which maximises the number
  of matches first and the summed IoU second.

All of it runs on the sparse list of overlapping pairs from the contingency
table, never on a dense ``N x M`` matrix of the whole volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .contingency import ContingencyTable, compact, contingency_table
from .overlap import ratio

#: IoU thresholds reported per threshold by default: 0.50, 0.55, ..., 0.95.
DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Score keys of :func:`instances` (also of each ``per_threshold`` entry), in table order.
INSTANCE_KEYS = (
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "mean_matched_iou",
    "pq",
    "sq",
    "rq",
)


@dataclass(frozen=True)
class Overlaps:
    """Objects of both label images and their overlapping pairs.

    Attributes
    ----------
    gt_ids, pred_ids : ndarray, shapes ``(G,)`` and ``(P,)``
        Non-zero ids present, ascending.
    gt_sizes, pred_sizes : ndarray of int64
        Voxel count of each object.
    pair_gt, pair_pred : ndarray of intp, shape ``(K,)``
        Indices into ``gt_ids`` / ``pred_ids`` of every overlapping pair.
    pair_iou : ndarray of float64, shape ``(K,)``
        IoU of each pair.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_iou: np.ndarray

    @classmethod
    def from_table(cls, table: ContingencyTable) -> Overlaps:
        """Object sizes and pairwise IoU of the non-background ids of a table."""
        gt_ids, gt_sizes = _nonzero(*table.gt_sizes())
        pred_ids, pred_sizes = _nonzero(*table.pred_sizes())
        both = (table.gt_ids != 0) & (table.pred_ids != 0)
        pair_gt = np.searchsorted(gt_ids, table.gt_ids[both])
        pair_pred = np.searchsorted(pred_ids, table.pred_ids[both])
        inter = table.counts[both].astype(np.float64)
        union = gt_sizes[pair_gt] + pred_sizes[pair_pred] - inter
        return cls(gt_ids, pred_ids, gt_sizes, pred_sizes, pair_gt, pair_pred, inter / union)


@dataclass(frozen=True)
class Matching:
    """Matched pairs as indices into :class:`Overlaps` ids, with their IoU."""

    gt: np.ndarray
    pred: np.ndarray
    iou: np.ndarray


def match(overlaps: Overlaps, threshold: float) -> Matching:
    """One-to-one matching of objects with IoU >= ``threshold`` (see module docstring)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"iou threshold: expected a number in (0, 1], got {threshold!r}")
    keep = overlaps.pair_iou >= threshold
    g, p, w = overlaps.pair_gt[keep], overlaps.pair_pred[keep], overlaps.pair_iou[keep]
    if _unique(g) and _unique(p):
        return Matching(g, p, w)
    return _solve_conflicts(g, p, w)


def _unique(indices: np.ndarray) -> bool:
    return indices.size == 0 or np.bincount(indices).max() <= 1


def _solve_conflicts(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> Matching:
    """Optimal assignment within each connected group of candidate pairs."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ug, gi = compact(g)
    up, pi = compact(p)
    n = len(ug) + len(up)
    graph = coo_matrix((np.ones(len(g)), (gi, pi + len(ug))), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    pair_component = component[gi]
    order = np.argsort(pair_component, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_component[order])) + 1
    chosen = []
    for members in np.split(order, bounds):
        if members.size == 1:
            chosen.append(members)
            continue
        _, r = np.unique(gi[members], return_inverse=True)
        _, c = np.unique(pi[members], return_inverse=True)
        k = min(r.max(), c.max()) + 1
        weight = np.zeros((r.max() + 1, c.max() + 1))
        weight[r, c] = 1.0 + w[members] / (k + 1)
        candidate = np.full(weight.shape, -1, dtype=np.intp)
        candidate[r, c] = members
        rows, cols = linear_sum_assignment(weight, maximize=True)
        picked = candidate[rows, cols]
        chosen.append(picked[picked >= 0])
    picked = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.intp)
    return Matching(g[picked], p[picked], w[picked])


def scores(matching: Matching, n_gt: int, n_pred: int) -> dict[str, float]:
    """Detection and panoptic scores of a matching.

    ``precision = TP/(TP+FP)``, ``recall = TP/(TP+FN)``, ``f1 = 2TP/(2TP+FP+FN)``,
    ``accuracy = TP/(TP+FP+FN)`` (Data Science Bowl 2018), ``sq = mean_matched_iou``
    (mean IoU of matched pairs), ``rq = f1``, ``pq = sum(IoU)/(TP + FP/2 + FN/2)``.
    A ratio with denominator 0 is NaN.
    """
    tp = len(matching.gt)
    fp = n_pred - tp
    fn = n_gt - tp
    iou_sum = float(matching.iou.sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp, tp + fp + fn),
        "mean_matched_iou": ratio(iou_sum, tp),
        "pq": ratio(iou_sum, tp + 0.5 * fp + 0.5 * fn),
        "sq": ratio(iou_sum, tp),
        "rq": ratio(tp, tp + 0.5 * fp + 0.5 * fn),
    }


def object_table(overlaps: Overlaps, matching: Matching) -> dict[str, np.ndarray]:
    """Per-object rows: every ground-truth object, then every unmatched prediction.

    Columns: ``gt_id`` (0 for an unmatched prediction), ``pred_id`` (the matched
    prediction, 0 when unmatched), ``iou`` (IoU of the match; for an unmatched
    object the best IoU it has with any object of the other image, 0 if it
    overlaps none) and ``matched`` (bool).
    """
    n_gt, n_pred = len(overlaps.gt_ids), len(overlaps.pred_ids)
    best_gt = np.zeros(n_gt)
    best_pred = np.zeros(n_pred)
    np.maximum.at(best_gt, overlaps.pair_gt, overlaps.pair_iou)
    np.maximum.at(best_pred, overlaps.pair_pred, overlaps.pair_iou)
    gt_partner = np.zeros(n_gt, dtype=overlaps.pred_ids.dtype)
    gt_partner[matching.gt] = overlaps.pred_ids[matching.pred]
    gt_iou = best_gt.copy()
    gt_iou[matching.gt] = matching.iou
    gt_matched = np.zeros(n_gt, dtype=bool)
    gt_matched[matching.gt] = True
    pred_matched = np.zeros(n_pred, dtype=bool)
    pred_matched[matching.pred] = True
    lone = ~pred_matched
    gt_dtype = overlaps.gt_ids.dtype
    return {
        "gt_id": np.concatenate([overlaps.gt_ids, np.zeros(lone.sum(), dtype=gt_dtype)]),
        "pred_id": np.concatenate([gt_partner, overlaps.pred_ids[lone]]),
        "iou": np.concatenate([gt_iou, best_pred[lone]]),
        "matched": np.concatenate([gt_matched, np.zeros(lone.sum(), dtype=bool)]),
    }


def instances(
    pred: Any,
    gt: Any,
    *,
    iou_threshold: float = 0.5,
    thresholds: Any = None,
) -> dict[str, Any]:
    """Instance segmentation scores from one-to-one matching of objects by IoU.

    Parameters
    ----------
    pred, gt : array-like of integers, same shape ``(Y, X)`` or ``(Z, Y, X)``
        Instance label images (0 background, each object one id; ids need not
        be consecutive, any integer dtype). Numpy, dask, zarr or any array
        supporting slicing along axis 0; read slab by slab.
    iou_threshold : float
        IoU a pair needs to count as a match, in ``(0, 1]``.
    thresholds : sequence of float, optional
        Thresholds for the ``per_threshold`` list; default
        :data:`DEFAULT_THRESHOLDS` (0.50, 0.55, ..., 0.95); ``()`` for none.

    Returns
    -------
    dict
        The keys of :data:`INSTANCE_KEYS` at ``iou_threshold``, plus
        ``iou_threshold``, ``n_gt``, ``n_pred``, ``per_threshold`` (a list of
        dicts with ``threshold`` and the same score keys) and ``objects`` (the
        per-object table of :func:`object_table` as a dict of column arrays).
    """
    threshold = float(iou_threshold)
    if not 0 < threshold <= 1:
        raise ValueError(f"iou_threshold: expected a number in (0, 1], got {iou_threshold!r}")
    levels = DEFAULT_THRESHOLDS if thresholds is None else tuple(float(t) for t in thresholds)
    overlaps = Overlaps.from_table(contingency_table(pred, gt))
    n_gt, n_pred = len(overlaps.gt_ids), len(overlaps.pred_ids)
    matching = match(overlaps, threshold)
    result: dict[str, Any] = {"iou_threshold": threshold, "n_gt": n_gt, "n_pred": n_pred}
    result.update(scores(matching, n_gt, n_pred))
    result["per_threshold"] = [
        {"threshold": level, **scores(match(overlaps, level), n_gt, n_pred)} for level in levels
    ]
    result["objects"] = object_table(overlaps, matching)
    return result


def _nonzero(ids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids != 0
    return ids[keep], sizes[keep]
