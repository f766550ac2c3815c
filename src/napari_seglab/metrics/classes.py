"""Which classes are compared: class mapping, foreground vs background, and sanity checks.

Two ways to make the classes of a prediction comparable with a ground truth:

* ``foreground=True``: every non-zero id is class 1 on both sides (0 stays
  background; the ground truth's ``ignore_label`` is kept as it is).
* ``class_map={pred_class: gt_class}``: prediction ids are renamed before
  scoring (``{1: 1, 2: 1}`` merges prediction classes 1 and 2 into ground-truth
  class 1); prediction ids not in the mapping keep their id, and mapping to 0
  makes a class background.

Both are lazy: :class:`MappedLabels` applies the mapping to each slab as it is
read, so dask and zarr inputs stay on disk.

Checks that explain a surprising score (:func:`label_warnings`): a ground
truth that looks like an instance image (:func:`instance_check`) evaluated in
semantic mode, and a prediction and ground truth without a class in common.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "InstanceCheck",
    "MappedLabels",
    "apply_class_map",
    "instance_check",
    "label_warnings",
    "looks_like_instances",
    "parse_class_map",
]


class MappedLabels:
    """A label array whose ids are translated as it is read (slab by slab).

    Parameters
    ----------
    labels : array-like of integers
        Numpy, dask, zarr or any array supporting ``labels[index]``.
    mapping : dict of int to int, optional
        Ids to rename; other ids keep their value.
    foreground : bool
        Every non-zero id becomes 1 (after ``mapping``), except ``keep``.
    keep : int, optional
        An id left as it is by ``foreground`` (the ground truth's ignore label).

    Attributes
    ----------
    shape, dtype, ndim, chunks
        As the wrapped array (``dtype`` widened to hold the mapped ids).
    """

    def __init__(
        self,
        labels: Any,
        *,
        mapping: Mapping[int, int] | None = None,
        foreground: bool = False,
        keep: int | None = None,
    ) -> None:
        self.labels = labels
        self.mapping = {int(k): int(v) for k, v in (mapping or {}).items()}
        self.foreground = bool(foreground)
        self.keep = None if keep is None else int(keep)
        self.shape = tuple(labels.shape)
        self.ndim = len(self.shape)
        self.chunks = getattr(labels, "chunks", None)
        dtype = np.dtype(labels.dtype)
        targets = list(self.mapping.values()) + ([1] if self.foreground else [])
        if targets:
            dtype = np.result_type(
                np.uint8 if dtype.kind == "b" else dtype, *(np.min_scalar_type(t) for t in targets)
            )
        self.dtype = dtype

    def map(self, block: np.ndarray) -> np.ndarray:
        """Translate the ids of one block read from the wrapped array."""
        block = np.asarray(block)
        out = block.astype(self.dtype, copy=True)
        for source, target in self.mapping.items():
            out[block == source] = target
        if self.foreground:
            kept = None if self.keep is None else out == self.keep
            out = (out != 0).astype(self.dtype)
            if kept is not None:
                out[kept] = self.keep
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.map(self.labels[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.map(np.asarray(self.labels))
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def apply_class_map(
    pred: Any,
    gt: Any,
    *,
    foreground: bool = False,
    class_map: Mapping[int, int] | None = None,
    ignore_label: int | None = None,
) -> tuple[Any, Any]:
    """``(pred, gt)`` as they are scored with ``foreground`` / ``class_map``.

    Returns the inputs unchanged when neither is given, else lazy
    :class:`MappedLabels` views: ``class_map`` renames prediction ids,
    ``foreground`` makes every non-zero id 1 on both sides (the ground
    truth's ``ignore_label`` stays). Raises ``ValueError`` for a mapping that
    is not ``{int: int}``.
    """
    if class_map:
        try:
            class_map = {int(k): int(v) for k, v in dict(class_map).items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"class_map: expected {{prediction class: ground-truth class}} with integer "
                f"ids, got {class_map!r}"
            ) from exc
    if not foreground and not class_map:
        return pred, gt
    pred = MappedLabels(pred, mapping=class_map, foreground=foreground)
    if foreground:
        gt = MappedLabels(gt, foreground=True, keep=ignore_label)
    return pred, gt


def parse_class_map(text: str) -> dict[int, int]:
    """``"1:1,2:1"`` -> ``{1: 1, 2: 1}`` (prediction class : ground-truth class)."""
    mapping: dict[int, int] = {}
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        source, sep, target = item.partition(":")
        try:
            if not sep:
                raise ValueError
            mapping[int(source)] = int(target)
        except ValueError:
            raise ValueError(
                f"class map: expected pairs PRED:GT separated by commas (e.g. 1:1,2:1), "
                f"got {text!r}"
            ) from None
    if not mapping:
        raise ValueError(f"class map: expected at least one pair PRED:GT, got {text!r}")
    return mapping


@dataclass(frozen=True)
class InstanceCheck:
    """What :func:`instance_check` found.

    Attributes
    ----------
    n_ids : int
        Non-zero ids in the image.
    n_checked : int
        Ids whose connected components were counted (all, or an even sample).
    n_single : int
        Checked ids that form one connected blob.
    looks_like_instances : bool
        The verdict of the rule in :func:`instance_check`.
    """

    n_ids: int
    n_checked: int
    n_single: int
    looks_like_instances: bool


def instance_check(
    labels: Any, *, min_ids: int = 10, single_fraction: float = 0.9, max_checked: int = 256
) -> InstanceCheck:
    """Does a label image look like instances (one id per object) rather than classes?

    The rule: the image has at least ``min_ids`` non-zero ids, and at least
    ``single_fraction`` of them each form a single connected blob (full
    connectivity: 8 neighbours in 2D, 26 in 3D); no id is split into separate
    parts more often than that. Class images have few ids, and a class
    usually occurs in several separate places. Ids are checked in their
    bounding boxes; with more than ``max_checked`` ids an evenly spaced sample
    is checked. Atlases with many compact regions (brain parcellations) also
    pass the rule; :func:`label_warnings` therefore compares with the
    prediction too.

    Parameters
    ----------
    labels : array-like of integers, ``(Y, X)`` or ``(Z, Y, X)``
        Read into memory once.

    Returns
    -------
    InstanceCheck
    """
    data = np.asarray(labels)
    ids = np.unique(data)
    ids = ids[ids != 0]
    if len(ids) < min_ids:
        return InstanceCheck(len(ids), 0, 0, False)
    index = np.zeros(data.shape, dtype=np.int32)
    nonzero = data != 0
    index[nonzero] = np.searchsorted(ids, data[nonzero]) + 1
    boxes = ndi.find_objects(index)
    if len(ids) > max_checked:
        picked = np.unique(np.linspace(0, len(ids) - 1, max_checked).astype(int))
    else:
        picked = np.arange(len(ids))
    structure = np.ones((3,) * data.ndim, dtype=bool)
    single = 0
    for k in picked:
        box = boxes[k]
        _, parts = ndi.label(index[box] == k + 1, structure=structure)
        single += int(parts == 1)
    verdict = single >= single_fraction * len(picked)
    return InstanceCheck(len(ids), len(picked), single, bool(verdict))


def looks_like_instances(labels: Any, **rule: Any) -> bool:
    """True when :func:`instance_check` finds ``labels`` looks like an instance image."""
    return instance_check(labels, **rule).looks_like_instances


def label_warnings(
    pred_classes: Any, gt_classes: Any, gt: Any = None, *, check_instances: bool = True
) -> list[str]:
    """Warnings about a semantic comparison whose score would mislead.

    Parameters
    ----------
    pred_classes, gt_classes : iterable of int
        Non-zero ids present in the prediction and in the ground truth.
    gt : array-like, optional
        The ground truth, for the instance check; only read when it has at
        least as many ids as :func:`instance_check` needs and at least twice as
        many ids as the prediction has classes.
    check_instances : bool
        Run the instance check at all.

    Returns
    -------
    list of str
        Empty when nothing looks wrong.
    """
    pred_set = {int(c) for c in pred_classes} - {0}
    gt_set = {int(c) for c in gt_classes} - {0}
    found: list[str] = []
    many = len(gt_set) >= 10 and len(gt_set) >= 2 * max(len(pred_set), 1)
    if check_instances and gt is not None and many:
        check = instance_check(gt)
        if check.looks_like_instances:
            found.append(
                f"The ground truth looks like instances, not classes: {check.n_ids} ids, "
                f"{check.n_single} of {check.n_checked} checked are each one connected blob, "
                f"against {len(pred_set)} predicted classes. Semantic scores treat each id "
                "as a class; use instance mode, or compare foreground vs background."
            )
    if pred_set and gt_set and not pred_set & gt_set:
        found.append(
            f"No class is in both: prediction has {_ids_text(pred_set)}, ground truth has "
            f"{_ids_text(gt_set)}. Map the classes (prediction class : ground-truth class) "
            "or compare foreground vs background."
        )
    return found


def _ids_text(ids: set[int], most: int = 8) -> str:
    ordered = sorted(ids)
    shown = ", ".join(str(i) for i in ordered[:most])
    more = f", … ({len(ordered)} ids)" if len(ordered) > most else ""
    return f"{{{shown}{more}}}"
