"""Training data for decoder fine-tuning: annotated planes and the objects in them.

An *object* is one connected component of one label value in one annotated
plane (instance labels: usually one object per id and plane; semantic labels:
every blob of a class). For each object this module keeps what prompt
sampling needs, computed once: its bounding box, candidate pixels inside and
just outside it, its most interior pixel, and its mask (cropped to the box).

Coordinates are napari's: ``(row, col)`` pixels of the original plane; boxes
are ``(row0, col0, row1, col1)`` (first and last pixel of the object).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..frames import input_size
from ..image import SamInput

__all__ = [
    "CANDIDATES",
    "AnnotatedObject",
    "Plane",
    "annotated_planes",
    "checked_pairs",
    "collect_objects",
    "split_objects",
]

#: Candidate pixels kept per object for point sampling (inside and outside).
CANDIDATES = 128


@dataclass(frozen=True)
class Plane:
    """An annotated plane: where it comes from and its geometry in the encoder frame.

    Attributes
    ----------
    image : int
        Index of the image in the inputs.
    index : int or None
        Plane index in a stack (None for a 2D image).
    original_size, input_size : (int, int)
        ``(Y, X)`` of the plane and of the plane resized to the encoder input.
    """

    image: int
    index: int | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]


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


def _object_regions(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """Every positive id with its bounding box, without a list as long as the largest id.

    Sparse ids (``3_000_000_000``, ``2**40``) are numbered ``1..n`` first
    (``numpy.searchsorted`` over the sorted distinct ids), so memory follows the
    number of objects; the returned ids are the original ones, as Python ints.
    """
    values = np.unique(labels)
    values = values[values > 0]
    if values.size == 0:
        return []
    if int(values[-1]) <= max(4 * values.size, 1 << 16):
        boxes = ndi.find_objects(labels.astype(np.int64, copy=False))
        return [(int(v), boxes[int(v) - 1]) for v in values]
    dense = np.zeros(labels.shape, dtype=np.intp)
    mask = labels > 0
    dense[mask] = np.searchsorted(values, labels[mask]) + 1
    return [(int(v), box) for v, box in zip(values, ndi.find_objects(dense))]


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
    for value, region in _object_regions(labels):
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


def _as_list(items: Any, name: str) -> list:
    if isinstance(items, np.ndarray) or hasattr(items, "shape"):
        return [items]
    if isinstance(items, (list, tuple)):
        return list(items)
    raise ValueError(
        f"Expected {name} as an array or a list of arrays, got {type(items).__name__}."
    )


def checked_pairs(images: Any, labels: Any) -> list[tuple[SamInput, np.ndarray]]:
    """``(image, labels)`` pairs with matching spatial shapes (labels read into memory).

    Parameters
    ----------
    images : array, SamInput or list of them
        2D images ``(Y, X[, 3])`` or stacks ``(Z, Y, X[, 3])``.
    labels : array or list of arrays
        One integer label image per image, ``(Y, X)`` or ``(Z, Y, X)``.

    Raises
    ------
    ValueError
        Counts, dtypes or shapes that do not match, naming what was expected.
    """
    images = _as_list(images, "images")
    labels = _as_list(labels, "labels")
    if len(images) != len(labels):
        raise ValueError(
            f"Expected one label image per image, got {len(images)} images and "
            f"{len(labels)} label images."
        )
    if not images:
        raise ValueError("Expected at least one image with labels, got none.")
    pairs = []
    for i, (image, label) in enumerate(zip(images, labels)):
        source = image if isinstance(image, SamInput) else SamInput(image)
        label = np.asarray(label)
        if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
            raise ValueError(
                f"Expected integer labels (0 = background), got dtype {label.dtype} "
                f"for label image {i}."
            )
        expected = ((source.n_planes,) if source.is_stack else ()) + tuple(source.plane_shape)
        if label.shape != expected:
            raise ValueError(
                f"Label image {i} has shape {label.shape}, expected {expected} to match "
                f"image {i} of shape {np.shape(source.data)}."
            )
        pairs.append((source, label))
    return pairs


def annotated_planes(
    pairs: list[tuple[SamInput, np.ndarray]],
    img_size: int,
    rng: np.random.Generator,
    *,
    min_pixels: int = 16,
) -> tuple[list[Plane], list[AnnotatedObject]]:
    """The planes holding objects, and their objects (planes without labels are skipped).

    Parameters
    ----------
    pairs : list of (SamInput, labels)
        From :func:`checked_pairs`.
    img_size : int
        Side of the encoder input (for :attr:`Plane.input_size`).
    rng : numpy.random.Generator
        Chooses the candidate points of each object.
    min_pixels : int
        Smaller components are ignored.

    Raises
    ------
    ValueError
        When no plane holds an object of at least ``min_pixels`` pixels.
    """
    planes: list[Plane] = []
    objects: list[AnnotatedObject] = []
    for image_index, (source, label) in enumerate(pairs):
        stack = label if source.is_stack else label[None]
        for z in range(stack.shape[0]):
            if not stack[z].any():
                continue
            found = collect_objects(stack[z], len(planes), rng, min_pixels=min_pixels)
            if not found:
                continue
            shape = (int(stack[z].shape[0]), int(stack[z].shape[1]))
            index = z if source.is_stack else None
            planes.append(Plane(image_index, index, shape, input_size(shape, img_size)))
            objects.extend(found)
    if not objects:
        raise ValueError(
            f"Expected annotated objects (label > 0, at least {min_pixels} pixels) in the "
            "label images, found none."
        )
    return planes, objects


def split_objects(
    objects: list[AnnotatedObject], fraction: float, rng: np.random.Generator
) -> tuple[list[AnnotatedObject], list[AnnotatedObject]]:
    """Training and validation objects; at least one of each when ``fraction > 0``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"Expected validation_fraction in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return list(objects), []
    if len(objects) < 2:
        raise ValueError(
            f"Expected at least 2 annotated objects to hold some out for validation, got "
            f"{len(objects)} (or pass validation_fraction=0)."
        )
    order = rng.permutation(len(objects))
    n_val = min(max(1, round(fraction * len(objects))), len(objects) - 1)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [objects[i] for i in train], [objects[i] for i in val]
