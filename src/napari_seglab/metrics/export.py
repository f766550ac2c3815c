"""Results as tables (CSV, widget) and error images (false positives / negatives).

The same :func:`results_table` feeds the CSV files, the command line and the
evaluation widget, so all three show identical numbers.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .contingency import array_chunks, check_label_pair, read_slab, slab_ranges
from .matching import INSTANCE_KEYS
from .overlap import SEMANTIC_KEYS
from .panoptic import PANOPTIC_KEYS, is_panoptic_result


def is_instance_result(result: Any) -> bool:
    """True for a result of :func:`~.matching.instances`, False for :func:`~.overlap.semantic`."""
    return isinstance(result, dict) and "per_threshold" in result and "objects" in result


def results_table(result: dict, table: str = "summary") -> tuple[list[str], list[list[Any]]]:
    """A result as ``(header, rows)``.

    Parameters
    ----------
    result : dict
        From :func:`~.overlap.semantic` (one row per class),
        :func:`~.matching.instances` or :func:`~.panoptic.panoptic` (one row
        per class, kind ``thing``/``stuff``, then the rows ``all``, ``things``
        and ``stuff`` of kind ``mean``: mean PQ/SQ/RQ over the classes present
        and summed counts).
    table : {"summary", "objects"}
        For instance results: ``"summary"`` gives one row per IoU threshold
        (the chosen threshold and every ``per_threshold`` entry, ascending);
        ``"objects"`` gives the per-object table.
    """
    if table not in ("summary", "objects"):
        raise ValueError(f"table: expected 'summary' or 'objects', got {table!r}")
    if is_panoptic_result(result):
        if table == "objects":
            raise ValueError("table='objects' needs an instance result, got a panoptic one")
        return _panoptic_table(result)
    if not is_instance_result(result):
        if table == "objects":
            raise ValueError("table='objects' needs an instance result, got a semantic one")
        header = ["class", *SEMANTIC_KEYS]
        rows = [
            [int(label), *(scores[k] for k in SEMANTIC_KEYS)] for label, scores in result.items()
        ]
        return header, rows
    if table == "objects":
        columns = result["objects"]
        header = ["gt_id", "pred_id", "iou", "matched"]
        rows = [
            [int(g), int(p), float(i), bool(m)]
            for g, p, i, m in zip(*(columns[name].tolist() for name in header))
        ]
        return header, rows
    header = ["iou_threshold", *INSTANCE_KEYS]
    by_threshold = {float(e["threshold"]): e for e in result["per_threshold"]}
    by_threshold[float(result["iou_threshold"])] = result
    rows = [
        [level, *(by_threshold[level][k] for k in INSTANCE_KEYS)] for level in sorted(by_threshold)
    ]
    return header, rows


def _panoptic_table(result: dict) -> tuple[list[str], list[list[Any]]]:
    header = ["class", "kind", *PANOPTIC_KEYS]
    rows = [
        [int(label), scores["kind"], *(scores[k] for k in PANOPTIC_KEYS)]
        for label, scores in result["classes"].items()
    ]
    for name, average in result["summary"].items():
        members = [
            s for s in result["classes"].values() if name == "all" or s["kind"] + "s" == name
        ]
        sums = [sum(s[k] for s in members) for k in ("tp", "fp", "fn", "iou_sum")]
        rows.append([name, "mean", average["pq"], average["sq"], average["rq"], *sums])
    return header, rows


def format_value(value: Any) -> str:
    """Text of one table cell: integers as is, floats with 6 significant digits."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def write_csv(result: dict, path: str | Path, table: str = "summary") -> Path:
    """Write :func:`results_table` of ``result`` to a CSV file (full float precision).

    Returns the path written. NaN and infinity are written as ``nan``/``inf``.
    The file is written atomically (a temporary file in the same folder, then
    renamed): a failure leaves an existing file at ``path`` as it was.
    """
    from ..checkpoints import atomic_path

    header, rows = results_table(result, table)
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"CSV folder does not exist: {path.parent}")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row])
    return path


def _csv_cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and math.isfinite(float(value)):
        return repr(float(value))
    return format_value(value)


def instance_errors(pred: Any, gt: Any, result: dict) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and false-negative objects of an instance result.

    Returns ``(false_positives, false_negatives)``: arrays of the input shape
    holding the unmatched predicted objects (their prediction ids) and the
    unmatched ground-truth objects (their ground-truth ids), 0 elsewhere.
    """
    if not is_instance_result(result):
        raise ValueError("instance_errors: expected a result of metrics.instances")
    objects = result["objects"]
    fp_ids = objects["pred_id"][(objects["gt_id"] == 0) & ~objects["matched"]]
    fn_ids = objects["gt_id"][(objects["gt_id"] != 0) & ~objects["matched"]]
    return _keep_ids(pred, gt, fp_ids, fn_ids)


def semantic_errors(
    pred: Any, gt: Any, *, classes: Any = None, ignore_label: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and false-negative voxels of a semantic segmentation.

    Returns ``(false_positives, false_negatives)``: the predicted class where
    the prediction says a class the ground truth does not (``pred != gt``,
    ``pred`` in ``classes``), and the ground-truth class the prediction missed
    (``gt != pred``, ``gt`` in ``classes``); 0 elsewhere and where the ground
    truth is ``ignore_label``. ``classes`` defaults to all non-zero ids.
    """
    shape = check_label_pair(pred, gt)
    chunks = array_chunks(pred) or array_chunks(gt)
    fp = np.zeros(shape, dtype=_label_dtype(pred))
    fn = np.zeros(shape, dtype=_label_dtype(gt))
    wanted = None if classes is None else np.asarray(sorted({int(c) for c in classes}))
    for start, stop in slab_ranges(shape, 0, chunks=chunks):
        p = read_slab(pred, start, stop)
        g = read_slab(gt, start, stop)
        wrong = p != g
        if ignore_label is not None:
            wrong &= g != ignore_label
        fp_here = wrong & (p != 0 if wanted is None else np.isin(p, wanted))
        fn_here = wrong & (g != 0 if wanted is None else np.isin(g, wanted))
        fp[start:stop] = np.where(fp_here, p, 0)
        fn[start:stop] = np.where(fn_here, g, 0)
    return fp, fn


def _keep_ids(pred: Any, gt: Any, fp_ids: np.ndarray, fn_ids: np.ndarray):
    shape = check_label_pair(pred, gt)
    chunks = array_chunks(pred) or array_chunks(gt)
    fp = np.zeros(shape, dtype=_label_dtype(pred))
    fn = np.zeros(shape, dtype=_label_dtype(gt))
    for start, stop in slab_ranges(shape, 0, chunks=chunks):
        p = read_slab(pred, start, stop)
        g = read_slab(gt, start, stop)
        fp[start:stop] = np.where(np.isin(p, fp_ids), p, 0)
        fn[start:stop] = np.where(np.isin(g, fn_ids), g, 0)
    return fp, fn


def _label_dtype(arr: Any) -> np.dtype:
    return np.dtype(np.uint8) if arr.dtype == bool else np.dtype(arr.dtype)
