"""Panoptic quality (PQ, SQ, RQ) per class, with "things" and "stuff" separated.

Definitions follow Kirillov et al., *Panoptic Segmentation* (CVPR 2019) and
the reference implementation of the COCO panoptic challenge:

* A **segment** is the set of voxels of one class and, for a *thing* class,
  one instance id. A *stuff* class forms one segment per image (instance ids
  are ignored there).
* A predicted and a ground-truth segment of the same class **match** when
  their IoU is above ``iou_threshold`` (strictly, default 0.5). Above 0.5 a
  segment matches at most one other, so no assignment is solved.
* **Void**: ground-truth voxels whose class is ``ignore_label``. The IoU of a
  pair leaves out the predicted segment's void voxels (its union is
  ``|P| + |G| - |P ∩ G| - |P ∩ void|``). Ground-truth voxels of a thing class
  with instance id 0 are a *crowd* region of that class (COCO ``iscrowd``):
  never a segment to find.
* An unmatched ground-truth segment is a false negative. An unmatched
  predicted segment is a false positive unless more than half of it lies on
  void or on a crowd region of its own class.
* Per class: ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``,
  ``SQ = sum(IoU) / TP`` (0 when TP = 0 < FP + FN), ``RQ = TP / (TP + FP/2 +
  FN/2)``, so ``PQ = SQ * RQ``. A class with no segment on either side has
  NaN scores and is left out of the averages.
* Averages ``all``, ``things`` and ``stuff`` are plain means over the classes
  present (COCO's ``PQ``, ``PQ^Th``, ``PQ^St``); NaN when none is.

Class 0 is background: no segment on either side, but not void (a predicted
segment lying on ground-truth background is a false positive). Pass
``ignore_label=0`` for COCO's convention where unlabelled voxels are void.
Predicted voxels of a thing class with instance id 0 form no segment.

The inputs are read slab by slab along axis 0 and reduced to runs of constant
``(class, instance)`` on both sides, as :mod:`.contingency` does for two
images; no dense matrix over all segments is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .contingency import array_chunks, check_label_pair, compact, read_slab, slab_ranges
from .overlap import ratio

#: Score keys of each class entry of :func:`panoptic`, in table order.
PANOPTIC_KEYS = ("pq", "sq", "rq", "tp", "fp", "fn", "iou_sum")
#: Keys of each average (``all``, ``things``, ``stuff``): the means and the number of classes.
AVERAGE_KEYS = ("pq", "sq", "rq", "n")


def panoptic(
    pred_class: Any,
    pred_instance: Any,
    gt_class: Any,
    gt_instance: Any,
    *,
    things: Iterable[int],
    stuff: Iterable[int] | None = None,
    iou_threshold: float = 0.5,
    ignore_label: int | Iterable[int] | None = None,
    per_plane: bool = False,
) -> dict[str, Any]:
    """Panoptic quality of a prediction, per class and averaged (see module docstring).

    Parameters
    ----------
    pred_class, pred_instance, gt_class, gt_instance : array-like of integers
        Same shape, ``(Y, X)`` or ``(Z, Y, X)``: the class id and the instance
        id of every voxel, predicted and ground truth. Numpy, dask, zarr or any
        array sliceable along axis 0 (read slab by slab). Instance ids only
        matter for thing classes and need not be consecutive.
    things : iterable of int
        Classes whose instances are counted objects.
    stuff : iterable of int, optional
        Classes scored as one segment per image. Default: every non-zero class
        present on either side that is neither a thing nor ``ignore_label``.
        Classes in neither list are not scored (their voxels count as
        background).
    iou_threshold : float
        A pair matches when its IoU is above this, in ``[0.5, 1)`` (below 0.5
        matches would not be unique).
    ignore_label : int or iterable of int, optional
        Ground-truth class id(s) marking void voxels.
    per_plane : bool
        3D only: each plane along axis 0 is a separate image (its own stuff
        segments and instance ids); counts are summed over planes as COCO sums
        over images.

    Returns
    -------
    dict
        ``pq``, ``sq``, ``rq`` (averages over all classes present);
        ``summary``: ``{"all" | "things" | "stuff": {pq, sq, rq, n}}``;
        ``classes``: ``{class id: {"kind": "thing" | "stuff", pq, sq, rq, tp,
        fp, fn, iou_sum}}`` for every thing and stuff class, ascending;
        ``things``, ``stuff``, ``ignore_label`` (tuples of ids),
        ``iou_threshold``, ``per_plane``, ``n_gt``, ``n_pred`` (segments).

    Raises
    ------
    ValueError
        Arrays of different shapes or non-integer dtypes, a threshold out of
        range, a class both thing and stuff (or void), ``per_plane`` on 2D.
    """
    threshold = float(iou_threshold)
    if not 0.5 <= threshold < 1:
        raise ValueError(
            f"iou_threshold: expected a number in [0.5, 1) (matches above 0.5 IoU are unique), "
            f"got {iou_threshold!r}"
        )
    shape = check_label_pair(pred_class, gt_class)
    check_label_pair(pred_instance, gt_instance)
    check_label_pair(pred_class, pred_instance)
    if per_plane and len(shape) != 3:
        raise ValueError(f"per_plane: expected a 3D (Z, Y, X) input, got shape {shape}")
    thing_ids = _ids(things, "things")
    void_ids = _ids(() if ignore_label is None else ignore_label, "ignore_label")
    if thing_ids & void_ids:
        raise ValueError(
            f"ignore_label {sorted(thing_ids & void_ids)} is also in things: a void class "
            "cannot be scored"
        )
    rows = _scan(pred_class, pred_instance, gt_class, gt_instance, thing_ids, per_plane)
    _, pc, _, gc, _, _ = rows
    if stuff is None:
        present = set(np.unique(np.concatenate([pc, gc])).tolist())
        stuff_ids = present - thing_ids - void_ids - {0}
    else:
        stuff_ids = _ids(stuff, "stuff")
        for name, other in (("things", thing_ids), ("ignore_label", void_ids)):
            if stuff_ids & other:
                raise ValueError(
                    f"stuff and {name} share classes {sorted(stuff_ids & other)}: a class is "
                    "either a thing, a stuff class or void"
                )
    counts = _count(rows, thing_ids, stuff_ids, void_ids, threshold)
    classes = {}
    for label in sorted(thing_ids | stuff_ids):
        tp, fp, fn, iou_sum = counts.get(label, (0, 0, 0, 0.0))
        classes[label] = {
            "kind": "thing" if label in thing_ids else "stuff",
            **_class_scores(tp, fp, fn, iou_sum),
        }
    summary = {
        "all": _average(classes.values()),
        "things": _average(s for s in classes.values() if s["kind"] == "thing"),
        "stuff": _average(s for s in classes.values() if s["kind"] == "stuff"),
    }
    return {
        "pq": summary["all"]["pq"],
        "sq": summary["all"]["sq"],
        "rq": summary["all"]["rq"],
        "summary": summary,
        "classes": classes,
        "things": tuple(sorted(thing_ids)),
        "stuff": tuple(sorted(stuff_ids)),
        "ignore_label": tuple(sorted(void_ids)),
        "iou_threshold": threshold,
        "per_plane": bool(per_plane),
        "n_gt": int(sum(s["tp"] + s["fn"] for s in classes.values())),
        "n_pred": int(sum(s["tp"] + s["fp"] for s in classes.values())),
    }


def is_panoptic_result(result: Any) -> bool:
    """True for a result of :func:`panoptic`."""
    return isinstance(result, dict) and "classes" in result and "summary" in result


def labels_to_panoptic(
    labels: Any, classes: Mapping[int, int], *, default: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split one instance Labels image whose objects carry a class into class and instance images.

    Parameters
    ----------
    labels : array-like of integers, ``(Y, X)`` or ``(Z, Y, X)``
        Object ids (0 background). Not modified.
    classes : mapping of int to int
        Class id of each object id (e.g. a Labels layer's ``class`` feature).
    default : int, optional
        Class of objects missing from ``classes``; by default they are an error.

    Returns
    -------
    class_image, instance_image : ndarray
        Same shape as ``labels``; ``instance_image`` is a copy of ``labels``,
        ``class_image`` (int32) holds each object's class, 0 on background.

    Raises
    ------
    ValueError
        Objects without a class (listing some) when ``default`` is None.
    """
    instance = np.array(labels, copy=True)
    if instance.dtype.kind not in "biu":
        raise ValueError(f"labels: expected integer object ids, got dtype {instance.dtype}")
    ids, inverse = compact(instance.reshape(-1))
    lookup = np.zeros(len(ids), dtype=np.int32)
    missing = []
    for index, object_id in enumerate(ids.tolist()):
        if object_id == 0:
            continue
        if object_id in classes:
            lookup[index] = int(classes[object_id])
        elif default is None:
            missing.append(object_id)
        else:
            lookup[index] = int(default)
    if missing:
        shown = ", ".join(str(i) for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"{len(missing)} object(s) have no class: ids {shown}. Expected a class for every "
            "non-zero id (or pass default=)."
        )
    return lookup[inverse].reshape(instance.shape), instance


