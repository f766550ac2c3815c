"""Refine one object of an existing label image with SAM, its own mask as the prompt.

A label image from another tool (a threshold, a U-Net, a previous annotation)
is usually roughly right: each object is in the right place, with borders a few
pixels off. :func:`refine_object` asks SAM for a better mask of one object,
prompting with what the label already says:

* the object's mask as SAM's *mask input* (converted to low-resolution logits
  by :meth:`~.prompt.PromptSegmenter.mask_to_logits`);
* its bounding box, grown by ``box_margin`` of its size on each side (default
  10 %, at least one pixel), so that an object drawn too small can still grow;
* one positive point at its most interior pixel (the maximum of the distance
  transform), where a user would click;
* and any corrective points the user adds.

Why all three by default: SAM was trained with a mask input only together with
clicks (the previous round's logits plus a new point); a mask alone is outside
its training and often decodes to noise, while a box fixes the object's extent
and the interior point says which of the possibly nested objects is meant
(micro-sam and the propagation in :mod:`.propagate` prompt the same way). The
box limits how far an object can grow (its margin); pass ``use_box=False`` for
objects that are much too small. A decoder fine-tuned with the ``"mask"``
prompt kind (:class:`~.finetune.PromptRecipe`) is trained on exactly this
prompt, built by the same functions (:mod:`.mask_prompts`).

Other objects are never eaten: with ``keep_others=True`` (the default) the
refined mask is restricted to background pixels and the object's own pixels.

:func:`refine_all` (in :mod:`.refine_all`) refines every object of a label
image and keeps only the refinements that pass the user's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..jobs import ProgressEvent
from .mask_prompts import DEFAULT_BOX_MARGIN, interior_point, mask_box

__all__ = [
    "LabelChange",
    "RefineStep",
    "RefinedObject",
    "check_labels",
    "iou",
    "label_change",
    "outcome",
    "refine_object",
]


@dataclass(frozen=True)
class LabelChange:
    """The pixels one accepted refinement changes.

    Attributes
    ----------
    object_id : int
    plane : int or None
    indices : tuple of int arrays
        ``np.nonzero``-style indices into the whole label array (its axis order).
    values : array
        The value for each index: the object's id where it grows, 0 where it shrinks.
    """

    object_id: int
    plane: int | None
    indices: tuple[np.ndarray, ...] = field(repr=False)
    values: np.ndarray = field(repr=False)

    @property
    def size(self) -> int:
        """Number of pixels changed."""
        return int(self.values.size)

    def apply(self, labels: np.ndarray) -> None:
        """Write into a numpy label array in place."""
        if self.size:
            labels[self.indices] = self.values


@dataclass(frozen=True)
class RefinedObject:
    """SAM's refinement of one object on one plane.

    Attributes
    ----------
    object_id : int
    plane : int or None
        Plane of a stack, None for a 2D label image.
    mask : bool array ``(Y, X)``
        The refined mask of the plane (restricted to background and the
        object's own pixels when other objects are kept).
    original : bool array ``(Y, X)``
        The object as the labels had it.
    score : float
        SAM's predicted IoU of the chosen mask.
    overlap : float
        IoU of ``mask`` with ``original`` (0 when both are empty).
    logits : float32 array ``(h, w)``
        Low-resolution logits of the chosen mask: pass as ``mask_input`` to
        :meth:`~.prompt.PromptSegmenter.predict` with more clicks to go on.
    raw_mask : bool array ``(Y, X)``
        SAM's mask before other objects' pixels were taken out.
    """

    object_id: int
    plane: int | None
    mask: np.ndarray = field(repr=False)
    original: np.ndarray = field(repr=False)
    score: float
    overlap: float
    logits: np.ndarray = field(repr=False)
    raw_mask: np.ndarray = field(repr=False)

    @property
    def added(self) -> int:
        """Pixels the refinement adds to the object."""
        return int(np.count_nonzero(self.mask & ~self.original))

    @property
    def removed(self) -> int:
        """Pixels the refinement takes away from the object."""
        return int(np.count_nonzero(self.original & ~self.mask))

    def change(self, dtype: Any = np.int64) -> LabelChange:
        """The pixels to write to replace the object by :attr:`mask` (gained and lost).

        Indices address the whole label array (a plane index first for a
        stack); values are the id where the object grows, 0 where it shrinks.
        A widget writes them with ``layer.data_setitem(change.indices,
        change.values)`` (one undo step).
        """
        grow = np.flatnonzero(self.mask & ~self.original)
        lost = np.flatnonzero(self.original & ~self.mask)
        return label_change(self.object_id, self.plane, grow, lost, self.mask.shape, dtype)


@dataclass(frozen=True)
class RefineStep(ProgressEvent):
    """One object refined on one plane (``stage == "refining"``).

    Attributes
    ----------
    done, total : int
        Objects (object-plane pairs in a stack) refined so far / in all.
    object_id : int
    plane : int or None
        None for a 2D label image.
    accepted : bool
        Whether the refinement passed the thresholds.
    """

    object_id: int = 0
    plane: int | None = None
    accepted: bool = False


def label_change(
    object_id: int,
    plane: int | None,
    grow: np.ndarray,
    lost: np.ndarray,
    shape: tuple[int, int],
    dtype: Any,
) -> LabelChange:
    """A :class:`LabelChange` from flat indices into a ``shape`` plane gained and lost."""
    local = np.unravel_index(np.concatenate([grow, lost]).astype(np.intp), shape)
    if plane is not None:
        local = (np.full(local[0].size, plane, dtype=np.intp), *local)
    values = np.concatenate(
        [np.full(grow.size, object_id, dtype=dtype), np.zeros(lost.size, dtype=dtype)]
    )
    return LabelChange(object_id=object_id, plane=plane, indices=tuple(local), values=values)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def check_labels(labels: Any, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``labels`` as an integer array, checked.

    Parameters
    ----------
    labels : array-like
        ``(Y, X)`` or ``(Z, Y, X)`` integer labels, 0 = background.
    expected_shape : tuple of int, optional
        The shape the labels must have (that of the image).

    Raises
    ------
    ValueError
        For a non-integer dtype (float, bool) or another shape, naming both.
    """
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Expected integer labels (0 = background, one id per object), got dtype "
            f"{array.dtype}; convert the label image (e.g. round a float image) first."
        )
    if array.ndim not in (2, 3):
        raise ValueError(f"Expected labels (Y, X) or (Z, Y, X), got shape {array.shape}.")
    if expected_shape is not None and array.shape != tuple(expected_shape):
        raise ValueError(
            f"The labels have shape {array.shape}, expected {tuple(expected_shape)} to match "
            "the image."
        )
    return array


