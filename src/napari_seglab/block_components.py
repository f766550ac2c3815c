"""Connected components of a labels volume, block by block, equal to the whole-volume ones.

:class:`BlockComponents` is fed one block at a time, in raster order (see
:func:`napari_seglab.batch.windows.block_grid`). Each block's objects are labelled on their own
(connected components per class, face connectivity, as
:func:`napari_seglab.unet.to_instances` with ``method="connected"``) and given
provisional ids unique over the volume. An object cut by a block face has a
provisional id on each side: where two face-adjacent voxels on either side of
a face carry the same class, their ids are joined (union-find). Finally
:meth:`BlockComponents.lookup` numbers the joined objects as the whole-volume
split does (class by class in increasing label value, each class's objects in
the raster order of their first voxel, objects under ``min_size`` voxels
dropped), so a second pass that maps every block's provisional ids through it
gives *identical* instance labels, not only the same objects.

The same idea as dask-image's ``ndmeasure.label`` (label blocks, relate ids
across faces, relabel), written for this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BlockComponents"]

_MAX_ID = np.iinfo(np.int32).max


class BlockComponents:
    """Provisional object ids per block, joined across block faces.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the whole volume.
    background : int
        Label value that is not an object.
    """

    def __init__(self, shape: Sequence[int], background: int = 0):
        self.shape = tuple(int(s) for s in shape)
        self.background = background
        self._parent = np.zeros(1, dtype=np.int64)  # id 0: background
        self._cls: list[int] = [background]
        self._first: list[int] = [-1]
        self._size: list[int] = [0]

    @property
    def count(self) -> int:
        """Provisional ids given so far."""
        return len(self._cls) - 1

    def label_block(self, labels: np.ndarray, block: Sequence[slice]) -> np.ndarray:
        """Provisional ids (int32, 0 background) for the ``labels`` of ``block``.

        Parameters
        ----------
        labels : array, the block's shape
            Semantic labels of the block.
        block : tuple of slice
            Where the block lies in the volume (image coordinates).
        """
        from skimage.measure import label as connected

        labels = np.asarray(labels)
        ids = np.zeros(labels.shape, dtype=np.int64)
        for value in np.unique(labels):
            if value == self.background:
                continue
            objects = connected(labels == value, connectivity=1)
            n = int(objects.max())
            if not n:
                continue
            start = self.count
            if start + n > _MAX_ID:
                raise ValueError(
                    f"More than {_MAX_ID} object pieces over the blocks: use larger blocks."
                )
            mask = objects > 0
            ids[mask] = objects[mask] + start
            found, first = np.unique(ids.ravel()[np.flatnonzero(mask.ravel())], return_index=True)
            flat = np.flatnonzero(mask.ravel())[first]
            local = np.unravel_index(flat, labels.shape)
            corner = [part.start for part in block]
            global_first = np.ravel_multi_index(
                tuple(idx + c for idx, c in zip(local, corner)), self.shape
            )
            sizes = np.bincount(objects.ravel(), minlength=n + 1)[1:]
            order = np.argsort(found)
            self._cls += [int(value)] * n
            self._first += [int(g) for g in global_first[order]]
            self._size += [int(s) for s in sizes]
            self._parent = np.concatenate([self._parent, np.arange(start + 1, start + n + 1)])
        return ids.astype(np.int32)

    def join_face(
        self, ids_a: np.ndarray, labels_a: np.ndarray, ids_b: np.ndarray, labels_b: np.ndarray
    ) -> int:
        """Join the objects of two face-adjacent planes (same shape); return pairs joined.

        ``ids_a``/``labels_a`` is the last plane of one block, ``ids_b``/``labels_b``
        the first plane of its neighbour along that axis.
        """
        touch = (ids_a > 0) & (ids_b > 0) & (labels_a == labels_b)
        if not touch.any():
            return 0
        pairs = np.unique(np.stack([ids_a[touch], ids_b[touch]], axis=1).astype(np.int64), axis=0)
        for a, b in pairs:
            self._union(int(a), int(b))
        return len(pairs)

    def join_block(
        self,
        ids: np.ndarray,
        labels: np.ndarray,
        block: Sequence[slice],
        stored_ids: Any,
        stored_labels: Any,
    ) -> None:
        """Join ``block``'s objects with those of the blocks before it (raster order).

        Parameters
        ----------
        ids, labels : arrays, the block's shape
            The block's provisional ids (:meth:`label_block`) and its labels.
        block : tuple of slice
            Where the block lies in the volume.
        stored_ids, stored_labels : array-likes of the volume's shape
            Provisional ids and labels of the blocks already labelled (numpy,
            zarr, ...); only the plane before each of ``block``'s lower faces is read.
        """
        for axis, part in enumerate(block):
            if part.start == 0:
                continue
            face = list(block)
            face[axis] = slice(part.start - 1, part.start)
            own: list[slice] = [slice(None)] * len(block)
            own[axis] = slice(0, 1)
            self.join_face(
                np.asarray(stored_ids[tuple(face)]),
                np.asarray(stored_labels[tuple(face)]),
                ids[tuple(own)],
                labels[tuple(own)],
            )

    def roots(self) -> tuple[np.ndarray, np.ndarray]:
        """The joined object of every provisional id, and its class.

        Returns
        -------
        roots : int64 array ``(count + 1,)``
            ``roots[provisional]``: the smallest provisional id of its object
            (0 for background).
        classes : int64 array ``(count + 1,)``
            Label value of each provisional id (``background`` for 0).
        """
        roots = np.array([self._find(i) for i in range(self.count + 1)], dtype=np.int64)
        return roots, np.asarray(self._cls, dtype=np.int64)

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = int(parent[root])
        while parent[i] != root:  # path compression
            parent[i], i = root, int(parent[i])
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            parent_root, child = (ra, rb) if ra < rb else (rb, ra)
            self._parent[child] = parent_root

    def lookup(self, min_size: int = 0) -> tuple[np.ndarray, int]:
        """Final id of every provisional id, and the number of objects.

        Returns
        -------
        lut : array ``(count + 1,)`` int32
            ``lut[provisional]`` is the object's id in the whole-volume numbering
            (0 for background and for objects under ``min_size`` voxels).
        objects : int
        """
        n = self.count
        roots = self.roots()[0]
        size = np.bincount(
            roots, weights=np.asarray(self._size, dtype=np.float64), minlength=n + 1
        )
        first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, roots, np.asarray(self._first, dtype=np.int64))
        cls = np.asarray(self._cls, dtype=np.int64)
        keep = np.zeros(n + 1, dtype=bool)
        keep[np.unique(roots[1:])] = True
        keep[0] = False
        if min_size > 0:
            keep &= size >= min_size
        kept = np.flatnonzero(keep)
        order = kept[np.lexsort((first[kept], cls[kept]))]
        final = np.zeros(n + 1, dtype=np.int32)
        final[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        return final[roots], len(order)