def classes_from_features(features: Any, column: str = "class") -> dict[int, int]:
    """``{object id: class}`` from a Labels layer's ``features`` table.

    Parameters
    ----------
    features : pandas.DataFrame or mapping of column name to sequence
        With an ``index`` column (object ids; without one, the row number is
        the id, as napari numbers rows) and ``column``.
    column : str
        The class column (the SAM session writes ``class``).

    Raises
    ------
    ValueError
        When ``column`` is missing (naming the columns present).
    """
    columns = list(features.keys())
    if column not in columns:
        raise ValueError(
            f"features: expected a {column!r} column (class id per object), got columns {columns}"
        )
    classes = [int(c) for c in np.asarray(features[column]).tolist()]
    if "index" in columns:
        ids = [int(i) for i in np.asarray(features["index"]).tolist()]
    else:
        ids = list(range(len(classes)))
    return {i: c for i, c in zip(ids, classes) if i != 0}


def _ids(values: Any, name: str) -> set[int]:
    if isinstance(values, (int, np.integer)):
        values = (values,)
    try:
        return {int(v) for v in values}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected class ids (integers), got {values!r}") from exc


def _scan(pc_arr, pi_arr, gc_arr, gi_arr, thing_ids, per_plane):
    """Unique ``(plane, pred class, pred id, gt class, gt id)`` rows with voxel counts."""
    shape = tuple(int(s) for s in pc_arr.shape)
    arrays = (pc_arr, pi_arr, gc_arr, gi_arr)
    chunks = next((c for c in map(array_chunks, arrays) if c), None)
    plane_voxels = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    things = np.asarray(sorted(thing_ids), dtype=np.int64)
    parts = []
    for start, stop in slab_ranges(shape, 0, chunks=chunks):
        pc, pi, gc, gi = (read_slab(a, start, stop).reshape(-1) for a in arrays)
        pi = np.where(np.isin(pc, things), pi, 0)
        gi = np.where(np.isin(gc, things), gi, 0)
        n = pc.size
        if n == 0:
            continue
        change = np.zeros(n, dtype=bool)
        for column in (pc, pi, gc, gi):
            change[1:] |= column[1:] != column[:-1]
        change[:: shape[-1]] = True
        run = np.flatnonzero(change)
        length = np.diff(run, append=n)
        plane = start + run // plane_voxels if per_plane else np.zeros(len(run), np.int64)
        parts.append(_unique_rows([plane, pc[run], pi[run], gc[run], gi[run]], length))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, empty, empty
    columns = [np.concatenate(c) for c in zip(*(p[0] for p in parts))]
    unique, counts = _unique_rows(columns, np.concatenate([p[1] for p in parts]))
    return (*unique, counts)


