"""The ``evaluate`` pipeline: predictions scored against ground truth paired by name.

Items are prediction files whose ground truth is ``item.extra["truth"]``
(:func:`~.inputs.pair_items`). Each row holds, per class ``c`` present in
either image, ``dice_c`` and ``iou_c`` (and ``hd95_c`` with ``surface``), their
means over the classes (``dice``, ``iou``), and with ``instances`` the
object-level scores of :func:`napari_seglab.metrics.instances` (``f1``, ``pq``,
``precision``, ``recall``, ``tp``, ``fp``, ``fn``). The report's ``(mean)``
row is the mean over items. Nothing is written per item: the scores live in
the manifest and the report.

Images are read lazily where the format allows (``.npy``, TIFF, zarr) and
scored slab by slab (:func:`napari_seglab.metrics.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from pathlib import Path
from typing import Any

from .pipeline import BatchItem, ItemOutcome

__all__ = ["EvaluatePipeline"]

#: Instance scores copied into the row.
INSTANCE_FIELDS = ("f1", "pq", "precision", "recall", "tp", "fp", "fn")


class EvaluatePipeline:
    """Score each prediction against its ground truth (see the module docstring).

    Parameters
    ----------
    instances : bool
        Also score objects (the images hold instance ids): F1 and PQ at
        ``iou_threshold``.
    iou_threshold : float
        IoU a predicted object needs to match a ground-truth object.
    surface : bool
        Also compute the 95th percentile Hausdorff distance per class (in the
        units of the ground truth's spacing).
    ignore_label : int, optional
        Ground-truth value that is not scored.
    """

    name = "evaluate"

    def __init__(
        self,
        *,
        instances: bool = False,
        iou_threshold: float = 0.5,
        surface: bool = False,
        ignore_label: int | None = None,
    ):
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"iou threshold: expected 0 < t <= 1, got {iou_threshold}")
        self.instances = bool(instances)
        self.iou_threshold = float(iou_threshold)
        self.surface = bool(surface)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def settings(self) -> dict[str, Any]:
        """The scoring options."""
        return {
            "instances": self.instances,
            "iou_threshold": self.iou_threshold,
            "surface": self.surface,
            "ignore_label": self.ignore_label,
        }

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the settings.

        The ground truth's content is part of each item's input hash (its
        ``extra`` files), so a changed ground-truth file is scored again.
        """
        text = json.dumps({"pipeline": self.name, **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def output_names(self, item: BatchItem) -> list[str]:
        """No files per item: the scores go to the manifest and the report."""
        return []

    def load(self) -> None:
        """Nothing to load."""
        return None

    def run_item(self, item: BatchItem, output_dir: Path, loaded: Any) -> ItemOutcome:
        """Score ``item.path`` against ``item.extra["truth"]``."""
        from ..io import read_array
        from ..metrics import evaluate

        truth_path = item.extra.get("truth")
        if truth_path is None:
            raise FileNotFoundError(
                f"no ground truth named like {item.name!r} (pairs are matched by name)"
            )
        pred = read_array(item.path, lazy=True, what="prediction")
        truth = read_array(truth_path, lazy=True, what="ground truth", layer_type="labels")
        spacing = (
            truth.spacing if truth.spacing and len(truth.spacing) == len(truth.shape) else None
        )
        result = evaluate(
            pred.data,
            truth.data,
            mode="semantic",
            spacing=spacing,
            surface=self.surface,
            slices=False,
            ignore_label=self.ignore_label,
        )
        row: dict[str, Any] = {
            "shape": list(truth.shape),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "truth": str(truth_path),
        }
        dice, iou = [], []
        for value, scores in sorted(result.result.items()):
            row[f"dice_{value}"] = _value(scores.get("dice"))
            row[f"iou_{value}"] = _value(scores.get("iou"))
            if self.surface:
                row[f"hd95_{value}"] = _value(scores.get("hd95"))
            dice.append(row[f"dice_{value}"])
            iou.append(row[f"iou_{value}"])
        row["dice"] = _mean(dice)
        row["iou"] = _mean(iou)
        if self.instances:
            objects = evaluate(
                pred.data,
                truth.data,
                mode="instance",
                iou_threshold=self.iou_threshold,
                slices=False,
            )
            for key in INSTANCE_FIELDS:
                row[key] = _value(objects.result.get(key))
            row["objects"] = int(objects.result.get("n_pred", 0))
        return ItemOutcome([], row)


def _value(value: Any) -> Any:
    """A JSON number (None for NaN: a class absent from both images)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None
