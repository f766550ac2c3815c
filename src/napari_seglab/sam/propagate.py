"""Extend a 2D object through a stack (3D volume or time series), plane by plane.

From the seed plane the object is followed in both directions along axis 0.
Each plane is prompted from its neighbour's result: a positive point at the
neighbour mask's most interior pixel, the neighbour's bounding box (with a
margin) and the neighbour's low-resolution logits as mask prompt. A direction
stops at the first plane whose result is empty, scores below ``min_score``,
or overlaps the neighbour with an IoU below ``min_iou`` (the object ended or
the model lost it); that plane is left empty.

:func:`propagate_steps` is a job in the sense of :mod:`napari_seglab.jobs`: it
yields a :class:`PropagationStep` per plane and, when cancelled, raises
:class:`~napari_seglab.jobs.JobCancelled` whose ``partial`` is the volume
found so far.

With a SAM 2 model (``segmenter.model.is_sam2``) the object is tracked with
SAM 2's memory instead (:class:`~.sam2_tracker.Sam2Tracker`): the seed mask
prompts the seed plane, every other plane is segmented from the memory of the
planes already seen, forward to the last plane and then backward to plane 0.
The stopping rules ``min_score``, ``min_iou`` and ``margin`` do not apply
there (SAM 2 predicts an empty mask where it finds the object absent); planes
with fewer than ``min_area`` pixels are left empty; ``max_planes`` limits the
planes visited on each side. A cancelled SAM 2 propagation raises
:class:`~napari_seglab.jobs.JobCancelled` with ``partial`` None.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..jobs import CancelCheck, CancelLike, ProgressEvent, Stopwatch, run_to_end
from .image import SamInput

__all__ = ["PropagationStep", "propagate", "propagate_steps"]


@dataclass(frozen=True)
class PropagationStep(ProgressEvent):
    """One plane visited by :func:`propagate_steps` (``stage == "propagating"``).

    Attributes
    ----------
    done, total : int
        Planes visited so far / planes that could be visited at most.
    plane : int
    direction : int
        +1 (increasing index) or -1.
    score : float
        Model score of the chosen mask.
    iou : float
        IoU of this plane's mask with its neighbour's.
    accepted : bool
        False where the direction stopped.
    """

    plane: int = 0
    direction: int = 1
    score: float = 0.0
    iou: float = 0.0
    accepted: bool = False


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the pixel farthest from the mask border."""
    distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(row), int(col)