def _unique_rows(columns: list[np.ndarray], weights: np.ndarray):
    """Unique rows of equal-length ``columns`` and their summed integer ``weights``."""
    key = np.zeros(len(weights), dtype=np.int64)
    for column in columns:
        values, index = compact(column)
        _, key = compact(key * len(values) + index)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(first))
    return [c[first] for c in columns], np.rint(sums).astype(np.int64)


def _count(rows, thing_ids, stuff_ids, void_ids, threshold):
    """``{class: (tp, fp, fn, iou_sum)}`` from the scanned rows."""
    plane, pc, pi, gc, gi, count = rows
    things = np.asarray(sorted(thing_ids), dtype=np.int64)
    scored = np.asarray(sorted(thing_ids | stuff_ids), dtype=np.int64)
    pred_thing = np.isin(pc, things)
    gt_thing = np.isin(gc, things)
    pred_ok = np.isin(pc, scored) & ~(pred_thing & (pi == 0))
    gt_scored = np.isin(gc, scored)
    crowd = gt_scored & gt_thing & (gi == 0)
    gt_ok = gt_scored & ~crowd
    void = np.isin(gc, np.asarray(sorted(void_ids), dtype=np.int64))
    pred_seg = _segments(plane, pc, pi, pred_ok)
    gt_seg = _segments(plane, gc, gi, gt_ok)
    n_pred, n_gt = int(pred_seg.max(initial=-1)) + 1, int(gt_seg.max(initial=-1)) + 1
    pred_area = np.bincount(pred_seg[pred_ok], count[pred_ok], n_pred)
    gt_area = np.bincount(gt_seg[gt_ok], count[gt_ok], n_gt)
    on_void = pred_ok & void
    pred_void = np.bincount(pred_seg[on_void], count[on_void], n_pred)
    on_crowd = pred_ok & crowd & (pc == gc)
    pred_crowd = np.bincount(pred_seg[on_crowd], count[on_crowd], n_pred)
    pair = pred_ok & gt_ok & (pc == gc)
    ps, gs, inter = pred_seg[pair], gt_seg[pair], count[pair].astype(np.float64)
    iou = inter / (pred_area[ps] + gt_area[gs] - inter - pred_void[ps])
    hit = iou > threshold
    if len(np.unique(ps[hit])) != hit.sum() or len(np.unique(gs[hit])) != hit.sum():
        raise RuntimeError("panoptic matching: a segment matched twice above IoU 0.5 (a bug)")
    pred_class = np.zeros(n_pred, dtype=np.int64)
    pred_class[pred_seg[pred_ok]] = pc[pred_ok]
    gt_class = np.zeros(n_gt, dtype=np.int64)
    gt_class[gt_seg[gt_ok]] = gc[gt_ok]
    pred_matched = np.zeros(n_pred, dtype=bool)
    pred_matched[ps[hit]] = True
    gt_matched = np.zeros(n_gt, dtype=bool)
    gt_matched[gs[hit]] = True
    ignored = (pred_void + pred_crowd) / np.maximum(pred_area, 1) > 0.5
    false_pos = ~pred_matched & ~ignored
    result = {}
    for label in sorted(thing_ids | stuff_ids):
        matched = hit & (pc[pair] == label)
        result[label] = (
            int(matched.sum()),
            int((false_pos & (pred_class == label)).sum()),
            int((~gt_matched & (gt_class == label)).sum()),
            float(iou[matched].sum()),
        )
    return result


