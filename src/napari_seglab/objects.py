"""Where a new or grown object goes in a label array: the pixels and the id, no writing.

The core decides *what* changes; whoever owns the labels (a numpy array in a
script, a napari Labels layer through its undo history in a widget) applies
it. Existing objects are kept unless ``overwrite`` is asked for, and an id
that does not fit the array's dtype is refused instead of wrapping around.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ObjectWrite", "grow_object", "new_object", "next_label"]


@dataclass(frozen=True)
class ObjectWrite:
    """Pixels to set to one label value.

    Attributes
    ----------
    indices : tuple of int arrays
        ``np.nonzero``-style indices into the full label array, axis order of the array.
    value : int
        The label id to write there (0: nothing to write).
    """

    indices: tuple[np.ndarray, ...]
    value: int

    @property
    def size(self) -> int:
        """Number of pixels written."""
        return int(self.indices[0].size) if self.indices else 0

    def apply(self, labels: np.ndarray) -> None:
        """Write into a numpy label array in place."""
        if self.size:
            labels[self.indices] = self.value


def next_label(labels) -> int:
    """``max + 1`` of a label array, checked against its dtype.

    Raises
    ------
    ValueError
        When ``max + 1`` does not fit the dtype (e.g. 256 objects in uint8).
    """
    array = np.asarray(labels)
    new_id = int(array.max(initial=0)) + 1
    if np.issubdtype(array.dtype, np.integer) and new_id > np.iinfo(array.dtype).max:
        raise ValueError(
            f"Expected room for a new label id in the {array.dtype} labels, but the largest id "
            f"is already {new_id - 1}: convert the layer to a wider integer type."
        )
    return new_id


def new_object(
    labels, mask: np.ndarray, *, offset: tuple[int, ...] | None = None, overwrite: bool = False
) -> ObjectWrite:
    """Where ``mask`` goes as a new object with id ``max + 1``.

    Parameters
    ----------
    labels : int array
        The label image ``(Y, X)`` or stack ``(Z, Y, X)``; read only.
    mask : bool array
        Same number of axes as ``labels``: the whole array, or a block placed
        at ``offset`` (one plane of a stack: ``(1, Y, X)`` at ``(z, 0, 0)``).
    offset : tuple of int, optional
        Index in ``labels`` of ``mask[0, ..., 0]``.
    overwrite : bool
        False (default) keeps existing non-zero labels.

    Returns
    -------
    ObjectWrite
        ``value`` 0 and no indices when the mask adds nothing.
    """
    mask = np.asarray(mask, dtype=bool)
    shape = np.shape(labels)
    if mask.ndim != len(shape):
        raise ValueError(
            f"Expected a mask with {len(shape)} axes like the labels {shape}, got {mask.shape}."
        )
    offset = tuple(int(o) for o in (offset or (0,) * mask.ndim))
    if any(o < 0 or o + s > n for o, s, n in zip(offset, mask.shape, shape)):
        raise ValueError(
            f"A mask of shape {mask.shape} at offset {offset} does not fit labels of shape "
            f"{shape}."
        )
    region = tuple(slice(o, o + s) for o, s in zip(offset, mask.shape))
    if not overwrite:
        mask = mask & (np.asarray(labels[region]) == 0)
    local = np.nonzero(mask)
    if local[0].size == 0:
        return ObjectWrite((), 0)
    new_id = next_label(labels)
    return ObjectWrite(tuple(ix + o for ix, o in zip(local, offset)), new_id)


def grow_object(labels, volume: np.ndarray, object_id: int, *, overwrite: bool = False):
    """Where object ``object_id`` grows to cover ``volume`` (pixels it lacks).

    Parameters
    ----------
    labels : int array
        Same shape as ``volume``; read only.
    volume : bool array
        The object's new extent.
    object_id : int
        The existing object's id.
    overwrite : bool
        False (default) never takes pixels of other objects.

    Returns
    -------
    ObjectWrite
    """
    current = np.asarray(labels)
    volume = np.asarray(volume, dtype=bool)
    if volume.shape != current.shape:
        raise ValueError(
            f"Expected a mask of the labels' shape {current.shape}, got {volume.shape}."
        )
    grow = volume & (current != object_id)
    if not overwrite:
        grow &= current == 0
    return ObjectWrite(np.nonzero(grow), int(object_id))
