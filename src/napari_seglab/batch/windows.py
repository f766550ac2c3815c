"""The sliding-window grid of a whole volume, seen one block at a time.

Whole-volume prediction (:func:`napari_seglab.unet.inference.sliding_window_probabilities`,
i.e. MONAI's ``sliding_window_inference`` with Gaussian blending) places its
windows on a grid that depends on the size of the *whole* image: starts every
``int(roi * (1 - overlap))`` voxels, the last window pushed back to end at the
border, and the image zero-padded (centred) where it is smaller than a window.
Each voxel's probability is ``sum(w * p) / sum(w)`` over the windows that
cover it, in the grid's raster order.

:class:`WindowGrid` rebuilds that grid (the same rules, one axis at a time),
so a block of the volume can be predicted with exactly the windows that touch
it: the block's values are then the whole-volume values. Coordinates are
*padded* coordinates (voxel ``i`` of the image is padded voxel
``i + pad_before``) unless a name says otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["WindowGrid", "block_grid", "choose_block_shape", "estimate_block_bytes"]


def _axis_starts(size: int, roi: int, overlap: float) -> tuple[int, ...]:
    """Window starts along one (padded) axis, as MONAI's ``dense_patch_slices``."""
    if roi == size:
        return (0,)
    interval = max(int(roi * (1 - overlap)), 1)
    num = math.ceil(size / interval)
    count = next((d + 1 for d in range(num) if d * interval + roi >= size), 1)
    return tuple(i * interval - max(i * interval + roi - size, 0) for i in range(count))


