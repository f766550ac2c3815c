"""Dense CRF refinement of volumes larger than memory, equal to :func:`~._refine.refine`.

:func:`refine` already runs the CRF block by block (:func:`~._engine.plan_blocks`)
but holds the image, the probabilities and its guards' arrays whole.
:func:`refine_blockwise_steps` reads the image and the probabilities one
region at a time (numpy, memmap, zarr or dask arrays) and writes the class map
into an array the caller gives (e.g. a zarr array on disk), in three passes:

1. **CRF**: the same blocks as :func:`refine` (same ``max_block_voxels``), so
   every block's mean field is the same computation; classes go to a stage array.
2. **Guards**, on blocks whose cores start on the cells of
   :func:`~._safety.verify_changes` and reach ``window // 2`` cells (and the
   object core depth) beyond their core: the warning's counts,
   ``verify_changes`` (its box sums do not depend on where a region starts,
   :func:`~._safety.box_sums`), and the input's objects as connected
   components joined across block faces
   (:class:`~napari_seglab.block_components.BlockComponents`) with, per
   object, the core voxels and those the CRF kept.
3. **Objects**: the voxels of objects whose core the CRF lost get their input
   class back (and ``keep_confident`` applies).

The intensity range is the one :func:`refine` fits, sampled a slab at a time
(:func:`~napari_seglab.imaging.percentile_range_by_slabs`). Hence the class
map equals :func:`refine`'s on the whole volume, voxel for voxel (tested).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..block_components import BlockComponents
from ..imaging import check_finite, percentile_range_by_slabs
from ..jobs import CancelCheck, CancelLike, Stopwatch, run_to_end
from ._engine import CrfProgress, tiled_crf
from ._features import IntensityScaler
from ._inputs import check_probabilities, check_spacing
from ._params import (
    DEFAULT_BILATERAL_WEIGHT,
    DEFAULT_INTENSITY_SIGMA,
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_BLOCK_VOXELS,
    DEFAULT_SMOOTHNESS_WEIGHT,
    CrfParameters,
)
from ._refine import (
    DEFAULT_KEEP_CONFIDENT,
    DEFAULT_WARN_FRACTION,
    _check_fraction,
    class_dtype,
    input_classes,
    warn_if_changed,
)
from ._safety import (
    CORE_VOXELS,
    KEEP_CORE_FRACTION,
    WARN_CONFIDENCE,
    core_footprint,
    keep_confident_pixels,
    verify_cells,
    verify_changes,
)

__all__ = ["BlockwiseRefinement", "LazyChannels", "refine_blockwise", "refine_blockwise_steps"]

Slices = tuple[slice, ...]
#: Guard blocks may hold this many times a CRF block's voxels: the guards need about
#: 40 bytes per voxel, a CRF block about 240 (two classes).
GUARD_BLOCK_FACTOR = 6


@dataclass(frozen=True)
class BlockwiseRefinement:
    """What :func:`refine_blockwise_steps` did.

    Attributes
    ----------
    crf_blocks, guard_blocks : int
        Blocks of the CRF pass and of the guard passes.
    intensity_range : tuple of (float, float)
        Raw intensities mapped to 0 and 1, per channel.
    changed_fraction : float
        Fraction of the confident input pixels the CRF changed (before guards).
    restored_objects : int
        Input objects put back because the CRF removed their core.
    """

    crf_blocks: int
    guard_blocks: int
    intensity_range: tuple[tuple[float, float], ...]
    changed_fraction: float
    restored_objects: int


class LazyChannels:
    """An image as ``(C, *spatial)`` regions read on demand, never whole.

    Parameters
    ----------
    image : array-like
        ``spatial_shape`` (greyscale), ``(*spatial_shape, C)`` or
        ``(C, *spatial_shape)``; ``channel_axis`` names the channel axis.
    spatial_shape : tuple of int
    channel_axis : int, optional
    """

    def __init__(self, image: Any, spatial_shape: tuple[int, ...], channel_axis=None):
        shape = tuple(int(n) for n in image.shape)
        dtype = np.dtype(image.dtype)
        if not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
            raise ValueError(f"Expected a numeric image, got dtype {dtype}.")
        ndim = len(shape)
        axis = None
        if channel_axis is not None:
            if not -ndim <= channel_axis < ndim:
                raise ValueError(
                    f"channel_axis={channel_axis} is out of range for an image of shape {shape}."
                )
            axis = channel_axis % ndim
        elif shape != spatial_shape and ndim == len(spatial_shape) + 1:
            axis = ndim - 1 if shape[:-1] == spatial_shape else 0
        rest = tuple(n for i, n in enumerate(shape) if i != axis)
        if rest != spatial_shape:
            raise ValueError(
                f"Expected an image of shape {spatial_shape} (greyscale), "
                f"{(*spatial_shape, 'C')} or {('C', *spatial_shape)} to match the "
                f"probabilities, got image shape {shape}."
            )
        self.image, self.axis = image, axis
        self.shape = (1 if axis is None else shape[axis], *spatial_shape)

    def read(self, region: Slices) -> np.ndarray:
        """Channels of ``region`` (spatial slices), ``(C, *region)``."""
        if self.axis is None:
            return np.asarray(self.image[region])[np.newaxis]
        index = list(region)
        index.insert(self.axis, slice(None))
        return np.moveaxis(np.asarray(self.image[tuple(index)]), self.axis, 0)

    def __getitem__(self, index: tuple) -> np.ndarray:
        """``channels[(slice(None), *region)]``, as :func:`~._engine.tiled_crf` reads."""
        return self.read(tuple(index[1:]))

    def channel(self, c: int) -> _OneChannel:
        return _OneChannel(self, c)


class _OneChannel:
    """One channel of :class:`LazyChannels`, sliced along its first spatial axis."""

    def __init__(self, channels: LazyChannels, c: int):
        self.channels, self.c = channels, c
        self.shape = channels.shape[1:]

    def __getitem__(self, rows: slice) -> np.ndarray:
        region = (rows, *(slice(None),) * (len(self.shape) - 1))
        return self.channels.read(region)[self.c]


def refine_blockwise_steps(
    image: Any,
    probabilities: Any,
    out: Any,
    *,
    spacing: tuple[float, ...] | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    spatial_sigma: float | None = None,
    intensity_sigma: float = DEFAULT_INTENSITY_SIGMA,
    bilateral_weight: float = DEFAULT_BILATERAL_WEIGHT,
    smoothness_sigma: float | None = None,
    smoothness_weight: float = DEFAULT_SMOOTHNESS_WEIGHT,
    channel_axis: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    max_block_voxels: int = DEFAULT_MAX_BLOCK_VOXELS,
    keep_confident: float | None = DEFAULT_KEEP_CONFIDENT,
    keep_objects: bool = True,
    verify: bool = True,
    warn_fraction: float | None = DEFAULT_WARN_FRACTION,
    scratch: str | Path | None = None,
    guard_block_voxels: int | None = None,
    cancel: CancelLike = None,
) -> Generator[CrfProgress, None, BlockwiseRefinement]:
    """:func:`~napari_seglab.crf.refine` for arrays read and written a block at a time.

    A job (:mod:`napari_seglab.jobs`): yields :class:`CrfProgress`, returns a
    :class:`BlockwiseRefinement`; ``cancel`` raises
    :class:`~napari_seglab.jobs.JobCancelled` between blocks or iterations
    (``out`` is then partly written: the caller drops it).

    Parameters
    ----------
    image : array-like
        As :func:`refine`'s (greyscale, channels last or first), any array that
        numpy-style slicing reads (zarr, dask, memmap, numpy).
    probabilities : array-like ``(K, Y, X)`` or ``(K, Z, Y, X)``
        As :func:`refine`'s, read one region at a time (checked per region).
    out : writable array-like ``(*spatial)``
        Receives the class index per voxel (``uint8``; ``int32`` over 256 classes).
    scratch : path, optional
        Folder for the intermediate class maps and object ids (zarr); default
        in memory (about 5 bytes per voxel).
    guard_block_voxels : int, optional
        Largest region of the guard passes (margins included); default
        :data:`GUARD_BLOCK_FACTOR` times ``max_block_voxels``. The result does
        not depend on it.
    spacing, iterations, spatial_sigma, intensity_sigma, bilateral_weight, \
