"""One evaluation job as a generator: scores, per-slice Dice and error images.

A job in the sense of :mod:`napari_seglab.jobs`: the widget runs
:func:`evaluation_steps` in a worker thread (each ``yield`` is an
:class:`EvaluationProgress` and a point where the job can be cancelled),
``seglab evaluate`` drives the same generator, and scripts call
:func:`evaluate` to get the same :class:`Evaluation` directly.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jobs import CancelCheck, CancelLike, ProgressEvent, Stopwatch, run_to_end
from .classes import apply_class_map, label_warnings
from .contingency import check_label_pair
from .export import instance_errors, results_table, semantic_errors
from .matching import instances
from .overlap import semantic
from .panoptic import panoptic
from .slices import per_slice

MODES = ("semantic", "instance", "panoptic")


@dataclass(frozen=True)
class EvaluationProgress(ProgressEvent):
    """Progress of :func:`evaluation_steps`, yielded before each step.

    Attributes
    ----------
    stage : {"scoring", "slices", "errors", "done"}
        The step about to run (``"done"``: the last event, before returning).
    done, total : int
        Steps finished so far and number of steps (``done == total`` in the
        last event).
    elapsed : float
        Seconds since the job started.
    message : str
        The step for people, e.g. ``"scoring (semantic)"``.
    """

    message: str = ""


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation produced.

    Attributes
    ----------
    mode : {"semantic", "instance", "panoptic"}
    result : dict
        From :func:`~.overlap.semantic`, :func:`~.matching.instances` or
        :func:`~.panoptic.panoptic`.
    per_slice : dict of int to ndarray, or None
        Dice per plane along axis 0 (3D inputs only): per class in semantic
        mode, of the foreground (key 1) in instance mode.
    false_positives, false_negatives : ndarray or None
        Error images (see :func:`~.export.instance_errors` and
        :func:`~.export.semantic_errors`) when requested.
    warnings : tuple of str
        Semantic mode: why the scores may mislead (ground truth that looks
        like instances, no class in common); see :func:`~.classes.label_warnings`.
    """

    mode: str
    result: dict
    per_slice: dict[int, np.ndarray] | None
    false_positives: np.ndarray | None = None
    false_negatives: np.ndarray | None = None
    warnings: tuple[str, ...] = ()

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
    surface: bool = True,
    slices: bool = True,
    error_images: bool = False,
    foreground: bool = False,
    class_map: Mapping[int, int] | None = None,
    panoptic_options: Mapping[str, Any] | None = None,
    cancel: CancelLike = None,
) -> Generator[EvaluationProgress, None, Evaluation]:
    """Evaluate ``pred`` against ``gt`` step by step.

    Parameters
    ----------
    pred, gt : array-like of integers, same shape ``(Y, X)`` or ``(Z, Y, X)``
        Panoptic mode: the class images.
    mode : {"semantic", "instance", "panoptic"}
    spacing : sequence of float, optional
        Voxel size per axis (semantic distances and volumes).
    iou_threshold : float
        Instance mode: IoU needed for a match.
    tolerance : float
        Semantic mode: surface Dice tolerance in units of ``spacing``.
    classes, ignore_label, surface :
        Semantic mode: see :func:`~.overlap.semantic`.
    slices : bool
        Dice per plane along axis 0 for 3D inputs (an extra pass over the voxels).
    error_images : bool
        Also build false-positive and false-negative images.
    foreground, class_map :
        Semantic mode: score foreground vs background, or rename prediction
        classes ``{prediction class: ground-truth class}`` first (every step
        and the error images use the mapped ids); see :mod:`.classes`.
    panoptic_options : mapping, optional
        Panoptic mode: ``pred_instance`` and ``gt_instance`` (instance images
        of the input shape), ``things`` and optionally ``stuff`` and
        ``per_plane`` (see :func:`~.panoptic.panoptic`; ``iou_threshold`` and
        ``ignore_label`` come from the keywords above). No per-slice Dice nor
        error images in this mode.
    cancel : threading.Event or callable, optional
        Checked between steps and between the classes' surface metrics
        (:class:`~napari_seglab.jobs.CancelCheck`).

    Yields
    ------
    EvaluationProgress
        Before each step.

    Returns
    -------
    Evaluation

    Raises
    ------
    JobCancelled
        When ``cancel`` was set; nothing is returned.
    ValueError
        Bad ``mode``, inputs of different shapes, or a class mapping in
        instance mode (before the first event).
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    shape = check_label_pair(pred, gt)
    if mode != "semantic" and (foreground or class_map):
        raise ValueError(
            "foreground / class_map: expected mode 'semantic' (instance ids are objects, "
            f"not classes), got mode {mode!r}"
        )
    if mode == "panoptic":
        return (
            yield from _panoptic_steps(
                pred, gt, iou_threshold, ignore_label, panoptic_options, cancel
            )
        )
    original_gt = gt
    pred, gt = apply_class_map(
        pred, gt, foreground=foreground, class_map=class_map, ignore_label=ignore_label
    )
    check = CancelCheck(cancel)
    clock = Stopwatch()
    with_slices = slices and len(shape) == 3
    total = 1 + int(error_images) + int(with_slices)
    finished = 0

    def event(stage: str, message: str) -> EvaluationProgress:
        check.raise_if_set("Evaluation")
        return EvaluationProgress(stage, finished, total, clock.elapsed, message=message)

    yield event("scoring", f"scoring ({mode})")
    if mode == "semantic":
        result = semantic(
            pred,
            gt,
            classes=classes,
            spacing=spacing,
            ignore_label=ignore_label,
            tolerance=tolerance,
            surface=surface,
            cancel=check,
        )
        warnings = label_warnings(
            (c for c, s in result.items() if s["volume_pred"] > 0),
            (c for c, s in result.items() if s["volume_gt"] > 0),
            original_gt,
            check_instances=not foreground,
        )
    else:
        result = instances(pred, gt, iou_threshold=iou_threshold)
        warnings = []
    finished += 1
    per_plane = None
    if with_slices:
        yield event("slices", "Dice per slice")
        labels = list(result) if mode == "semantic" else None
        per_plane = per_slice(pred, gt, axis=0, classes=labels, foreground=mode == "instance")
        finished += 1
    fp = fn = None
    if error_images:
        yield event("errors", "error images")
        if mode == "semantic":
            fp, fn = semantic_errors(pred, gt, classes=list(result), ignore_label=ignore_label)
        else:
            fp, fn = instance_errors(pred, gt, result)
        finished += 1
    yield event("done", "done")
    return Evaluation(mode, result, per_plane, fp, fn, tuple(warnings))


def _panoptic_steps(pred, gt, iou_threshold, ignore_label, options, cancel):
    options = dict(options or {})
    missing = {"pred_instance", "gt_instance", "things"} - set(options)
    if missing:
        raise ValueError(
            f"mode 'panoptic': panoptic_options must give {sorted(missing)} (instance images "
            "and the thing classes)"
        )
    check = CancelCheck(cancel)
    clock = Stopwatch()
    check.raise_if_set("Evaluation")
    yield EvaluationProgress("scoring", 0, 1, clock.elapsed, message="scoring (panoptic)")
    result = panoptic(
        pred,
        options.pop("pred_instance"),
        gt,
        options.pop("gt_instance"),
        iou_threshold=iou_threshold,
        ignore_label=ignore_label,
        **options,
    )
    check.raise_if_set("Evaluation")
    yield EvaluationProgress("done", 1, 1, clock.elapsed, message="done")
    return Evaluation("panoptic", result, None)


def evaluate(pred: Any, gt: Any, **options: Any) -> Evaluation:
    """Run :func:`evaluation_steps` to the end and return its :class:`Evaluation`.

    Raises :class:`~napari_seglab.jobs.JobCancelled` when a ``cancel`` option
    asked to stop.
    """
    return run_to_end(evaluation_steps(pred, gt, **options))
