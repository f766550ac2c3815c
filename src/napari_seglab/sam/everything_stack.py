"""Segment everything in a stack: plane by plane, with ids linked across planes.

Each plane is segmented on its own (:func:`.everything.segment_plane_job`);
then, going up the stack, an object of plane ``z + 1`` takes the id of the
object of plane ``z`` it overlaps best, when their IoU (of their visible
pixels in the label image) is at least ``link_iou`` and that object was not
taken by a better-overlapping one (one-to-one, greedy by IoU); otherwise it
gets a new id. An object that skips a plane therefore gets a new id.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..jobs import ProgressEvent, Stopwatch

if TYPE_CHECKING:  # pragma: no cover
    from .embedding import EmbeddingCache
    from .everything import EverythingResult
    from .everything_grid import EverythingSettings
    from .image import SamInput
    from .model import SamModel

__all__ = ["link_planes", "match_ids", "segment_stack_job"]


def match_ids(previous: np.ndarray, current: np.ndarray, min_iou: float) -> dict[int, int]:
    """One-to-one matches ``{current id: previous id}`` of two label planes ``(Y, X)``.

    Pairs are taken in order of decreasing IoU while both ids are free and the
    IoU is at least ``min_iou`` (ties: lower ids first).
    """
    prev = previous.ravel().astype(np.int64)
    cur = current.ravel().astype(np.int64)
    both = (prev > 0) & (cur > 0)
    if not both.any():
        return {}
    width = int(cur.max()) + 1
    pairs, overlap = np.unique(prev[both] * width + cur[both], return_counts=True)
    prev_ids, cur_ids = pairs // width, pairs % width
    prev_area = np.bincount(prev, minlength=int(prev.max()) + 1)
    cur_area = np.bincount(cur, minlength=width)
    iou = overlap / (prev_area[prev_ids] + cur_area[cur_ids] - overlap)
    order = np.lexsort((cur_ids, prev_ids, -iou))
    taken_prev: set[int] = set()
    matches: dict[int, int] = {}
    for k in order:
        if iou[k] < min_iou:
            break
        p, c = int(prev_ids[k]), int(cur_ids[k])
        if p in taken_prev or c in matches:
            continue
        matches[c] = p
        taken_prev.add(p)
    return matches


def link_planes(
    planes: list[np.ndarray], records: list[list[dict[str, Any]]], min_iou: float = 0.5
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Stack per-plane label images ``(Y, X)`` into ``(Z, Y, X)`` with linked ids.

    ``records[z]`` are plane ``z``'s object records (their ``id`` is the
    plane's own id); returned records carry the linked ``id`` and ``plane``.
    """
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"Expected link_iou in (0, 1], got {min_iou!r}.")
    out = np.zeros((len(planes), *planes[0].shape), dtype=np.int32)
    linked: list[dict[str, Any]] = []
    next_id = 1
    for z, (plane, plane_records) in enumerate(zip(planes, records)):
        matches = match_ids(out[z - 1], plane, min_iou) if z else {}
        lut = np.zeros(int(plane.max()) + 1, dtype=np.int32)
        for record in plane_records:  # records are in the plane's id order
            local = int(record["id"])
            if local in matches:
                lut[local] = matches[local]
            else:
                lut[local] = next_id
                next_id += 1
            linked.append({**record, "id": int(lut[local]), "plane": z})
        out[z] = lut[plane]
    return out, linked


def segment_stack_job(
    model: SamModel,
    source: SamInput,
    options: EverythingSettings,
    cache: EmbeddingCache,
    cancel: Any,
    link_iou: float,
) -> Generator[ProgressEvent, None, EverythingResult]:
    """Segment every plane of ``source`` (a stack) and link the ids; a job."""
    from .everything import EverythingResult, batches_per_plane, segment_plane_job

    if not 0.0 < link_iou <= 1.0:
        raise ValueError(f"Expected link_iou in (0, 1], got {link_iou!r}.")
    clock = Stopwatch()
    per_plane = batches_per_plane(source.plane_shape, options)
    total = per_plane * source.n_planes
    planes, records = [], []
    for z in range(source.n_planes):
        labels, objects = yield from segment_plane_job(
            model,
            source.plane(z),
            options,
            cache=cache,
            cancel=cancel,
            stage=f"segment everything, plane {z}",
            offset=z * per_plane,
            total=total,
            clock=clock,
        )
        planes.append(labels)
        records.append(objects)
    labels, objects = link_planes(planes, records, link_iou)
    return EverythingResult(labels, objects, options)
