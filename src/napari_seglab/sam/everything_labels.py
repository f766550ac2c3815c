"""Label images of segment everything (:mod:`.everything`): objects painted by area, and ids
linked across the planes of a stack.

:func:`label_objects` paints one plane. In a stack each plane is segmented on
its own; then (:func:`link_planes`), going up the stack, an object of plane
``z + 1`` takes the id of the object of plane ``z`` it overlaps best, when
their IoU (of their visible pixels in the label image) is at least
``link_iou`` and that object was not taken by a better-overlapping one
(one-to-one, greedy by IoU); otherwise it gets a new id. An object that skips
a plane therefore gets a new id.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["label_objects", "link_planes", "match_ids"]


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
        # sized by the records too: an object hidden under smaller ones (or empty) has an
        # id no pixel of the plane carries
        top = max([int(plane.max()), *(int(r["id"]) for r in plane_records)])
        lut = np.zeros(top + 1, dtype=np.int32)
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


def label_objects(
    objects: list[dict], shape: tuple[int, int]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Paint the objects into a label image ``(Y, X)`` int32 and make their records.

    Ids ``1..N`` by area, largest first (ties keep the generator's order);
    painted in id order, so smaller objects lie on top.
    """
    areas = [int(np.count_nonzero(obj["segmentation"])) for obj in objects]
    order = sorted(range(len(objects)), key=lambda i: -areas[i])
    labels = np.zeros(shape, dtype=np.int32)
    for number, i in enumerate(order, start=1):
        labels[objects[i]["segmentation"]] = number
    visible = np.bincount(labels.ravel(), minlength=len(objects) + 1)
    records = []
    for number, i in enumerate(order, start=1):
        obj = objects[i]
        x0, y0, x1, y1 = obj["box"]
        cx0, cy0, cx1, cy1 = obj["crop"]
        records.append(
            {
                "id": number,
                "segmentation": obj["segmentation"],
                "area": areas[i],
                "visible_area": int(visible[number]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": obj["predicted_iou"],
                "point_coords": [obj["point"]],
                "stability_score": obj["stability_score"],
                "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            }
        )
    return labels, records
