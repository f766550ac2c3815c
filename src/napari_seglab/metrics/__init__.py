"""Segmentation evaluation: semantic, surface and instance metrics for 2D/3D labels.

Public API::

    from napari_seglab import metrics

    metrics.semantic(pred, gt, spacing=(2.0, 0.5, 0.5))   # per class: dice, iou, hd95, ...
    metrics.instances(pred, gt, iou_threshold=0.5)       # tp/fp/fn, f1, accuracy, pq, objects
    metrics.per_slice(pred, gt, axis=0)                  # Dice per plane
    metrics.write_csv(result, "scores.csv")
    fp, fn = metrics.instance_errors(pred, gt, result)   # error images
    metrics.evaluate(pred, gt, mode="instance")          # all of it, as the widget does
    metrics.foreground_dice(a, b), metrics.boundary_f_score(a, b)   # two foreground masks
    metrics.semantic(pred, gt, foreground=True)          # all > 0 vs 0 on both sides
    metrics.semantic(pred, gt, class_map={1: 1, 2: 1})   # rename prediction classes first
    metrics.looks_like_instances(gt)                     # many ids, each one connected blob
    metrics.panoptic(pc, pi, gc, gi, things=[1, 2])      # PQ, SQ, RQ per class, things/stuff

Every function takes numpy, dask, zarr or any array supporting slicing along
axis 0, of any integer dtype, and reads it slab by slab in one pass that
builds a sparse contingency table (:mod:`.contingency`). Definitions and
conventions: ``docs/evaluation.md``.
"""

from .classes import (
    InstanceCheck,
    MappedLabels,
    apply_class_map,
    instance_check,
    label_warnings,
    looks_like_instances,
    parse_class_map,
)
from .contingency import ContingencyTable, check_label_pair, contingency_table
from .evaluation import Evaluation, EvaluationProgress, evaluate, evaluation_steps
from .export import (
    format_value,
    instance_errors,
    is_instance_result,
    results_table,
    semantic_errors,
    write_csv,
)
from .masks import boundary_f_score, foreground_dice
from .matching import DEFAULT_THRESHOLDS, INSTANCE_KEYS, instances
from .overlap import SEMANTIC_KEYS, mean_dice, semantic
from .panoptic import (
    PANOPTIC_KEYS,
    classes_from_features,
    is_panoptic_result,
    labels_to_panoptic,
    panoptic,
)
from .slices import per_slice
from .surface import SurfaceScores, surface_distances, surface_scores

__all__ = [
    "DEFAULT_THRESHOLDS",
    "INSTANCE_KEYS",
    "PANOPTIC_KEYS",
    "SEMANTIC_KEYS",
    "ContingencyTable",
    "Evaluation",
    "EvaluationProgress",
    "InstanceCheck",
    "MappedLabels",
    "SurfaceScores",
    "apply_class_map",
    "boundary_f_score",
    "check_label_pair",
    "classes_from_features",
    "contingency_table",
    "evaluate",
    "evaluation_steps",
    "foreground_dice",
    "format_value",
    "instance_check",
    "instance_errors",
    "instances",
    "is_instance_result",
    "is_panoptic_result",
    "label_warnings",
    "labels_to_panoptic",
    "looks_like_instances",
    "mean_dice",
    "panoptic",
    "parse_class_map",
    "per_slice",
    "results_table",
    "semantic",
    "semantic_errors",
    "surface_distances",
    "surface_scores",
    "write_csv",
]
