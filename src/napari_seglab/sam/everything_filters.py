"""Mask filters of segment everything (:mod:`.everything`): stability, boxes, crop edges,
duplicates and small regions.

Each follows the definition used by ``segment_anything``'s
``SamAutomaticMaskGenerator``, so that the same proposals survive; the small
region removal uses :func:`scipy.ndimage.label` (8-connected) where the
official generator needs OpenCV. Boxes are ``(x0, y0, x1, y1)`` with ``x1``,
``y1`` the last pixel inside (not one past it), as in the official generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CROP_EDGE_TOLERANCE",
    "clean_small_regions",
    "mask_boxes",
    "near_crop_edge",
    "non_max_suppression",
    "remove_small_regions",
    "stability_scores",
    "upsample_crop_logits",
]

#: Pixels within which a box side counts as lying on a crop's edge.
CROP_EDGE_TOLERANCE = 20.0


def upsample_crop_logits(
    low_res: torch.Tensor, input_size: tuple[int, int], size: tuple[int, int], img_size: int
) -> torch.Tensor:
    """Low-res logits ``(R, L, L)`` -> logits of the plane (or crop) ``(R, Y, X)``.

    ``Sam.postprocess_masks`` (as :func:`.frames.upsample_logits`), keeping the
    logits: the stability score needs them at two thresholds.
    """
    import torch.nn.functional as F

    square = (img_size, img_size)
    up = F.interpolate(low_res[:, None], square, mode="bilinear", align_corners=False)
    up = up[..., : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(size):  # (resizing to the same size is the identity)
        up = F.interpolate(up, tuple(size), mode="bilinear", align_corners=False)
    return up[:, 0]


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of each mask thresholded at ``threshold + offset`` and ``threshold - offset``.

    The higher threshold's mask lies inside the lower one's, so the IoU is the
    ratio of their pixel counts. ``logits`` ``(R, Y, X)``; returns ``(R,)`` float32.
    """
    import torch

    flat = logits.flatten(1)
    inner = torch.count_nonzero(flat > threshold + offset, dim=1)
    outer = torch.count_nonzero(flat > threshold - offset, dim=1)
    return inner.to(torch.int32) / outer.to(torch.int32)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(x0, y0, x1, y1)`` of the first and last pixel of each mask ``(R, Y, X)`` bool.

    An empty mask gets ``(0, 0, 0, 0)``. Returns ``(R, 4)`` int64.
    """
    import torch

    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.int64)
    rows = masks.any(dim=-1).to(torch.uint8)  # (R, Y)
    cols = masks.any(dim=-2).to(torch.uint8)  # (R, X)
    top = rows.argmax(dim=-1)
    bottom = rows.shape[-1] - 1 - rows.flip(-1).argmax(dim=-1)
    left = cols.argmax(dim=-1)
    right = cols.shape[-1] - 1 - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    boxes[rows.amax(dim=-1) == 0] = 0
    return boxes


def near_crop_edge(
    boxes: torch.Tensor,
    crop: tuple[int, int, int, int],
    image_box: tuple[int, int, int, int],
    tolerance: float = CROP_EDGE_TOLERANCE,
) -> torch.Tensor:
    """Which boxes (crop frame) touch an edge of ``crop`` that is not an edge of the image.

    Such masks are likely cut by the crop; the other crops see them whole.
    ``crop`` and ``image_box`` are ``(x0, y0, x1, y1)`` in the image frame.
    Returns ``(R,)`` bool.
    """
    import torch

    crop_t = torch.as_tensor(crop, dtype=torch.float32)
    shifted = boxes.float() + crop_t[[0, 1, 0, 1]]
    on_crop = (shifted - crop_t).abs() <= tolerance
    on_image = (shifted - torch.as_tensor(image_box, dtype=torch.float32)).abs() <= tolerance
    return (on_crop & ~on_image).any(dim=1)


def non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, threshold: float):
    """Indices of the boxes kept by greedy NMS, best score first (``torchvision.ops``)."""
    import torch
    from torchvision.ops import batched_nms

    return batched_nms(
        boxes.float(), scores, torch.zeros(len(boxes), dtype=torch.int64), threshold
    )


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) under ``min_area`` pixels.

    Regions are 8-connected. Holes are connected regions of the background
    (including ones touching the image border). When every island is small,
    the largest one is kept. Returns the new mask and whether it changed;
    ``mask`` (``(Y, X)`` bool) is not modified.
    """
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"Expected mode 'holes' or 'islands', got {mode!r}.")
    holes = mode == "holes"
    working = ~mask if holes else mask
    regions, count = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(regions, small), True
    keep = np.setdiff1d(np.arange(1, count + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, keep), True


def clean_small_regions(objects: list[dict], min_area: int, nms_thresh: float) -> list[dict]:
    """Remove small holes and islands of every object's mask, then duplicates again.

    ``objects`` are dicts with ``segmentation`` ``(Y, X)`` bool and ``box``; a
    mask that changed ranks below the unchanged ones in the duplicate removal
    (box NMS at ``nms_thresh``). Returns new dicts, kept ones first by that rank.
    """
    import torch

    if not objects:
        return objects
    area = min_area
    masks, unchanged = [], []
    for obj in objects:
        mask, changed_holes = remove_small_regions(obj["segmentation"], area, "holes")
        mask, changed_islands = remove_small_regions(mask, area, "islands")
        masks.append(mask)
        unchanged.append(not (changed_holes or changed_islands))
    boxes = mask_boxes(torch.as_tensor(np.stack(masks)))
    scores = torch.as_tensor(unchanged, dtype=torch.float32)
    threshold = nms_thresh
    out = []
    for k in non_max_suppression(boxes, scores, threshold).tolist():
        obj = dict(objects[k])
        if not unchanged[k]:
            obj["segmentation"] = masks[k]
            obj["box"] = [int(v) for v in boxes[k].tolist()]
        out.append(obj)
    return out
