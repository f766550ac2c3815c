"""Prompts drawn from the ground truth: the recipe, training samples, validation prompts.

Coordinates are napari's: ``(row, col)`` pixels of the object's plane; boxes
are ``(row0, col0, row1, col1)``. The conversion to SAM's frame happens later,
in :func:`napari_seglab.sam.frames.to_model_xy`, as for interactive prompting.

The ``"mask"`` kind trains what refining an existing label sends
(:func:`napari_seglab.sam.refine.refine_object`): a shrunken or grown copy of
the ground truth as mask prompt, with that copy's box and interior point
(:mod:`napari_seglab.sam.mask_prompts`); the target is the ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..mask_prompts import DEFAULT_BOX_MARGIN, change_mask, interior_point, mask_box
from .data import AnnotatedObject

__all__ = [
    "PROMPT_KINDS",
    "PromptBatch",
    "PromptRecipe",
    "mask_prompts",
    "sample_prompts",
    "validation_prompts",
]

#: Prompt kinds accepted by :class:`PromptRecipe`.
PROMPT_KINDS = ("box", "points", "mixed", "mask")


@dataclass(frozen=True)
class PromptRecipe:
    """How prompts are drawn from the ground truth during fine-tuning.

    Attributes
    ----------
    kind : {"box", "points", "mixed", "mask"}
        ``"mixed"`` draws boxes for half of the steps and points for the other half.
        ``"mask"`` prompts with a changed copy of the object (see ``mask_change``)
        as mask input, plus that copy's box and most interior pixel, as
        refining an existing label does.
    max_points : int
        Each point prompt has 1..``max_points`` positive points, drawn
        uniformly inside the object.
    max_negatives : int
        And 0..``max_negatives`` negative points just outside it (0: none).
    box_jitter : float
        Each box side moves by up to this fraction of the box size (a user
        never draws the exact bounding box).
    correction_rounds : int
        Extra rounds per step: a point is drawn in the error region of the
        previous prediction (positive where the object was missed, negative
        where it overflowed) and the previous logits are fed back as mask
        input, like a user correcting a mask.
    mask_change : float
        ``"mask"`` prompts: the ground truth shrunk or grown by up to this
        fraction of its equivalent radius ``sqrt(area / pi)`` (drawn uniformly;
        validation shrinks by half of it).
    """

    kind: str = "mixed"
    max_points: int = 3
    max_negatives: int = 1
    box_jitter: float = 0.1
    correction_rounds: int = 0
    mask_change: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"Expected prompt kind one of {PROMPT_KINDS}, got {self.kind!r}.")
        if self.max_points < 1 or self.max_negatives < 0 or self.correction_rounds < 0:
            raise ValueError(
                "Expected max_points >= 1, max_negatives >= 0 and correction_rounds >= 0, got "
                f"{self.max_points}, {self.max_negatives}, {self.correction_rounds}."
            )
        if not 0.0 <= self.box_jitter < 1.0:
            raise ValueError(f"Expected box_jitter in [0, 1), got {self.box_jitter}.")
        if not 0.0 <= self.mask_change < 1.0:
            raise ValueError(f"Expected mask_change in [0, 1), got {self.mask_change}.")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Concrete kinds trained and validated: box, points, both (``"mixed"``) or mask."""
        return ("box", "points") if self.kind == "mixed" else (self.kind,)

    def to_dict(self) -> dict:
        """Plain dict (stored in decoder checkpoints)."""
        return asdict(self)


@dataclass
class PromptBatch:
    """Prompts for a batch of objects, in ``(row, col)`` pixels of each object's plane.

    Attributes
    ----------
    points : array ``(B, N, 2)`` float or None
    point_labels : array ``(B, N)`` int or None
        1 positive, 0 negative, -1 padding (SAM's "not a point").
    boxes : array ``(B, 4)`` float or None
        ``(row0, col0, row1, col1)``.
    masks : list of bool arrays ``(Y, X)`` or None
        Mask prompts, one per object, the size of the object's plane.
    """

    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    masks: list[np.ndarray] | None = None


