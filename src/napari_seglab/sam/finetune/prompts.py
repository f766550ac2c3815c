"""Prompts drawn from the ground truth: the recipe, training samples, validation prompts.

Coordinates are napari's: ``(row, col)`` pixels of the object's plane; boxes
are ``(row0, col0, row1, col1)``. The conversion to SAM's frame happens later,
in :func:`napari_seglab.sam.frames.to_model_xy`, as for interactive prompting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .data import AnnotatedObject

__all__ = [
    "PROMPT_KINDS",
    "PromptBatch",
    "PromptRecipe",
    "sample_prompts",
    "validation_prompts",
]

#: Prompt kinds accepted by :class:`PromptRecipe`.
PROMPT_KINDS = ("box", "points", "mixed")


@dataclass(frozen=True)
class PromptRecipe:
    """How prompts are drawn from the ground truth during fine-tuning.

    Attributes
    ----------
    kind : {"box", "points", "mixed"}
        ``"mixed"`` draws boxes for half of the steps and points for the other half.
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
    """

    kind: str = "mixed"
    max_points: int = 3
    max_negatives: int = 1
    box_jitter: float = 0.1
    correction_rounds: int = 0

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

    @property
    def kinds(self) -> tuple[str, ...]:
        """Concrete kinds trained and validated: ``("box",)``, ``("points",)`` or both."""
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
    """

    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None


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
    kind : {"box", "points"}
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
    """
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
        raise ValueError(f"Expected a prompt kind 'box' or 'points', got {kind!r}.")
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


def validation_prompts(objects: list[AnnotatedObject], kind: str) -> PromptBatch:
    """Deterministic prompts for validation: the exact box, or one click at the centre."""
    if kind == "box":
        return PromptBatch(boxes=np.stack([o.bbox for o in objects]).astype(float))
    if kind == "points":
        points = np.stack([o.centre for o in objects])[:, None, :].astype(float)
        return PromptBatch(points=points, point_labels=np.ones((len(objects), 1), np.int64))
    raise ValueError(f"Expected a prompt kind 'box' or 'points', got {kind!r}.")
