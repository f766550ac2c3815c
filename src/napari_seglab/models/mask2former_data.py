"""Mask2Former training data: panoptic labels, training planes, crops and segment targets.

Mask2Former learns a set of *segments*, each a binary mask with one class.
From a class image and an instance image (:class:`PanopticLabels`) every
crop yields (:func:`segment_targets`):

* one mask per *stuff* class present (background, class 0, is a stuff class
  here: the network must say where nothing is);
* one mask per object of a *thing* class (its instance id); thing pixels with
  instance id 0 belong to no segment.

A plain class image can stand for panoptic labels: the objects of each thing
class are then its connected components (:func:`as_panoptic`), so touching
objects of one class become one object; give instance ids to keep them apart.

Unannotated pixels (``ignore_label``, or padding) belong to no segment. The
Mask2Former loss has no ignore region: the network learns "no segment" there,
so crops are drawn where pixels are annotated and sparse annotations suit
this family less than the U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Encoded pixel value for "no segment" (unannotated or padding) in a training plane.
UNLABELLED = -1


@dataclass(frozen=True)
class PanopticLabels:
    """Panoptic labels of one image: a class and an instance id per pixel.

    Attributes
    ----------
    classes : int array ``(Y, X)`` or ``(Z, Y, X)``
        Class per pixel (0 background).
    instances : int array, same shape
        Object id per pixel for thing classes (0: none); ignored for stuff.
    """

    classes: np.ndarray
    instances: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.classes))

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class Plane:
    """One 2D training plane.

    Attributes
    ----------
    image : float32 ``(C, Y, X)``
        Normalised input.
    classes : int64 ``(Y, X)``
        Class *index* into the model's classes, :data:`UNLABELLED` where no segment lies.
    instances : int64 ``(Y, X)``
        Object id (thing classes), 0 elsewhere.
    """

    image: np.ndarray
    classes: np.ndarray
    instances: np.ndarray


def as_panoptic(labels: Any, things: tuple[int, ...], ignore_label: int | None) -> PanopticLabels:
    """``labels`` as :class:`PanopticLabels` (a class image gets connected components).

    Raises
    ------
    ValueError
        Class and instance images of different shapes, or non-integer labels.
    """
    if isinstance(labels, PanopticLabels):
        classes, instances = np.asarray(labels.classes), np.asarray(labels.instances)
        if classes.shape != instances.shape:
            raise ValueError(
                f"PanopticLabels: class image {classes.shape} and instance image "
                f"{instances.shape} must have the same shape"
            )
    else:
        classes = np.asarray(labels)
        instances = None
    for name, arr in (("class image", classes), ("instance image", instances)):
        if arr is not None and arr.dtype.kind not in "biu":
            raise ValueError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    if instances is None:
        from scipy import ndimage

        instances = np.zeros(classes.shape, dtype=np.int64)
        next_id = 1
        for thing in things:
            components, count = ndimage.label(classes == thing)
            instances[components > 0] = components[components > 0] + next_id - 1
            next_id += count
    if ignore_label is not None:
        instances = np.where(classes == ignore_label, 0, instances)
    return PanopticLabels(classes, instances)


def encode_plane(
    image_cf: np.ndarray,
    labels: PanopticLabels,
    model_classes: tuple[int, ...],
    ignore_label: int | None,
) -> Plane:
    """A plane with classes as indices into ``model_classes`` (unknown ids: unlabelled)."""
    classes = np.asarray(labels.classes)
    lookup_ids = np.asarray(model_classes, dtype=np.int64)
    index = np.searchsorted(lookup_ids, classes)
    index = np.clip(index, 0, len(lookup_ids) - 1)
    known = lookup_ids[index] == classes
    if ignore_label is not None:
        known &= classes != ignore_label
    encoded = np.where(known, index, UNLABELLED).astype(np.int64)
    return Plane(
        np.ascontiguousarray(image_cf, dtype=np.float32),
        encoded,
        np.asarray(labels.instances, dtype=np.int64),
    )


def training_planes(image_cf: np.ndarray, plane_labels: PanopticLabels, encode) -> list[Plane]:
    """The 2D plane, or the planes of a stack holding at least one annotated pixel."""
    if plane_labels.ndim == 2:
        return [encode(image_cf, plane_labels)]
    planes = []
    for z in range(plane_labels.shape[0]):
        plane = encode(
            image_cf[:, z], PanopticLabels(plane_labels.classes[z], plane_labels.instances[z])
        )
        if (plane.classes != UNLABELLED).any():
            planes.append(plane)
    return planes


def split_validation(plane: Plane, fraction: float, multiple: int) -> tuple[Plane, Plane | None]:
    """Hold out the bottom rows of a plane (a multiple of ``multiple``) for validation.

    No validation part when ``fraction`` is 0 or the plane is too small to keep
    ``multiple`` rows on both sides.
    """
    height = plane.classes.shape[0]
    rows = round(height * float(fraction) / multiple) * multiple
    if fraction <= 0 or rows < multiple or height - rows < multiple:
        return plane, None
    cut = height - rows
    top = Plane(plane.image[:, :cut], plane.classes[:cut], plane.instances[:cut])
    bottom = Plane(plane.image[:, cut:], plane.classes[cut:], plane.instances[cut:])
    if not (bottom.classes != UNLABELLED).any():
        return plane, None
    return top, bottom


def pad_plane(plane: Plane, shape: tuple[int, int]) -> Plane:
    """Pad a plane at the bottom/right to at least ``shape`` (image reflected, no labels)."""
    height, width = plane.classes.shape
    pad_y, pad_x = max(shape[0] - height, 0), max(shape[1] - width, 0)
    if not (pad_y or pad_x):
        return plane
    mode = "reflect" if height > pad_y and width > pad_x else "edge"
    image = np.pad(plane.image, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)
    classes = np.pad(plane.classes, ((0, pad_y), (0, pad_x)), constant_values=UNLABELLED)
    instances = np.pad(plane.instances, ((0, pad_y), (0, pad_x)))
    return Plane(image, classes, instances)


def random_crop(
    plane: Plane, patch: tuple[int, int], rng: np.random.Generator, augment: bool
) -> Plane:
    """A random ``patch`` crop holding annotated pixels (tries a few), optionally augmented."""
    plane = pad_plane(plane, patch)
    height, width = plane.classes.shape
    for _ in range(8):
        y = int(rng.integers(0, height - patch[0] + 1))
        x = int(rng.integers(0, width - patch[1] + 1))
        classes = plane.classes[y : y + patch[0], x : x + patch[1]]
        if (classes != UNLABELLED).any():
            break
    crop = Plane(
        plane.image[:, y : y + patch[0], x : x + patch[1]],
        classes,
        plane.instances[y : y + patch[0], x : x + patch[1]],
    )
    if not augment:
        return crop
    image, classes, instances = crop.image, crop.classes, crop.instances
    if rng.random() < 0.5:
        image, classes, instances = image[:, :, ::-1], classes[:, ::-1], instances[:, ::-1]
    if rng.random() < 0.5:
        image, classes, instances = image[:, ::-1], classes[::-1], instances[::-1]
    if patch[0] == patch[1] and rng.random() < 0.5:
        image = image.transpose(0, 2, 1)
        classes, instances = classes.T, instances.T
    scale = float(rng.uniform(0.9, 1.1))
    shift = float(rng.uniform(-0.1, 0.1))
    image = image * scale + shift
    return Plane(
        np.ascontiguousarray(image, dtype=np.float32),
        np.ascontiguousarray(classes),
        np.ascontiguousarray(instances),
    )


def segment_targets(plane: Plane, thing_index: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks ``(N, Y, X)`` float32 and class indices ``(N,)`` int64 of a crop's segments.

    ``thing_index`` holds the class *indices* of the thing classes.
    """
    masks, labels = [], []
    for index in np.unique(plane.classes).tolist():
        if index == UNLABELLED:
            continue
        region = plane.classes == index
        if index in thing_index:
            for object_id in np.unique(plane.instances[region]).tolist():
                if object_id == 0:
                    continue
                masks.append(region & (plane.instances == object_id))
                labels.append(index)
        else:
            masks.append(region)
            labels.append(index)
    shape = plane.classes.shape
    if not masks:
        return np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    return np.stack(masks).astype(np.float32), np.asarray(labels, dtype=np.int64)