def _pick(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows of ``candidates`` (with replacement only when there are too few)."""
    if count == 0:
        return np.zeros((0, 2))
    replace = len(candidates) < count
    return candidates[rng.choice(len(candidates), count, replace=replace)].astype(float)


def sample_prompts(
    objects: list[AnnotatedObject],
    kind: str,
    recipe: PromptRecipe,
    rng: np.random.Generator,
    shapes: list[tuple[int, int]],
) -> PromptBatch:
    """Random training prompts of one kind for ``objects``.

    Parameters
    ----------
    objects : list of AnnotatedObject
    kind : {"box", "points", "mask"}
    recipe : PromptRecipe
    rng : numpy.random.Generator
    shapes : list of (int, int)
        ``(Y, X)`` of each object's plane (boxes are clipped to it).

    Returns
    -------
    PromptBatch
        Every object gets the same number of points in a batch (1..max_points
        positives, 0..max_negatives negatives, drawn once per batch); an
        object with no background nearby gets padding instead of negatives.
        ``"mask"``: per object a changed copy as mask, its box and interior point.
    """
    if kind == "mask":
        change = [rng.uniform(-1.0, 1.0) * recipe.mask_change for _ in objects]
        return mask_prompts(objects, shapes, change)
    if kind == "box":
        boxes = np.stack([o.bbox for o in objects]).astype(float)
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2] + 1] * 2, axis=1)
        boxes += rng.uniform(-recipe.box_jitter, recipe.box_jitter, boxes.shape) * size
        limits = np.array([[h - 1, w - 1, h - 1, w - 1] for h, w in shapes], dtype=float)
        boxes = np.clip(boxes, 0.0, limits)
        # Keep the corners ordered even after a large jitter.
        boxes = np.concatenate(
            [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1
        )
        return PromptBatch(boxes=boxes)
    if kind != "points":
        raise ValueError(f"Expected a prompt kind 'box', 'points' or 'mask', got {kind!r}.")
    n_pos = int(rng.integers(1, recipe.max_points + 1))
    n_neg = int(rng.integers(0, recipe.max_negatives + 1))
    points = np.zeros((len(objects), n_pos + n_neg, 2))
    labels = np.ones((len(objects), n_pos + n_neg), dtype=np.int64)
    labels[:, n_pos:] = 0
    for i, obj in enumerate(objects):
        points[i, :n_pos] = _pick(obj.inside, n_pos, rng)
        if n_neg:
            if len(obj.outside):
                points[i, n_pos:] = _pick(obj.outside, n_neg, rng)
            else:
                labels[i, n_pos:] = -1
    return PromptBatch(points=points, point_labels=labels)


def mask_prompts(
    objects: list[AnnotatedObject], shapes: list[tuple[int, int]], change: list[float]
) -> PromptBatch:
    """Mask prompts: each object changed by ``change[i]`` of its equivalent radius.

    The changed mask is the mask prompt; its box (grown by
    :data:`~napari_seglab.sam.mask_prompts.DEFAULT_BOX_MARGIN`) and its most
    interior pixel (one positive point) come with it, as in
    :func:`napari_seglab.sam.refine.refine_object`.
    """
    masks, points, boxes = [], [], []
    for obj, shape, fraction in zip(objects, shapes, change):
        full = obj.full_mask(shape)
        radius = float(np.sqrt(obj.area / np.pi))
        changed = change_mask(full, fraction * radius)
        masks.append(changed)
        points.append(interior_point(changed))
        boxes.append(mask_box(changed, DEFAULT_BOX_MARGIN))
    return PromptBatch(
        points=np.asarray(points, dtype=float)[:, None, :],
        point_labels=np.ones((len(objects), 1), np.int64),
        boxes=np.stack(boxes),
        masks=masks,
    )


def validation_prompts(
    objects: list[AnnotatedObject],
    kind: str,
    shapes: list[tuple[int, int]] | None = None,
    recipe: PromptRecipe | None = None,
) -> PromptBatch:
    """Deterministic prompts for validation: the exact box, or one click at the centre.

    ``"mask"`` (needs ``shapes``, the plane ``(Y, X)`` of each object): the
    object shrunk by half of ``recipe.mask_change`` of its equivalent radius.
    """
    if kind == "mask":
        if shapes is None:
            raise ValueError("Expected the plane shape of each object for mask prompts, got None.")
        half = 0.5 * (recipe or PromptRecipe()).mask_change
        return mask_prompts(objects, shapes, [-half] * len(objects))
    if kind == "box":
        return PromptBatch(boxes=np.stack([o.bbox for o in objects]).astype(float))
    if kind == "points":
        points = np.stack([o.centre for o in objects])[:, None, :].astype(float)
        return PromptBatch(points=points, point_labels=np.ones((len(objects), 1), np.int64))
    raise ValueError(f"Expected a prompt kind 'box', 'points' or 'mask', got {kind!r}.")
