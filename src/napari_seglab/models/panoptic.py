"""Panoptic prediction from a semantic model and an instance model, and its one-layer form.

A panoptic segmentation gives every voxel a class and every voxel of a
*thing* class (countable objects) an instance id. :func:`combine` builds one
from a semantic class image (e.g. a U-Net or DeepLabV3+ prediction) and an
instance label image (e.g. Mask R-CNN, SAM, or a U-Net followed by a
watershed). Rules, in order:

1. **Object class.** Each instance object takes the class that the semantic
   image gives most of its voxels *among the thing classes* (ties: the
   smaller class id).
2. **Dropped objects.** An object is dropped (its voxels fall back to rule 4)
   when fewer than ``min_thing_fraction`` of its voxels are of a thing class
   in the semantic image (the semantic model says it is not an object), or
   when it has fewer than ``min_size`` voxels.
3. **Objects win.** A kept object's voxels all get its class and its id, also
   where the semantic image said stuff or background. An instance label image
   holds no overlaps; objects that come as separate, overlapping masks must be
   pasted into one label image first (Mask R-CNN prediction does that, higher
   scores on top).
4. **Stuff and background** come from the semantic image where no kept
   object lies. Voxels of a thing class outside every kept object (semantic
   says "object" but no instance was found) become ``leftover_class``
   (default 0, background): a thing voxel needs an instance id. A stuff class
   covering fewer than ``min_stuff_size`` voxels in total becomes 0.

Instance ids are kept as given (not renumbered), so they still match the
instance model's layer; stuff voxels have instance id 0.

:func:`to_labels` turns a (class image, instance image) pair into the single
Labels layer form whose objects carry a ``class`` feature (the form the SAM
session writes); :func:`napari_seglab.metrics.labels_to_panoptic` is its
inverse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..metrics.contingency import check_label_pair, contingency_table


def combine(
    semantic: Any,
    instances: Any,
    *,
    things: Iterable[int],
    min_thing_fraction: float = 0.5,
    min_size: int = 0,
    min_stuff_size: int = 0,
    leftover_class: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Panoptic class and instance images from a semantic and an instance prediction.

    Parameters
    ----------
    semantic : array-like of integers, ``(Y, X)`` or ``(Z, Y, X)``
        Class id per voxel (0 background). Not modified.
    instances : array-like of integers, same shape
        Object id per voxel (0 background), e.g. an instance Labels layer.
        Not modified.
    things : iterable of int
        Classes whose voxels belong to objects; every other non-zero class is stuff.
    min_thing_fraction : float
        Fraction of an object's voxels that must be of a thing class in
        ``semantic`` for it to be kept, in ``[0, 1]`` (0 keeps every object; an
        object with no thing voxel at all then takes the smallest thing class).
    min_size : int
        Objects with fewer voxels are dropped.
    min_stuff_size : int
        Stuff classes with fewer voxels in total (after objects are pasted)
        become background.
    leftover_class : int
        Class of thing voxels outside every kept object (0, or a stuff class).

    Returns
    -------
    class_image : ndarray of int32
        Class per voxel, same shape.
    instance_image : ndarray
        Object id per voxel where a kept object lies, else 0; the dtype of
        ``instances``.

    Raises
    ------
    ValueError
        Different shapes, non-integer inputs, no thing class, a thing
        ``leftover_class`` or a fraction outside ``[0, 1]``.
    """
    check_label_pair(instances, semantic)
    thing_ids = sorted({int(t) for t in things})
    if not thing_ids:
        raise ValueError("things: expected at least one thing class, got none")
    if not 0.0 <= float(min_thing_fraction) <= 1.0:
        raise ValueError(
            f"min_thing_fraction: expected a number in [0, 1], got {min_thing_fraction!r}"
        )
    if int(leftover_class) in thing_ids:
        raise ValueError(
            f"leftover_class: expected 0 or a stuff class, got thing class {leftover_class}"
        )
    sem = np.asarray(semantic)
    inst = np.asarray(instances)
    if inst.dtype == bool:
        inst = inst.view(np.uint8)
    object_ids, object_class = object_classes(
        sem, inst, thing_ids, min_thing_fraction=min_thing_fraction, min_size=min_size
    )
    class_image = sem.astype(np.int32, copy=True)
    is_thing = np.isin(class_image, thing_ids)
    class_image[is_thing] = int(leftover_class)
    kept = object_ids[object_class != 0]
    position = np.searchsorted(kept, inst)
    position[position >= len(kept)] = 0
    in_object = (inst != 0) & (kept[position] == inst) if len(kept) else np.zeros(inst.shape, bool)
    class_image[in_object] = object_class[object_class != 0][position[in_object]]
    instance_image = np.where(in_object, inst, 0).astype(inst.dtype)
    if min_stuff_size > 0:
        stuff = (~in_object) & (class_image != 0)
        labels, sizes = np.unique(class_image[stuff], return_counts=True)
        small = labels[sizes < int(min_stuff_size)]
        class_image[stuff & np.isin(class_image, small)] = 0
    return class_image, instance_image


