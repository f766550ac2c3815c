"""Mask R-CNN training data from an instance Labels layer: crops, per-object targets.

An instance label image holds one id per object (0 background). Training
runs on 2D planes ``(C, Y, X)``: a 2D image is one plane, a 3D stack gives
its annotated planes (those holding at least one object; the others are
taken to be unannotated, not empty). Each training sample is a random crop
of a plane (the whole plane when it is smaller), optionally flipped,
transposed (square crops) and changed in brightness and contrast, and its
target in torchvision's detection format (:func:`crop_targets`):

* ``masks`` ``(N, H, W)`` uint8: every object visible in the crop, clipped
  at the crop's border;
* ``boxes`` ``(N, 4)`` float32 ``(x0, y0, x1, y1)`` in pixel-edge
  coordinates (a one-pixel object is ``(x, y, x + 1, y + 1)``);
* ``labels`` ``(N,)`` int64, all 1 (one "object" class).

An object cut by the crop border keeps its visible part, unless fewer than
:data:`MIN_VISIBLE_PIXELS` pixels of it are visible: such slivers are
dropped (too little to learn a shape from, and torchvision's box heads
handle degenerate boxes badly). A crop with no object is kept as a negative
sample (``boxes`` of shape ``(0, 4)``, ``masks`` ``(0, H, W)``), which
torchvision trains on as background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_VISIBLE_PIXELS",
    "CropSampler",
    "InstancePlane",
    "crop_targets",
    "instance_planes",
    "split_plane",
]

#: Fewest visible pixels an object cut by a crop border keeps to stay a target.
MIN_VISIBLE_PIXELS = 8


@dataclass(frozen=True)
class InstancePlane:
    """One training plane.

    Attributes
    ----------
    image : array ``(C, Y, X)`` float32
        Normalised input.
    ids : array ``(Y, X)`` int
        Object ids, 0 background.
    """

    image: np.ndarray
    ids: np.ndarray


def instance_planes(image_cf: np.ndarray, ids: np.ndarray) -> list[InstancePlane]:
    """The training planes of one normalised image and its instance labels.

    Parameters
    ----------
    image_cf : array ``(C, Y, X)`` or ``(C, Z, Y, X)`` float32
        Channels first, normalised.
    ids : int array ``(Y, X)`` or ``(Z, Y, X)``
        Instance labels of the same spatial shape.

    Returns
    -------
    list of InstancePlane
        The 2D plane, or the planes of a stack holding at least one object.
    """
    ids = np.asarray(ids)
    if ids.ndim == 2:
        return [InstancePlane(image_cf, ids)]
    return [InstancePlane(image_cf[:, z], ids[z]) for z in range(ids.shape[0]) if ids[z].any()]


def split_plane(
    plane: InstancePlane, fraction: float, min_side: int = 16
) -> tuple[InstancePlane, InstancePlane | None]:
    """Hold out the last ``fraction`` of the plane's longest axis for validation.

    Objects crossing the cut are clipped on both sides. The split is kept only
    when both parts are at least ``min_side`` pixels long and the held-out part
    holds an object; otherwise the whole plane trains and None is returned.
    """
    if fraction <= 0:
        return plane, None
    if fraction >= 1:
        raise ValueError(f"Expected 0 <= validation_fraction < 1, got {fraction}.")
    axis = int(np.argmax(plane.ids.shape))
    size = plane.ids.shape[axis]
    cut = round(size * (1.0 - fraction))
    if cut < min_side or size - cut < min_side:
        return plane, None
    keep = [slice(None)] * 2
    held = [slice(None)] * 2
    keep[axis], held[axis] = slice(0, cut), slice(cut, None)
    held_ids = plane.ids[tuple(held)]
    if not held_ids.any():
        return plane, None
    train = InstancePlane(plane.image[(slice(None), *keep)], plane.ids[tuple(keep)])
    return train, InstancePlane(plane.image[(slice(None), *held)], held_ids)


def crop_targets(ids: np.ndarray, min_visible: int = MIN_VISIBLE_PIXELS) -> dict[str, np.ndarray]:
    """Per-object masks, boxes and labels of an instance crop (see the module docstring).

    Parameters
    ----------
    ids : int array ``(H, W)``
        Object ids of the crop, 0 background.
    min_visible : int
        Objects with fewer pixels in the crop are dropped.

    Returns
    -------
    dict
        ``masks`` ``(N, H, W)`` uint8, ``boxes`` ``(N, 4)`` float32,
        ``labels`` ``(N,)`` int64, objects in increasing id order.
    """
    ids = np.asarray(ids)
    height, width = ids.shape
    values, counts = np.unique(ids[ids != 0], return_counts=True)
    values = values[counts >= max(int(min_visible), 1)]
    masks = np.zeros((len(values), height, width), np.uint8)
    boxes = np.zeros((len(values), 4), np.float32)
    for k, value in enumerate(values):
        mask = ids == value
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        masks[k] = mask
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return {"masks": masks, "boxes": boxes, "labels": np.ones(len(values), np.int64)}


class CropSampler:
    """Random training crops of instance planes, as torchvision detection batches.

    Parameters
    ----------
    planes : list of InstancePlane
    crop : (int, int)
        Crop size ``(H, W)``; planes smaller than it are used whole.
    augment : bool
        Random flips, transposition (square crops) and brightness/contrast.
    seed : int
        Seeds the crop positions and augmentations.
    """

    def __init__(
        self, planes: Sequence[InstancePlane], crop: Sequence[int], augment: bool, seed: int
    ):
        if not planes:
            raise ValueError("Expected at least one annotated plane to train on, got none.")
        self.planes = list(planes)
        self.crop = (int(crop[0]), int(crop[1]))
        self.augment = bool(augment)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One crop: image ``(C, H, W)`` float32 and its :func:`crop_targets`."""
        rng = self.rng
        plane = self.planes[int(rng.integers(len(self.planes)))]
        height, width = plane.ids.shape
        h, w = min(self.crop[0], height), min(self.crop[1], width)
        y = int(rng.integers(height - h + 1))
        x = int(rng.integers(width - w + 1))
        image = plane.image[:, y : y + h, x : x + w]
        ids = plane.ids[y : y + h, x : x + w]
        if self.augment:
            if rng.random() < 0.5:
                image, ids = image[:, ::-1], ids[::-1]
            if rng.random() < 0.5:
                image, ids = image[:, :, ::-1], ids[:, ::-1]
            if h == w and rng.random() < 0.5:
                image, ids = image.transpose(0, 2, 1), ids.T
            gain = float(rng.uniform(0.9, 1.1))
            offset = float(rng.uniform(-0.1, 0.1))
            image = image * gain + offset
        image = np.ascontiguousarray(image, dtype=np.float32)
        return image, crop_targets(np.ascontiguousarray(ids))

    def batch(self, size: int):
        """``size`` crops as torchvision inputs: a list of image tensors and of target dicts."""
        import torch

        images, targets = [], []
        for _ in range(int(size)):
            image, target = self.sample()
            images.append(torch.from_numpy(image))
            targets.append({key: torch.from_numpy(value) for key, value in target.items()})
        return images, targets