def _box(mask: np.ndarray, margin: float) -> np.ndarray:
    """``(row0, col0, row1, col1)`` around ``mask``, grown by ``margin`` of its size (>= 1 px)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    dr = max(1.0, margin * (r1 - r0 + 1))
    dc = max(1.0, margin * (c1 - c0 + 1))
    height, width = mask.shape
    return np.array(
        [max(r0 - dr, 0), max(c0 - dc, 0), min(r1 + dr, height - 1), min(c1 + dc, width - 1)]
    )


def propagate_steps(
    volume: np.ndarray | SamInput,
    plane: int,
    mask: np.ndarray,
    *,
    segmenter: Any,
    rgb: bool | None = None,
    min_score: float = 0.5,
    min_iou: float = 0.3,
    min_area: int = 4,
    margin: float = 0.1,
    max_planes: int | None = None,
    cancel: CancelLike = None,
) -> Generator[PropagationStep, None, np.ndarray]:
    """Generator form of :func:`propagate`: yields a step per plane, returns the mask.

    Parameters
    ----------
    volume : array ``(Z, Y, X)`` / ``(Z, Y, X, 3)`` or SamInput
        Axis 0 is the one propagated along (depth or time).
    plane : int
        Index of the seed plane.
    mask : array ``(Y, X)``
        The object on the seed plane (bool, or labels > 0).
    segmenter : PromptSegmenter or compatible
        Anything with ``set_image(volume, plane)`` and
        ``predict(points, labels, box, mask_input, multimask) -> Prediction``.
        With a SAM 2 model (``segmenter.model.is_sam2``) only ``model`` and
        ``cache`` are used (memory tracking, see the module notes).
    rgb : bool, optional
        Whether the last axis of ``volume`` is colour (None: guess).
    min_score : float
        Stop where the model's score falls below this.
    min_iou : float
        Stop where the IoU with the neighbour plane's mask falls below this.
    min_area : int
        Stop where the mask has fewer pixels.
    margin : float
        Growth of the neighbour's bounding box, as a fraction of its size.
    max_planes : int, optional
        Visit at most this many planes in each direction.
    cancel : threading.Event or callable, optional
        Checked before each plane.

    Returns
    -------
    array ``(Z, Y, X)`` bool
        Generator return value; the seed plane holds ``mask``.

    Raises
    ------
    JobCancelled
        When ``cancel`` is set; ``partial`` is the volume found so far (None with
        SAM 2, whose tracker keeps nothing of a cancelled run).
    """
    source = volume if isinstance(volume, SamInput) else SamInput(volume, rgb=rgb)
    if not source.is_stack:
        raise ValueError(
            f"Expected a stack (Z, Y, X) to propagate through, got a 2D image of shape "
            f"{np.shape(source.data)}."
        )
    n_planes = source.n_planes
    if not 0 <= plane < n_planes:
        raise ValueError(f"Seed plane {plane} is out of range for a stack of {n_planes} planes.")
    seed = np.asarray(mask) > 0
    if seed.shape != source.plane_shape:
        raise ValueError(
            f"Expected a seed mask of the plane shape {source.plane_shape}, got {seed.shape}."
        )
    if not seed.any():
        raise ValueError("The seed mask is empty: draw or predict the object on the seed plane.")
    if getattr(getattr(segmenter, "model", None), "is_sam2", False):
        return (
            yield from _sam2_steps(source, plane, seed, segmenter, min_area, max_planes, cancel)
        )
    check = CancelCheck(cancel)
    clock = Stopwatch()
    result = np.zeros((n_planes, *source.plane_shape), dtype=bool)
    result[plane] = seed
    reach = n_planes if max_planes is None else int(max_planes)
    total = min(plane, reach) + min(n_planes - 1 - plane, reach)
    done = 0
    seed_logits = None
    for direction in (+1, -1):
        previous, previous_logits = seed, seed_logits
        index = plane + direction
        steps = 0
        while 0 <= index < n_planes and steps < reach:
            check.raise_if_set("Propagation", partial=result)
            segmenter.set_image(source, index)
            row, col = _interior_point(previous)
            prediction = segmenter.predict(
                points=[[row, col]],
                labels=[1],
                box=_box(previous, margin),
                mask_input=previous if previous_logits is None else previous_logits,
                multimask=False,
            )
            current = np.asarray(prediction.mask, dtype=bool)
            score = float(prediction.scores[prediction.best])
            iou = _iou(current, previous)
            accepted = (
                np.count_nonzero(current) >= min_area and score >= min_score and iou >= min_iou
            )
            done += 1
            yield PropagationStep(
                "propagating",
                done,
                total,
                clock.elapsed,
                plane=index,
                direction=direction,
                score=score,
                iou=iou,
                accepted=bool(accepted),
            )
            if not accepted:
                break
            result[index] = current
            logits = getattr(prediction, "logits", None)
            previous = current
            previous_logits = None if logits is None else np.asarray(logits)[prediction.best]
            index += direction
            steps += 1
    return result


def _sam2_steps(
    source: SamInput,
    plane: int,
    seed: np.ndarray,
    segmenter: Any,
    min_area: int,
    max_planes: int | None,
    cancel: CancelLike,
) -> Generator[PropagationStep, None, np.ndarray]:
    """:func:`propagate_steps` with SAM 2's memory: the seed mask prompts ``plane``."""
    from .sam2_tracker import Sam2Tracker

    tracker = Sam2Tracker(segmenter.model, source, cache=getattr(segmenter, "cache", None))
    tracker.set_mask(plane, 1, seed)
    within = None
    if max_planes is not None:
        within = (max(plane - int(max_planes), 0), plane + int(max_planes))
    job = tracker.propagate_steps([1], within=within, cancel=cancel)
    while True:
        try:
            step = next(job)
        except StopIteration as stop:
            volume = stop.value[1]
            break
        yield PropagationStep(
            "propagating",
            step.done,
            step.total,
            step.elapsed,
            plane=step.plane,
            direction=step.direction,
            score=float("nan"),
            iou=float("nan"),
            accepted=step.area >= min_area,
        )
    small = volume.sum(axis=(1, 2)) < min_area
    volume[small] = False
    volume[plane] = seed
    return volume


def propagate(
    volume: np.ndarray | SamInput,
    plane: int,
    mask: np.ndarray,
    *,
    segmenter: Any,
    **options: Any,
) -> np.ndarray:
    """Extend ``mask`` on ``plane`` through the stack in both directions.

    Parameters and stopping rules: see :func:`propagate_steps` (this runs it to
    the end). Works the same for a time series ``(T, Y, X)``.

    Returns
    -------
    array ``(Z, Y, X)`` bool

    Raises
    ------
    JobCancelled
        When ``cancel`` (in ``options``) is set; ``partial`` is the volume so far.
    """
    return run_to_end(propagate_steps(volume, plane, mask, segmenter=segmenter, **options))
