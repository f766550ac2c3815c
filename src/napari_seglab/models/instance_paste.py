"""Detections to an instance label plane: masks pasted at full resolution, overlaps resolved.

Mask R-CNN predicts, per detected object, a score, a box and a small mask
(28 x 28 probabilities over the box). :func:`paste_mask` resizes that mask
onto the object's box of the full-resolution plane exactly as torchvision's
``paste_masks_in_image`` does (the mask padded by one cell, the box widened
to match, bilinear resize, clipped at the plane's border), but writes only
the box's window, so a plane with hundreds of objects never holds a
full-size array per object.

:func:`paint_instances` then gives every pixel to at most one object:
objects are painted in order of decreasing score, and a pixel whose mask
probability is above ``mask_threshold`` goes to the highest-scoring object
claiming it (later, lower-scoring objects only take free pixels). Objects
left with fewer than ``min_size`` pixels (and at least the empty ones) are
dropped; ids are numbered from 1 in order of decreasing score.
"""

from __future__ import annotations

import numpy as np

__all__ = ["paint_instances", "paste_mask"]


def paste_mask(mask, box, height: int, width: int):
    """The window of a plane ``(height, width)`` an object's mask covers, and its values.

    Parameters
    ----------
    mask : torch.Tensor ``(M, M)`` float
        Mask probabilities over the box (torchvision's ``masks[i, 0]`` before pasting).
    box : sequence of 4 float
        ``(x0, y0, x1, y1)`` in the plane's pixel coordinates.
    height, width : int
        Plane size.

    Returns
    -------
    window : tuple of slice
        ``(rows, cols)`` of the plane (empty slices when the box lies outside).
    values : torch.Tensor
        Probabilities of that window, float32.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    padded, scale = expand_masks(mask[None, None].float(), padding=1)
    box = expand_boxes(torch.as_tensor(box, dtype=torch.float32)[None], scale)[0]
    box = box.to(dtype=torch.int64).tolist()
    w = max(box[2] - box[0] + 1, 1)
    h = max(box[3] - box[1] + 1, 1)
    resized = F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    x0, x1 = max(box[0], 0), min(box[2] + 1, width)
    y0, y1 = max(box[1], 0), min(box[3] + 1, height)
    if x1 <= x0 or y1 <= y0:
        return (slice(0, 0), slice(0, 0)), resized[:0, :0]
    values = resized[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]]
    return (slice(y0, y1), slice(x0, x1)), values


def paint_instances(
    scores,
    boxes,
    masks,
    shape: tuple[int, int],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    min_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels and foreground probability of one plane from its detections.

    Parameters
    ----------
    scores : torch.Tensor ``(N,)``
        Detection scores.
    boxes : torch.Tensor ``(N, 4)``
        ``(x0, y0, x1, y1)`` per detection.
    masks : torch.Tensor ``(N, 1, M, M)``
        Mask probabilities over each box.
    shape : (int, int)
        ``(Y, X)`` of the plane.
    score_threshold : float
        Detections scoring below it are ignored.
    mask_threshold : float
        A pixel belongs to an object when its mask probability is above it.
    min_size : int
        Objects with fewer visible pixels after overlap resolution are dropped.

    Returns
    -------
    ids : array ``(Y, X)`` int32
        Objects numbered from 1 by decreasing score, 0 background.
    foreground : array ``(Y, X)`` float32
        Highest mask probability of any kept detection at each pixel.
    """
    height, width = int(shape[0]), int(shape[1])
    ids = np.zeros((height, width), np.int32)
    foreground = np.zeros((height, width), np.float32)
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    painted = 0
    for k in order:
        if float(scores[k]) < score_threshold:
            break
        mask, box = masks[k, 0].detach().cpu(), boxes[k].detach().cpu()
        window, values = paste_mask(mask, box, height, width)
        values = values.numpy()
        if values.size == 0:
            continue
        np.maximum(foreground[window], values, out=foreground[window])
        claim = (values > mask_threshold) & (ids[window] == 0)
        if claim.sum() < max(int(min_size), 1):
            continue
        painted += 1
        ids[window][claim] = painted
    return ids, foreground