def _segments(plane, cls, inst, keep):
    """Segment index of every row (``-1`` where ``keep`` is False): unique (plane, class, id)."""
    index = np.full(len(cls), -1, dtype=np.int64)
    if keep.any():
        key = np.zeros(int(keep.sum()), dtype=np.int64)
        for column in (plane[keep], cls[keep], inst[keep]):
            values, position = compact(column)
            _, key = compact(key * len(values) + position)
        index[keep] = key
    return index


def _class_scores(tp: int, fp: int, fn: int, iou_sum: float) -> dict[str, Any]:
    if tp + fp + fn == 0:
        nan = float("nan")
        return {"pq": nan, "sq": nan, "rq": nan, "tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0}
    denominator = tp + 0.5 * fp + 0.5 * fn
    return {
        "pq": ratio(iou_sum, denominator),
        "sq": ratio(iou_sum, tp) if tp else 0.0,
        "rq": ratio(tp, denominator),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "iou_sum": iou_sum,
    }


def _average(entries: Iterable[dict]) -> dict[str, Any]:
    present = [e for e in entries if e["tp"] + e["fp"] + e["fn"] > 0]
    if not present:
        nan = float("nan")
        return {"pq": nan, "sq": nan, "rq": nan, "n": 0}
    return {
        "pq": float(np.mean([e["pq"] for e in present])),
        "sq": float(np.mean([e["sq"] for e in present])),
        "rq": float(np.mean([e["rq"] for e in present])),
        "n": len(present),
    }