def object_classes(
    semantic: np.ndarray,
    instances: np.ndarray,
    things: Iterable[int],
    *,
    min_thing_fraction: float = 0.5,
    min_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class of every object by majority vote among thing classes (rules 1-2 of the module).

    Returns
    -------
    ids : ndarray, shape ``(N,)``
        Non-zero object ids of ``instances``, ascending.
    classes : ndarray of int32, shape ``(N,)``
        Each object's class; 0 for a dropped object.
    """
    thing_ids = np.asarray(sorted({int(t) for t in things}), dtype=np.int64)
    table = contingency_table(instances, semantic)
    object_ids, sizes = table.pred_sizes()
    keep_ids = object_ids != 0
    object_ids, sizes = object_ids[keep_ids], sizes[keep_ids]
    classes = np.zeros(len(object_ids), dtype=np.int32)
    best = np.zeros(len(object_ids), dtype=np.int64)
    thing_total = np.zeros(len(object_ids), dtype=np.int64)
    pairs = (table.pred_ids != 0) & np.isin(table.gt_ids, thing_ids)
    # pairs are sorted by (object, class): the first maximum is the smaller class id
    for obj, cls, count in zip(
        table.pred_ids[pairs].tolist(), table.gt_ids[pairs].tolist(), table.counts[pairs].tolist()
    ):
        index = int(np.searchsorted(object_ids, obj))
        thing_total[index] += count
        if count > best[index]:
            best[index] = count
            classes[index] = cls
    fraction = thing_total / np.maximum(sizes, 1)
    keep = (fraction >= float(min_thing_fraction)) & (sizes >= int(min_size))
    classes[keep & (classes == 0)] = thing_ids[0]
    classes[~keep] = 0
    return object_ids, classes


def to_labels(
    class_image: Any, instance_image: Any, *, things: Iterable[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One Labels image whose objects carry a class: objects keep their ids, stuff gets new ones.

    Parameters
    ----------
    class_image, instance_image : array-like of integers, same shape
        As returned by :func:`combine` (or a panoptic model).
    things : iterable of int
        Thing classes: their voxels keep their instance ids (voxels with id 0
        are left out). Each stuff class becomes one new object, numbered after
        the largest instance id in ascending class order.

    Returns
    -------
    labels : ndarray of int64
        Object id per voxel (0 background).
    features : dict of str to ndarray
        Columns ``index`` (object id) and ``class`` for a Labels layer's
        ``features`` table, ascending ids.
    """
    check_label_pair(instance_image, class_image)
    cls = np.asarray(class_image)
    inst = np.asarray(instance_image).astype(np.int64)
    thing_ids = sorted({int(t) for t in things})
    is_thing = np.isin(cls, thing_ids)
    labels = np.where(is_thing, inst, 0)
    objects = np.unique(labels[labels != 0])
    object_class = np.zeros(len(objects), dtype=np.int64)
    if len(objects):
        where = np.searchsorted(objects, labels[labels != 0])
        object_class[where] = cls[labels != 0]
    stuff_classes = [int(c) for c in np.unique(cls[~is_thing]) if c != 0]
    next_id = int(objects.max()) + 1 if len(objects) else 1
    stuff_ids = []
    for offset, stuff_class in enumerate(stuff_classes):
        labels[cls == stuff_class] = next_id + offset
        stuff_ids.append(next_id + offset)
    index = np.concatenate([objects, np.asarray(stuff_ids, dtype=np.int64)])
    classes = np.concatenate([object_class, np.asarray(stuff_classes, dtype=np.int64)])
    return labels, {"index": index.astype(np.int64), "class": classes}
