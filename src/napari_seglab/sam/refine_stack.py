"""Refining the objects of a label stack through propagation instead of plane by plane.

For each object: its largest plane (the seed) is refined with
:func:`.refine.refine_object`; the refined seed is then carried through the
object's planes by :func:`.propagate.propagate_steps` (each plane prompted from
its neighbour's refined result: interior point, grown box, the neighbour's
logits as mask prompt), so the planes agree with each other. Each plane's
result is then judged on its own against the object's original mask on that
plane (``min_score``, ``min_overlap``), like the plane-by-plane mode. Planes
where propagation stopped (score, IoU with the neighbour or size too low)
keep their original mask (reason ``"propagation stopped"``).

Cost: every object visits every plane it spans, so the segmenter's embedding
cache should hold the stack's planes (a :func:`~.refine_all.refine_all` given
a model makes such a segmenter), or the embeddings are computed again per object.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..jobs import CancelCheck, JobCancelled, Stopwatch
from .image import SamInput
from .propagate import propagate_steps
from .refine import RefinedObject, RefineStep, iou, outcome, refine_object

__all__ = ["MIN_NEIGHBOUR_IOU", "propagated_refinements"]

#: Propagation stops at a plane whose mask overlaps its neighbour's by less (IoU).
MIN_NEIGHBOUR_IOU = 0.3

Outcome = tuple[float, float, str, np.ndarray, np.ndarray]


def propagated_refinements(
    segmenter: Any,
    source: SamInput,
    labels: np.ndarray,
    spans: dict[int, list[int]],
    *,
    min_score: float,
    min_overlap: float,
    prompt: dict[str, Any],
    check: CancelCheck,
    clock: Stopwatch,
    total: int,
    by_plane: dict[int, dict[int, Outcome]],
) -> Generator[RefineStep, None, None]:
    """Refine each object of ``spans`` (id -> planes where it appears) by propagation.

    Fills ``by_plane[z][id]`` with :func:`.refine.outcome` tuples and yields a
    :class:`~.refine.RefineStep` per object and plane (``done`` counts up to
    ``total``). ``prompt`` holds ``refine_object``'s prompt options.

    Raises
    ------
    JobCancelled
        When ``check`` is set (``partial`` None).
    """
    done = 0
    for object_id, planes in spans.items():
        check.raise_if_set("Refining labels")
        areas = [int(np.count_nonzero(labels[z] == object_id)) for z in planes]
        seed = planes[int(np.argmax(areas))]
        segmenter.set_image(source, seed)
        first = refine_object(segmenter, labels, object_id, plane=seed, **prompt)
        by_plane.setdefault(seed, {})[object_id] = outcome(first, min_score, min_overlap)
        done += 1
        accepted = by_plane[seed][object_id][2] == "accepted"
        yield RefineStep(
            "refining",
            done,
            total,
            clock.elapsed,
            object_id=object_id,
            plane=seed,
            accepted=accepted,
        )
        others = [z for z in planes if z != seed]
        if not others:
            continue
        volume, scores = None, {}
        if first.mask.any():
            reach = max(abs(z - seed) for z in others)
            job = propagate_steps(
                source,
                seed,
                first.mask,
                segmenter=segmenter,
                min_score=min_score,
                min_iou=MIN_NEIGHBOUR_IOU,
                margin=prompt.get("box_margin", 0.1),
                max_planes=reach,
                cancel=check,
            )
            try:
                while True:
                    step = next(job)
                    scores[step.plane] = (step.score, step.accepted)
            except StopIteration as stop:
                volume = stop.value
            except JobCancelled as cancelled:
                raise JobCancelled(str(cancelled)) from None
        for z in others:
            plane_labels = labels[z]
            original = plane_labels == object_id
            score, reached = scores.get(z, (0.0, False))
            if volume is not None and reached:
                mask = volume[z] & ((plane_labels == 0) | original)
                result = RefinedObject(
                    object_id=object_id,
                    plane=z,
                    mask=mask,
                    original=original,
                    score=score,
                    overlap=iou(mask, original),
                    logits=first.logits,
                    raw_mask=volume[z],
                )
                by_plane.setdefault(z, {})[object_id] = outcome(result, min_score, min_overlap)
            else:
                empty = np.zeros(0, dtype=np.intp)
                stopped = (score, 0.0, "propagation stopped", empty, empty)
                by_plane.setdefault(z, {})[object_id] = stopped
            done += 1
            accepted = by_plane[z][object_id][2] == "accepted"
            yield RefineStep(
                "refining",
                done,
                total,
                clock.elapsed,
                object_id=object_id,
                plane=z,
                accepted=accepted,
            )
