"""Training objects and prompt sampling for SAM decoder fine-tuning.

An *object* is one connected component of one label value in one annotated
plane (instance labels: usually one object per id and plane; semantic labels:
every blob of a class). For each object this module keeps what prompt
sampling needs, computed once: its bounding box, candidate pixels inside and
just outside it, its most interior pixel, and its mask (cropped to the box).

Coordinates are napari's: ``(row, col)`` pixels of the original plane; boxes
are ``(row0, col0, row1, col1)`` (first and last pixel of the object).
:func:`to_model_xy` is the one conversion to SAM's ``(x, y)`` in the resized
encoder frame, the same arithmetic as :class:`~.prompt.PromptSegmenter`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "PROMPT_KINDS",
    "AnnotatedObject",
    "PromptBatch",
    "PromptRecipe",
    "collect_objects",
    "low_res_target_crops",
    "low_res_targets",
    "sample_prompts",
    "to_model_xy",
    "validation_prompts",
]

#: Prompt kinds accepted by :class:`PromptRecipe`.
PROMPT_KINDS = ("box", "points", "mixed")

#: Candidate pixels kept per object for point sampling (inside and outside).
CANDIDATES = 128


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
class AnnotatedObject:
    """One object of one annotated plane.

    Attributes
    ----------
    plane : int
        Index of the plane in the fine-tuning plane list (and embedding store).
    label : int
        Label value it came from.
    bbox : array ``(4,)`` float
        ``(row0, col0, row1, col1)``, first and last pixel of the object.
    inside : array ``(n, 2)`` int32
        Candidate positive points ``(row, col)`` (a random subset of the object).
    outside : array ``(m, 2)`` int32
        Candidate negative points: background pixels within a margin around
        the object (may be empty).
    centre : array ``(2,)`` float
        The most interior pixel (largest distance to the boundary), where a
        user would click.
    mask : array ``(h, w)`` bool
        The object inside its box; ``offset`` is the box's top-left pixel.
    offset : (int, int)
    area : int
        Pixels in the object.
    """

    plane: int
    label: int
    bbox: np.ndarray
    inside: np.ndarray
    outside: np.ndarray
    centre: np.ndarray
    mask: np.ndarray
    offset: tuple[int, int]
    area: int

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The object as a ``shape`` bool mask."""
        out = np.zeros(shape, dtype=bool)
        r, c = self.offset
        out[r : r + self.mask.shape[0], c : c + self.mask.shape[1]] = self.mask
        return out