@dataclass(frozen=True)
class WindowGrid:
    """Where whole-volume sliding-window prediction puts its windows.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape of the volume (unpadded).
    roi : tuple of int
        Window size per axis (a plane-by-plane 2D prediction of a stack is the
        3D grid with ``roi[0] == 1``).
    pad_before : tuple of int
        Zeros MONAI adds before each axis where the volume is smaller than a window.
    starts : tuple of tuple of int
        Window starts per axis, padded coordinates; the grid is their product
        in raster order (last axis fastest).
    """

    shape: tuple[int, ...]
    roi: tuple[int, ...]
    pad_before: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, shape: Sequence[int], roi: Sequence[int], overlap: float) -> WindowGrid:
        """The grid for a volume of spatial ``shape`` and windows of ``roi`` voxels."""
        shape = tuple(int(s) for s in shape)
        roi = tuple(int(r) for r in roi)
        if len(shape) != len(roi):
            raise ValueError(f"Expected a window size per axis of {shape}, got {roi}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"Expected 0 <= overlap < 1, got {overlap}.")
        pad = tuple(max(r - s, 0) // 2 for s, r in zip(shape, roi))
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        starts = tuple(_axis_starts(p, r, overlap) for p, r in zip(padded, roi))
        return cls(shape, roi, pad, starts)

    @property
    def count(self) -> int:
        """Number of windows of the whole grid."""
        return math.prod(len(s) for s in self.starts)

    def axis_windows(self, block: Sequence[slice]) -> list[list[int]]:
        """Per axis, the window starts whose window overlaps ``block`` (image coordinates)."""
        picked = []
        for starts, roi, pad, part in zip(self.starts, self.roi, self.pad_before, block):
            lo, hi = part.start + pad, part.stop + pad
            picked.append([s for s in starts if s < hi and s + roi > lo])
        return picked

    def windows(self, block: Sequence[slice]) -> list[tuple[int, ...]]:
        """Starts (padded coordinates) of the windows overlapping ``block``, in grid order."""
        return list(itertools.product(*self.axis_windows(block)))

    def region(self, block: Sequence[slice]) -> tuple[slice, ...]:
        """Padded-coordinate bounds of the windows overlapping ``block`` (the block plus halo)."""
        axes = self.axis_windows(block)
        return tuple(slice(min(a), max(a) + r) for a, r in zip(axes, self.roi))


def block_grid(shape: Sequence[int], block_shape: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Blocks tiling ``shape`` in raster order (last axis fastest); edge blocks are smaller."""
    ranges = [range(0, int(s), int(b)) for s, b in zip(shape, block_shape)]
    for corner in itertools.product(*ranges):
        yield tuple(
            slice(c, min(c + int(b), int(s))) for c, b, s in zip(corner, block_shape, shape)
        )


def estimate_block_bytes(
    block_shape: Sequence[int],
    roi: Sequence[int],
    *,
    in_channels: int = 1,
    classes: int = 2,
    batch_size: int = 2,
    input_itemsize: int = 4,
    overlap: float = 0.5,
) -> int:
    """Upper estimate of the memory one block's prediction needs, in bytes.

    Counts the input region (block plus a window of halo on each side, raw and
    normalised), the block's accumulators (weighted sum per class and weight
    sum), its probabilities, labels and provisional object ids, and one batch
    of windows through the network (input, activations, probabilities; the
    network's own activations are counted as ten times its output), and the
    weighted probabilities of the windows kept for the next block along the
    last axis.
    """
    voxels = math.prod(int(b) for b in block_shape)
    region = math.prod(int(b) + 2 * int(r) for b, r in zip(block_shape, roi))
    window = math.prod(int(r) for r in roi)
    inputs = region * in_channels * (input_itemsize + 4)
    block = voxels * (4 * (2 * classes + 1) + 4 + 8)
    windows = batch_size * window * 4 * (in_channels + 12 * classes)
    steps = [max(int(int(r) * (1 - overlap)), 1) for r in roi]
    shared = math.ceil(int(roi[-1]) / steps[-1]) * math.prod(
        math.ceil((int(b) + int(r)) / st) for b, r, st in zip(block_shape[:-1], roi[:-1], steps)
    )
    return int(inputs + block + windows + shared * window * classes * 4)


def choose_block_shape(
    shape: Sequence[int],
    roi: Sequence[int],
    memory_budget: int,
    *,
    overlap: float = 0.5,
    **estimate_kwargs,
) -> tuple[int, ...]:
    """The largest block, a whole number of window steps per axis, that fits ``memory_budget``.

    Blocks grow by one window step (``int(roi * (1 - overlap))``) on every axis
    at a time, from one window, and never beyond the volume. Axes where the
    window is one voxel thick (plane-by-plane prediction) grow by the step of
    the other axes. A block of one window is returned even if it exceeds the
    budget (nothing smaller is efficient).

    Returns
    -------
    tuple of int
        Block shape, spatial order.
    """
    shape = tuple(int(s) for s in shape)
    roi = tuple(int(r) for r in roi)
    thick = [r for r in roi if r > 1] or [1]
    steps = tuple(max(int((r if r > 1 else min(thick)) * (1 - overlap)), 1) for r in roi)
    base = tuple(r if r > 1 else min(thick) for r in roi)

    def at(m: int) -> tuple[int, ...]:
        return tuple(min(s, b + (m - 1) * st) for s, b, st in zip(shape, base, steps))

    m, best = 1, at(1)
    while True:
        candidate = at(m + 1)
        needed = estimate_block_bytes(candidate, roi, overlap=overlap, **estimate_kwargs)
        if candidate == best or needed > int(memory_budget):
            return best
        m, best = m + 1, candidate


def importance_map(roi: Sequence[int]) -> np.ndarray:
    """MONAI's Gaussian window weights (``sigma_scale=0.125``) for ``roi``, float32.

    One-voxel axes (plane-by-plane prediction) get weight 1, as a 2D map
    broadcast along them.
    """
    from monai.data.utils import compute_importance_map

    thick = tuple(int(r) for r in roi if int(r) > 1)
    weights = compute_importance_map(thick or (1,), mode="gaussian", sigma_scale=0.125)
    return weights.numpy().astype(np.float32).reshape(tuple(int(r) for r in roi))
