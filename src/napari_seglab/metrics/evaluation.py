"""One evaluation job as a generator: scores, per-slice Dice and error images.

The widget runs :func:`evaluation_steps` in a worker thread (each ``yield``
is a progress event and a point where the job can be cancelled); scripts can
call :func:`evaluate` to get the same :class:`Evaluation` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contingency import check_label_pair
from .export import instance_errors, results_table, semantic_errors
from .matching import instances
from .overlap import semantic
from .slices import per_slice

MODES = ("semantic", "instance")


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation produced.

    Attributes
    ----------
    mode : {"semantic", "instance"}
    result : dict
        From :func:`~.overlap.semantic` or :func:`~.matching.instances`.
    per_slice : dict of int to ndarray, or None
        Dice per plane along axis 0 (3D inputs only): per class in semantic
        mode, of the foreground (key 1) in instance mode.
    false_positives, false_negatives : ndarray or None
        Error images (see :func:`~.export.instance_errors` and
        :func:`~.export.semantic_errors`) when requested.
    """

    mode: str
    result: dict
    per_slice: dict[int, np.ndarray] | None
    false_positives: np.ndarray | None = None
    false_negatives: np.ndarray | None = None

    def table(self, which: str = "summary") -> tuple[list[str], list[list[Any]]]:
        """The result as ``(header, rows)`` (see :func:`~.export.results_table`)."""
        return results_table(self.result, which)

    def object_ious(self) -> np.ndarray:
        """Instance mode: IoU of every ground-truth object (matched or best); else empty."""
        if self.mode != "instance":
            return np.zeros(0)
        objects = self.result["objects"]
        return objects["iou"][objects["gt_id"] != 0]


def evaluation_steps(
    pred: Any,
    gt: Any,
    *,
    mode: str = "semantic",
    spacing: Any = None,
    iou_threshold: float = 0.5,
    tolerance: float = 1.0,
    classes: Any = None,
    ignore_label: int | None = None,
    error_images: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Generator[dict[str, Any], None, Evaluation | None]:
    """Evaluate ``pred`` against ``gt`` step by step.

    Parameters
    ----------
    pred, gt : array-like of integers, same shape ``(Y, X)`` or ``(Z, Y, X)``
    mode : {"semantic", "instance"}
    spacing : sequence of float, optional
        Voxel size per axis (semantic distances and volumes).
    iou_threshold : float
        Instance mode: IoU needed for a match.
    tolerance : float
        Semantic mode: surface Dice tolerance in units of ``spacing``.
    classes, ignore_label :
        Semantic mode: see :func:`~.overlap.semantic`.
    error_images : bool
        Also build false-positive and false-negative images.
    cancel : callable, optional
        Asked between steps and between the classes' surface metrics; when it
        returns True the evaluation stops and returns None.

    Yields
    ------
    dict
        ``{"step": i, "total": n, "message": str}`` before each step.

    Returns
    -------
    Evaluation or None
        None when cancelled.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    shape = check_label_pair(pred, gt)
    total = 2 + int(error_images) + int(len(shape) == 3)
    step = 0

    def cancelled() -> bool:
        return cancel is not None and bool(cancel())

    def event(message: str) -> dict[str, Any]:
        nonlocal step
        step += 1
        return {"step": step, "total": total, "message": message}

    yield event(f"scoring ({mode})")
    if mode == "semantic":
        result = semantic(
            pred,
            gt,
            classes=classes,
            spacing=spacing,
            ignore_label=ignore_label,
            tolerance=tolerance,
            cancel=cancelled,
        )
    else:
        result = instances(pred, gt, iou_threshold=iou_threshold)
    if result is None or cancelled():
        return None
    slices = None
    if len(shape) == 3:
        yield event("Dice per slice")
        labels = list(result) if mode == "semantic" else None
        slices = per_slice(pred, gt, axis=0, classes=labels, foreground=mode == "instance")
    fp = fn = None
    if error_images and not cancelled():
        yield event("error images")
        if mode == "semantic":
            fp, fn = semantic_errors(pred, gt, classes=list(result), ignore_label=ignore_label)
        else:
            fp, fn = instance_errors(pred, gt, result)
    if cancelled():
        return None
    yield event("done")
    return Evaluation(mode, result, slices, fp, fn)


def evaluate(pred: Any, gt: Any, **options: Any) -> Evaluation | None:
    """Run :func:`evaluation_steps` to the end and return its :class:`Evaluation`.

    None only when a ``cancel`` option asked to stop.
    """
    steps = evaluation_steps(pred, gt, **options)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