def collect_objects(
    labels: np.ndarray,
    plane: int,
    rng: np.random.Generator,
    *,
    min_pixels: int = 16,
) -> list[AnnotatedObject]:
    """The objects of one label plane.

    Parameters
    ----------
    labels : array ``(Y, X)`` int
        0 is background; each value's connected components (8-connectivity)
        are separate objects, so semantic and instance labels both work.
    plane : int
        Stored in each object (index into the fine-tuning plane list).
    rng : numpy.random.Generator
        Chooses the candidate point subsets.
    min_pixels : int
        Smaller components are ignored (annotation specks).

    Returns
    -------
    list of AnnotatedObject
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"Expected a label plane (Y, X), got shape {labels.shape}.")
    height, width = labels.shape
    objects: list[AnnotatedObject] = []
    structure = np.ones((3, 3), dtype=bool)
    for value, region in enumerate(ndi.find_objects(labels.astype(np.int64, copy=False)), 1):
        if region is None:
            continue
        components, _count = ndi.label(labels[region] == value, structure=structure)
        for index, sub in enumerate(ndi.find_objects(components), 1):
            if sub is None:
                continue
            mask = components[sub] == index
            area = int(mask.sum())
            if area < min_pixels:
                continue
            r0 = region[0].start + sub[0].start
            c0 = region[1].start + sub[1].start
            h, w = mask.shape
            inside = np.argwhere(mask) + (r0, c0)
            if len(inside) > CANDIDATES:
                inside = inside[rng.choice(len(inside), CANDIDATES, replace=False)]
            # Interior-most pixel: maximum of the distance to the background.
            distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            centre = np.asarray(np.unravel_index(np.argmax(distance), mask.shape), float)
            # Negatives: background within a margin of a quarter of the box size.
            margin = max(2, round(0.25 * max(h, w)))
            rr = slice(max(r0 - margin, 0), min(r0 + h + margin, height))
            cc = slice(max(c0 - margin, 0), min(c0 + w + margin, width))
            outside = np.argwhere(labels[rr, cc] == 0) + (rr.start, cc.start)
            if len(outside) > CANDIDATES:
                outside = outside[rng.choice(len(outside), CANDIDATES, replace=False)]
            objects.append(
                AnnotatedObject(
                    plane=plane,
                    label=value,
                    bbox=np.array([r0, c0, r0 + h - 1, c0 + w - 1], dtype=float),
                    inside=inside.astype(np.int32),
                    outside=outside.astype(np.int32).reshape(-1, 2),
                    centre=centre + (r0, c0),
                    mask=mask,
                    offset=(int(r0), int(c0)),
                    area=area,
                )
            )
    return objects


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


def to_model_xy(
    rows_cols: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """``(..., 2)`` ``(row, col)`` pixels -> SAM ``(x, y)`` in the resized encoder frame.

    Same arithmetic as ``PromptSegmenter._to_model_frame`` (a test checks that
    fine-tuning and prompting agree).
    """
    (old_h, old_w), (new_h, new_w) = original_size, input_size
    xy = np.asarray(rows_cols, dtype=np.float64)[..., ::-1].copy()
    xy[..., 0] *= new_w / old_w
    xy[..., 1] *= new_h / old_h
    return xy


def low_res_target_crops(
    objects: list[AnnotatedObject],
    shape: tuple[int, int],
    input_size: tuple[int, int],
    img_size: int,
    low_res: int,
) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Each object's mask in the frame of SAM's low-resolution logits, as a crop.

    The mask is resized like the image (bilinear, long side to ``img_size``,
    as ``F.interpolate(..., align_corners=False)`` does it), padded to
    ``img_size`` and area-averaged to ``low_res``: values are the object's
    coverage of each low-res cell, in ``[0, 1]``. Only the cells around the
    object are computed, so the cost follows the object's size, not the image's.

    Returns
    -------
    list of (array ``(h, w)`` float32, (row, col))
        The crop of the ``(low_res, low_res)`` target that holds the object,
        and the crop's top-left cell.
    """
    factor = img_size // low_res
    if factor * low_res != img_size:
        raise ValueError(f"Expected img_size divisible by low_res, got {img_size}, {low_res}.")
    height, width = shape
    in_h, in_w = input_size
    margin = 2
    out = []
    for obj in objects:
        r0, c0 = obj.offset
        padded = np.pad(obj.mask.astype(np.float64), margin)
        axes = []
        for start, extent, size, new in (
            (r0, obj.mask.shape[0], height, in_h),
            (c0, obj.mask.shape[1], width, in_w),
        ):
            scale = size / new  # torch's source step for an explicit output size
            first = max(0, int(np.floor((start - 1 + 0.5) / scale - 0.5)))
            last = min(new, int(np.ceil((start + extent + 0.5) / scale - 0.5)) + 1)
            cell0, cell1 = first // factor, min(low_res, -(-last // factor))
            dst = np.arange(cell0 * factor, cell1 * factor)
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
            i0 = np.floor(src).astype(np.int64)
            i1 = i0 + (i0 < size - 1)
            weight = src - i0
            # Index into the padded crop; anything beyond it is background.
            local0 = np.clip(i0 - start + margin, 0, padded.shape[len(axes)] - 1)
            local1 = np.clip(i1 - start + margin, 0, padded.shape[len(axes)] - 1)
            axes.append((cell0, cell1, dst < new, local0, local1, weight))
        (y_cell0, y_cell1, y_in, y0, y1, wy), (x_cell0, x_cell1, x_in, x0, x1, wx) = axes
        top = (1 - wx) * padded[np.ix_(y0, x0)] + wx * padded[np.ix_(y0, x1)]
        bottom = (1 - wx) * padded[np.ix_(y1, x0)] + wx * padded[np.ix_(y1, x1)]
        resized = (1 - wy)[:, None] * top + wy[:, None] * bottom
        resized *= y_in[:, None] & x_in[None, :]  # zero padding beyond the resized image
        cells = resized.reshape(y_cell1 - y_cell0, factor, x_cell1 - x_cell0, factor).mean((1, 3))
        out.append((cells.astype(np.float32), (y_cell0, x_cell0)))
    return out


def low_res_targets(
    objects: list[AnnotatedObject],
    shape: tuple[int, int],
    input_size: tuple[int, int],
    img_size: int,
    low_res: int,
) -> torch.Tensor:
    """Full ``(n, low_res, low_res)`` float32 targets (see :func:`low_res_target_crops`)."""
    import torch

    full = torch.zeros((len(objects), low_res, low_res))
    for k, (crop, (r, c)) in enumerate(
        low_res_target_crops(objects, shape, input_size, img_size, low_res)
    ):
        full[k, r : r + crop.shape[0], c : c + crop.shape[1]] = torch.from_numpy(crop)
    return full