def _plane_of(labels: np.ndarray, plane: int | None) -> np.ndarray:
    """The ``(Y, X)`` labels of ``plane`` (2D labels: the labels themselves)."""
    if labels.ndim == 2:
        if plane not in (None, 0):
            raise ValueError(f"2D labels {labels.shape} have no plane {plane}; pass plane=None.")
        return labels
    if plane is None:
        raise ValueError(
            f"Labels of shape {labels.shape} are a stack of {labels.shape[0]} planes: "
            "choose one with plane=."
        )
    if not -labels.shape[0] <= plane < labels.shape[0]:
        raise ValueError(f"Plane {plane} is out of range for labels of {labels.shape[0]} planes.")
    return labels[plane]


def _present_ids(labels: np.ndarray) -> str:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return "the labels hold no object"
    shown = ", ".join(str(int(i)) for i in ids[:10])
    more = f", ... ({ids.size} ids)" if ids.size > 10 else ""
    return f"ids present: {shown}{more}"


def _check_points(points: Any, point_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Corrective points ``(N, 2)`` and their labels ``(N,)`` (possibly empty)."""
    if points is None:
        if point_labels is not None:
            raise ValueError("point_labels were given without points.")
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"Expected points of shape (N, 2) as (row, col), got {pts.shape}.")
    if point_labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        lab = np.asarray(point_labels).ravel().astype(np.int64)
    if lab.shape != (len(pts),):
        raise ValueError(f"Expected {len(pts)} point labels (1 / 0), got shape {lab.shape}.")
    return pts, lab


def refine_object(
    segmenter: Any,
    labels: Any,
    object_id: int,
    *,
    points: Any = None,
    point_labels: Any = None,
    plane: int | None = None,
    image: Any = None,
    use_box: bool = True,
    use_point: bool = True,
    box_margin: float = DEFAULT_BOX_MARGIN,
    keep_others: bool = True,
    multimask: bool = False,
) -> RefinedObject:
    """Refine object ``object_id`` of ``labels`` with SAM, its mask as the prompt.

    Parameters
    ----------
    segmenter : PromptSegmenter
        Set to the image (or plane) the labels belong to, unless ``image`` is given.
    labels : int array ``(Y, X)`` or ``(Z, Y, X)``
        Read only, never modified.
    object_id : int
        The object to refine; it must be present (on ``plane`` for a stack).
    points : array ``(N, 2)``, optional
        Corrective clicks ``(row, col)`` on the plane.
    point_labels : array ``(N,)``, optional
        1 = belongs to the object, 0 = does not; default all 1.
    plane : int, optional
        Plane of a ``(Z, Y, X)`` label stack (required there).
    image : array or SamInput, optional
        The image; when given the segmenter is set to it (and ``plane``) first.
    use_box, use_point : bool
        Add the mask's bounding box (grown by ``box_margin`` of its size per
        side) and a positive point at its most interior pixel to the prompt.
    box_margin : float
    keep_others : bool
        Take other objects' pixels out of the refined mask (default), so
        writing it back never eats a neighbour.
    multimask : bool
        Ask for three proposals and keep the best-scoring one (default: one mask).

    Returns
    -------
    RefinedObject

    Raises
    ------
    ValueError
        When the object is not in the labels (the ids present are named), for
        non-integer labels, or for a segmenter image of another shape.
    """
    labels = check_labels(labels)
    if not np.isfinite(box_margin) or box_margin < 0:
        raise ValueError(f"Expected box_margin >= 0, got {box_margin}.")
    object_id = int(object_id)
    if object_id == 0:
        raise ValueError("Object id 0 is the background; choose an object id > 0.")
    plane_labels = np.asarray(_plane_of(labels, plane))
    if labels.ndim == 3:
        plane = int(plane) % labels.shape[0]
    if image is not None:
        segmenter.set_image(image, plane if labels.ndim == 3 else None)
    size = tuple(segmenter.original_size)
    if plane_labels.shape != size:
        raise ValueError(
            f"The label plane has shape {plane_labels.shape}, but the segmenter's image is "
            f"{size}: set the segmenter to the image these labels belong to."
        )
    original = plane_labels == object_id
    if not original.any():
        where = "" if plane is None else f" on plane {plane}"
        raise ValueError(
            f"Expected object id {object_id} in the labels{where}, found none; "
            f"{_present_ids(plane_labels)}."
        )
    extra, extra_labels = _check_points(points, point_labels)
    prompt_points = [extra]
    prompt_labels = [extra_labels]
    if use_point:
        prompt_points.insert(0, np.asarray([interior_point(original)], dtype=np.float64))
        prompt_labels.insert(0, np.ones(1, dtype=np.int64))
    all_points = np.concatenate(prompt_points)
    all_labels = np.concatenate(prompt_labels)
    prediction = segmenter.predict(
        points=all_points if len(all_points) else None,
        labels=all_labels if len(all_points) else None,
        box=mask_box(original, box_margin) if use_box else None,
        mask_input=original,
        multimask=multimask,
    )
    raw = np.asarray(prediction.mask, dtype=bool)
    mask = raw & ((plane_labels == 0) | original) if keep_others else raw
    return RefinedObject(
        object_id=object_id,
        plane=None if labels.ndim == 2 else int(plane),
        mask=mask,
        original=original,
        score=float(prediction.scores[prediction.best]),
        overlap=iou(mask, original),
        logits=np.asarray(prediction.logits[prediction.best], dtype=np.float32),
        raw_mask=raw,
    )


def _reason(score: float, overlap: float, empty: bool, min_score: float, min_overlap: float):
    if empty:
        return "empty mask"
    reasons = []
    if score < min_score:
        reasons.append("score below min_score")
    if overlap < min_overlap:
        reasons.append("overlap below min_overlap")
    return "; ".join(reasons) or "accepted"


def outcome(
    result: RefinedObject, min_score: float, min_overlap: float
) -> tuple[float, float, str, np.ndarray, np.ndarray]:
    """What :func:`refine_all` keeps of a refinement: score, overlap, reason, pixels.

    Returns
    -------
    score, overlap : float
    reason : str
        ``"accepted"``, or why not (see :class:`~.refine_all.ObjectRecord`).
    grow, lost : int arrays
        Flat indices into the plane of the pixels the object would gain and
        lose (the full-size masks are not kept).
    """
    empty = not result.mask.any()
    reason = _reason(result.score, result.overlap, empty, min_score, min_overlap)
    grow = np.flatnonzero(result.mask & ~result.original)
    lost = np.flatnonzero(result.original & ~result.mask)
    return result.score, result.overlap, reason, grow, lost