smoothness_sigma, smoothness_weight, channel_axis, intensity_range, max_block_voxels, \
keep_confident, keep_objects, verify, warn_fraction
        As :func:`refine`; the result equals ``refine``'s with the same values.

    Raises
    ------
    ValueError
        Shapes that do not match, probabilities outside ``[0, 1]`` or not
        summing to 1, non-finite image values (named by region), ``out`` of
        the wrong shape or a dtype that cannot hold the class indices.
    """
    clock = Stopwatch()
    check = CancelCheck(cancel)
    shape = tuple(int(n) for n in probabilities.shape)
    if len(shape) not in (3, 4) or shape[0] < 1:
        raise ValueError(
            "Expected probabilities of shape (C, Y, X) or (C, Z, Y, X) (classes first), "
            f"got shape {shape}."
        )
    spatial = shape[1:]
    n_classes = max(shape[0], 2)
    dtype = class_dtype(n_classes)
    if tuple(out.shape) != spatial or np.dtype(out.dtype).itemsize < dtype.itemsize:
        raise ValueError(
            f"Expected out of shape {spatial} and dtype {dtype} (or wider), got shape "
            f"{tuple(out.shape)} dtype {np.dtype(out.dtype)}."
        )
    channels = LazyChannels(image, spatial, channel_axis)
    step_spacing = check_spacing(spacing, len(spatial))
    _check_fraction("keep_confident", keep_confident, 0.5)
    _check_fraction("warn_fraction", warn_fraction, 0.0)
    params = CrfParameters(
        iterations=iterations,
        spatial_sigma=spatial_sigma,
        intensity_sigma=intensity_sigma,
        bilateral_weight=bilateral_weight,
        smoothness_sigma=smoothness_sigma,
        smoothness_weight=smoothness_weight,
    ).resolved(step_spacing)
    scaler = _fit_scaler(channels, intensity_range)
    check.raise_if_set("CRF refinement")

    def probabilities_for(region: Slices) -> np.ndarray:
        return check_probabilities(np.asarray(probabilities[(slice(None), *region)]))

    def finite_channels(region: Slices) -> np.ndarray:
        raw = channels.read(region)
        check_finite(raw, what=f"image region {tuple((r.start, r.stop) for r in region)}")
        return raw

    stage = _scratch_array(scratch, "crf", spatial, dtype)
    checked = _CheckedChannels(channels, finite_channels)
    yield from tiled_crf(
        checked,
        scaler,
        probabilities_for,
        stage,
        lambda marginals: np.argmax(marginals, axis=0).astype(dtype),
        step_spacing,
        params,
        max_block_voxels=max_block_voxels,
        cancel=check,
        clock=clock,
    )
    crf_blocks = checked.blocks
    guards = _Guards(step_spacing, keep_objects, dtype)
    if guard_block_voxels is None:
        guard_block_voxels = GUARD_BLOCK_FACTOR * max_block_voxels
    blocks = guards.plan(spatial, guard_block_voxels)
    ids = _scratch_array(scratch, "ids", spatial, np.int32) if keep_objects else None
    sure = changed = 0
    for index, (read, core, inner) in enumerate(blocks):
        check.raise_if_set("CRF refinement")
        probs = probabilities_for(read)
        given, confidence = input_classes(probs, dtype)
        refined = np.array(stage[read], dtype=dtype)
        confident = (confidence >= WARN_CONFIDENCE)[inner]
        sure += int(np.count_nonzero(confident))
        changed += int(np.count_nonzero((refined != given)[inner] & confident))
        if verify:
            verify_changes(refined, given, scaler.apply(channels.read(read)), step_spacing)
        out[core] = refined[inner]
        if ids is not None:
            guards.count_objects(given, refined, read, core, inner, ids)
        yield CrfProgress(
            "guarding",
            index + 1,
            len(blocks),
            clock.elapsed,
            message=f"checking changes, block {index + 1}/{len(blocks)}",
        )
    fraction = changed / sure if sure else 0.0
    warn_if_changed(fraction, warn_fraction, keep_confident)
    lost = guards.lost_objects() if ids is not None else None
    restored = 0 if lost is None else int(np.count_nonzero(lost[0]))
    if restored or keep_confident is not None:
        for index, (_, core, _) in enumerate(blocks):
            check.raise_if_set("CRF refinement")
            result = np.asarray(out[core])
            if restored:
                block_ids = np.asarray(ids[core])
                put_back = lost[0][block_ids]
                result[put_back] = lost[1][block_ids][put_back]
            if keep_confident is not None:
                given, confidence = input_classes(probabilities_for(core), dtype)
                keep_confident_pixels(result, given, confidence, keep_confident)
            out[core] = result
            yield CrfProgress(
                "restoring",
                index + 1,
                len(blocks),
                clock.elapsed,
                message=f"restoring objects, block {index + 1}/{len(blocks)}",
            )
    return BlockwiseRefinement(
        crf_blocks=crf_blocks,
        guard_blocks=len(blocks),
        intensity_range=tuple(zip(scaler.lo, scaler.hi)),
        changed_fraction=fraction,
        restored_objects=restored,
    )


def refine_blockwise(image: Any, probabilities: Any, out: Any, **kwargs) -> BlockwiseRefinement:
    """:func:`refine_blockwise_steps` run to the end (same arguments)."""
    return run_to_end(refine_blockwise_steps(image, probabilities, out, **kwargs))


class _CheckedChannels:
    """:class:`LazyChannels` for :func:`tiled_crf`: finite values checked, blocks counted."""

    def __init__(self, channels: LazyChannels, read):
        self.shape, self._read, self.blocks = channels.shape, read, 0

    def __getitem__(self, index: tuple) -> np.ndarray:
        self.blocks += 1
        return self._read(tuple(index[1:]))


def _fit_scaler(channels: LazyChannels, intensity_range) -> IntensityScaler:
    """:meth:`IntensityScaler.fit` of the whole image, reading a slab at a time."""
    if intensity_range is not None:
        return IntensityScaler.fit(np.zeros((channels.shape[0], 1)), intensity_range)
    ranges = [percentile_range_by_slabs(channels.channel(c)) for c in range(channels.shape[0])]
    return IntensityScaler(tuple(r[0] for r in ranges), tuple(r[1] for r in ranges))


def _scratch_array(folder, name: str, shape: tuple[int, ...], dtype) -> Any:
    if folder is None:
        return np.zeros(shape, dtype=dtype)
    import zarr

    chunks = tuple(min(n, 64) for n in shape)
    return zarr.open_array(
        str(Path(folder) / f"{name}.zarr"), mode="w", shape=shape, chunks=chunks, dtype=dtype
    )


class _Guards:
    """Block plan and object bookkeeping of the guard passes."""

    def __init__(self, spacing: tuple[float, ...], keep_objects: bool, dtype) -> None:
        self.factor, window = verify_cells(spacing)
        footprint = core_footprint(spacing, CORE_VOXELS * float(min(spacing)))
        self.footprint = footprint
        reach = [n // 2 for n in footprint.shape] if keep_objects else [0] * len(spacing)
        # Margins on whole cells: regions start on a cell boundary, as verify_changes needs.
        self.margin = tuple(
            math.ceil(max((w // 2) * f, r) / f) * f for w, f, r in zip(window, self.factor, reach)
        )
        self.dtype = dtype
        self.components: BlockComponents | None = None
        self.core_size: list[np.ndarray] = []
        self.core_kept: list[np.ndarray] = []

    def plan(self, shape: tuple[int, ...], max_voxels: int) -> list[tuple[Slices, Slices, Slices]]:
        """Blocks ``(read, core, core_in_read)`` in raster order; cores on cell boundaries."""
        import itertools

        self.components = BlockComponents(shape)
        core = list(shape)

        def read_size() -> int:
            return math.prod(min(c + 2 * m, n) for c, m, n in zip(core, self.margin, shape))

        while read_size() > max_voxels:
            axis = int(np.argmax([c / f for c, f in zip(core, self.factor)]))
            if core[axis] <= self.factor[axis]:
                break  # one cell per axis: as small as the guards allow
            half = math.ceil(core[axis] / 2)
            core[axis] = math.ceil(half / self.factor[axis]) * self.factor[axis]
        blocks = []
        for origin in itertools.product(*(range(0, n, c) for n, c in zip(shape, core))):
            core_sl = tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, core, shape))
            read_sl = tuple(
                slice(max(s.start - m, 0), min(s.stop + m, n))
                for s, m, n in zip(core_sl, self.margin, shape)
            )
            inner = tuple(
                slice(c.start - r.start, c.stop - r.start) for c, r in zip(core_sl, read_sl)
            )
            blocks.append((read_sl, core_sl, inner))
        return blocks

    def count_objects(self, given, refined, read, core, inner, ids_store) -> None:
        """Label the core's input objects; count each one's core voxels and those kept."""
        assert self.components is not None
        labels = given[inner]
        ids = self.components.label_block(labels, core)
        ids_store[core] = ids
        given_store = _GivenFaces(given, read)
        self.components.join_block(ids, labels, core, ids_store, given_store)
        size = np.zeros(self.components.count + 1, dtype=np.int64)
        kept = np.zeros_like(size)
        present = np.nonzero(np.bincount(labels.ravel()))[0]
        for cls in present[present > 0]:
            object_core = ndi.binary_erosion(given == cls, self.footprint, border_value=1)[inner]
            size += np.bincount(ids[object_core], minlength=size.size)
            kept += np.bincount(ids[object_core & (refined[inner] == cls)], minlength=size.size)
        self.core_size.append(size)
        self.core_kept.append(kept)

    def lost_objects(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per provisional id: whether its object is put back, and its class (or None)."""
        assert self.components is not None
        n = self.components.count + 1
        size, kept = np.zeros(n, np.int64), np.zeros(n, np.int64)
        for s, k in zip(self.core_size, self.core_kept):
            size[: s.size] += s
            kept[: k.size] += k
        roots, classes = self.components.roots()
        size = np.bincount(roots, weights=size, minlength=n)
        kept = np.bincount(roots, weights=kept, minlength=n)
        lost = (size > 0) & (kept < KEEP_CORE_FRACTION * size)
        lost[0] = False
        if not lost.any():
            return None
        return lost[roots], classes.astype(self.dtype)


class _GivenFaces:
    """The input classes of a guard region, indexed in volume coordinates (its faces)."""

    def __init__(self, given: np.ndarray, read: Slices) -> None:
        self.given, self.origin = given, [r.start for r in read]

    def __getitem__(self, region: Slices) -> np.ndarray:
        return self.given[
            tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, self.origin))
        ]
