"""U-Net prediction of a volume larger than memory, block by block, equal to whole-volume.

:func:`predict_blockwise_events` walks the volume in blocks (raster order).
For each block it runs exactly the sliding windows of the *whole-volume* grid
(:class:`~.windows.WindowGrid`) that overlap the block, reading only their
input region (the block plus at most one window of halo per side), and blends
them with the same Gaussian weights and the same normalisation as
:func:`napari_seglab.unet.predict`. The block's probabilities are therefore
the whole-volume probabilities (equal up to float rounding of the network on
other batch sizes, within 1e-5), and its labels, from
:func:`~napari_seglab.unet.probabilities_to_labels`, are identical.

Windows shared by two blocks that follow each other along the last axis run
once (their weighted probabilities are kept for the next block). Windows
shared across the other axes run once per block (the price of memory that
does not grow with the volume): with blocks of ``k`` window steps per axis the
network runs up to ``((k + 1) / k) ** (ndim - 1)`` times the whole-volume window
count, which is why :func:`~.windows.choose_block_shape` takes the largest
block that fits the memory budget.

Instances: ``"connected"`` labels each block and joins objects across block
faces (:class:`~napari_seglab.block_components.BlockComponents`), then renumbers every block in a
second pass, giving the same instance image as
:func:`napari_seglab.unet.to_instances` on the whole volume. ``"watershed"``
is refused: its seeds come from the distance transform of whole objects,
which no fixed halo bounds.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..block_components import BlockComponents
from ..jobs import CancelCheck, ProgressEvent, Stopwatch, run_to_end
from .windows import WindowGrid, block_grid, choose_block_shape, importance_map

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "BlockProgress",
    "BlockwiseResult",
    "create_outputs",
    "predict_blockwise",
    "predict_blockwise_events",
]

#: Memory budget (bytes) used to choose the block shape when none is given.
DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: Output names :func:`predict_blockwise_events` writes into ``out``.
OUTPUT_NAMES = ("probabilities", "labels", "instances")


@dataclass(frozen=True)
class BlockProgress(ProgressEvent):
    """Progress of a blockwise prediction.

    ``stage`` is ``"predicting"`` (``done``/``total`` windows run, counting a
    window once per block it runs for), ``"instances"`` (blocks renumbered).
    ``block`` is the block being worked on (image coordinates, ``(start, stop)``
    per axis) and ``blocks`` the number of blocks.
    """

    block: tuple[tuple[int, int], ...] | None = None
    blocks: int = 0


@dataclass(frozen=True)
class BlockwiseResult:
    """What a blockwise prediction did (the arrays are in ``out``).

    Attributes
    ----------
    shape : tuple of int
        Spatial shape predicted.
    block_shape : tuple of int
    blocks : int
    windows : int
        Windows run (a window overlapping several blocks counts once per block).
    grid_windows : int
        Windows of the whole-volume grid (what :func:`~napari_seglab.unet.predict` runs).
    objects : int or None
        Objects found by the instance split (None without one).
    """

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    blocks: int
    windows: int
    grid_windows: int
    objects: int | None = None


def _spatial_axes(ndim: int, model: Any, channel_axis: int | None) -> list[int]:
    axis = -1 if model.rgb else (model.channel_axis if channel_axis is None else channel_axis)
    if axis is None:
        return list(range(ndim))
    return [a for a in range(ndim) if a != axis % ndim]


def create_outputs(
    group: Any,
    model: Any,
    spatial_shape: Sequence[int],
    *,
    what: Sequence[str] = ("labels",),
    chunks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Create the zarr arrays :func:`predict_blockwise_events` fills, in a zarr group.

    Parameters
    ----------
    group : zarr.Group, str or path-like
        Group (or a path/store opened as one) to create the arrays in.
    model : SegmentationModel
    spatial_shape : tuple of int
    what : sequence of {"probabilities", "labels", "instances"}
        Arrays to create: ``probabilities`` ``(C, *spatial)`` float32, ``labels``
        ``(*spatial)`` (smallest unsigned dtype holding ``model.classes``),
        ``instances`` ``(*spatial)`` int32. Instances need labels (created with them).
    chunks : tuple of int, optional
        Spatial chunk shape (default: 64 per axis, clipped to the shape).

    Returns
    -------
    dict of str to zarr.Array
    """
    import zarr

    unknown = set(what) - set(OUTPUT_NAMES)
    if unknown:
        raise ValueError(f"Unknown outputs {sorted(unknown)}: expected some of {OUTPUT_NAMES}.")
    if not hasattr(group, "create_array"):
        group = zarr.open_group(str(group), mode="a")
    shape = tuple(int(s) for s in spatial_shape)
    chunks = tuple(min(int(c), s) for c, s in zip(chunks or (64,) * len(shape), shape))
    values = np.asarray(model.classes)
    names = list(what) + (["labels"] if "instances" in what and "labels" not in what else [])
    out = {}
    for name in names:
        if name == "probabilities":
            spec = ((model.num_classes, *shape), (1, *chunks), np.float32)
        elif name == "labels":
            spec = (shape, chunks, np.min_scalar_type(int(values.max())))
        else:
            spec = (shape, chunks, np.int32)
        out[name] = group.create_array(
            name, shape=spec[0], chunks=spec[1], dtype=spec[2], fill_value=0, overwrite=True
        )
    return out


def predict_blockwise_events(
    model: Any,
    volume: Any,
    out: MutableMapping[str, Any],
    *,
    block_shape: Sequence[int] | None = None,
    memory_budget: int | None = None,
    instances: str = "none",
    min_size: int = 0,
    region: Sequence[slice] | None = None,
    cancel=None,
    overlap: float = 0.5,
    tta: bool = False,
    device: Any = "auto",
    batch_size: int | None = None,
    channel_axis: int | None = None,
    slicewise: bool | None = None,
    mixed_precision: bool = True,
) -> Generator[BlockProgress, None, BlockwiseResult]:
    """Predict ``volume`` block by block into ``out``, as a job.

    Parameters
    ----------
    model : SegmentationModel
        Its intensity recipe must be fitted (a trained or loaded model is): a
        recipe fitted on the fly would see one block, not the volume.
    volume : array-like
        Layer data in the model's layout (``(Z, Y, X)``, ``(Y, X)``, RGB, with
        the model's channel axis): a numpy array, memmap, zarr or dask array.
        Only one block's input region is read at a time.
    out : mapping of str to array
        Writable arrays (zarr, numpy), see :func:`create_outputs`:
        ``"probabilities"`` ``(C, *spatial)``, ``"labels"`` ``(*spatial)``,
        ``"instances"`` ``(*spatial)`` int32 (needs ``"labels"``). Missing keys
        are not computed (``"labels"`` is needed for ``instances != "none"``).
    block_shape : tuple of int, optional
        Spatial block shape; default from ``memory_budget``.
    memory_budget : int, optional
        Bytes one block may use (default :data:`DEFAULT_MEMORY_BUDGET`).
    instances : {"none", "connected"}
        Object split (``"watershed"`` raises ``ValueError``: not blockwise-exact).
    min_size : int
        Objects with fewer voxels are dropped from the split.
    region : tuple of slice, optional
        Predict only this part of the volume (spatial slices with explicit
        starts and stops, e.g. the part on screen): ``out``'s arrays then have
        the region's shape, and the values equal the whole-volume prediction
        there (the same windows, with their context outside the region). The
        object split covers the region only.
    cancel : threading.Event or callable, optional
        Checked after every batch of windows.
    overlap, tta, device, batch_size, channel_axis, slicewise, mixed_precision
        As :func:`napari_seglab.unet.predict`.

    Yields
    ------
    BlockProgress

    Returns
    -------
    BlockwiseResult

    Raises
    ------
    ValueError
        Volume does not fit the model, unfitted intensity recipe, unknown or
        missing outputs, ``instances="watershed"``.
    JobCancelled
        When ``cancel`` was set; ``out`` then holds the finished blocks only.
    """
    import torch

    from ..device import resolve_device
    from ..unet.inference import default_batch_size, make_window_predictor

    check = CancelCheck(cancel)
    clock = Stopwatch()
    if instances == "watershed":
        raise ValueError(
            "instances='watershed' cannot be computed block by block: its seeds come from the "
            "distance transform of whole objects, which no fixed halo bounds. Use "
            "instances='connected', or predict the volume whole."
        )
    if instances not in ("none", "connected"):
        raise ValueError(f"Unknown instances {instances!r}: expected 'none' or 'connected'.")
    unknown = set(out) - set(OUTPUT_NAMES)
    if unknown or not out:
        raise ValueError(f"Expected outputs among {OUTPUT_NAMES} in out, got {sorted(out)}.")
    if instances != "none" and not {"labels", "instances"} <= set(out):
        raise ValueError("An instance split needs 'labels' and 'instances' arrays in out.")
    recipe = model.intensity
    if recipe.kind in ("percentile", "zscore") and not recipe.stats:
        raise ValueError(
            f"The model's {recipe.kind!r} intensity recipe is not fitted: blockwise prediction "
            "needs the statistics of the training data (save and load the trained model)."
        )
    plane_by_plane = model.check_input(volume, channel_axis=channel_axis, slicewise=slicewise)
    ndim = len(volume.shape)
    axes = _spatial_axes(ndim, model, channel_axis)
    shape = tuple(int(volume.shape[a]) for a in axes)
    roi = (1, *model.patch_size) if plane_by_plane else tuple(model.patch_size)
    grid = WindowGrid.build(shape, roi, overlap)
    device = resolve_device(device)
    batch = int(batch_size) if batch_size else default_batch_size(model, device)
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")
    if block_shape is None:
        block_shape = choose_block_shape(
            shape,
            roi,
            DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget,
            overlap=overlap,
            in_channels=model.in_channels,
            classes=model.num_classes,
            batch_size=batch,
            input_itemsize=np.dtype(volume.dtype).itemsize,
        )
    block_shape = tuple(max(int(b), 1) for b in block_shape)
    if len(block_shape) != len(shape):
        raise ValueError(f"Expected a block shape per spatial axis of {shape}, got {block_shape}.")
    corner, extent = _region_bounds(region, shape)
    _check_outputs(out, model, extent)
    blocks = [
        tuple(slice(b.start + o, b.stop + o) for b, o in zip(block, corner))
        for block in block_grid(extent, block_shape)
    ]
    weights = torch.from_numpy(importance_map(roi))[None, None]
    components = BlockComponents(extent, model.classes[0]) if instances != "none" else None
    network = model.network.to(device)
    network.eval()
    predictor = make_window_predictor(network, device, tta=tta, mixed_precision=mixed_precision)
    weight = weights[0, 0].numpy()
    total = sum(len(todo) for _, todo, _ in _plan(grid, blocks))
    cache: dict[tuple[int, ...], np.ndarray] = {}  # windows shared with the next block
    done = 0
    keep: set = set()
    for block, (starts, todo, keep_next) in zip(blocks, _plan(grid, blocks)):
        keep_from_before, keep = keep, keep_next
        where = tuple((b.start, b.stop) for b in block)
        inputs = _read_region(model, volume, grid, block, axes, channel_axis)
        origin = [r.start for r in grid.region(block)]
        lo = [b.start + p for b, p in zip(block, grid.pad_before)]
        acc = np.zeros((model.num_classes, *(b.stop - b.start for b in block)), np.float32)
        count = np.zeros(acc.shape[1:], np.float32)
        cache = {w: p for w, p in cache.items() if w in keep_from_before}
        added = 0  # windows of ``starts`` blended so far (grid order, as whole-volume)
        for first in range(0, max(len(todo), 1), batch):
            group = todo[first : first + batch]
            if group:
                tiles = [
                    inputs[
                        (
                            slice(None),
                            *(slice(s - o, s - o + r) for s, o, r in zip(w, origin, roi)),
                        )
                    ]
                    for w in group
                ]
                x = torch.from_numpy(np.stack(tiles))
                with torch.inference_mode():
                    probs = predictor(x[:, :, 0] if plane_by_plane else x)
                    if plane_by_plane:
                        probs = probs[:, :, None]
                    probs = (probs.to("cpu") * weights).numpy()
                # a kept window is copied out of its batch, so the batch can be freed
                cache.update((w, p.copy() if w in keep else p) for w, p in zip(group, probs))
            last = starts.index(group[-1]) + 1 if group and first + batch < len(todo) else None
            for w in starts[added:last]:
                src, dst = _overlap(w, roi, lo, acc.shape[1:])
                acc[(slice(None), *dst)] += cache[w][(slice(None), *src)]
                count[dst] += weight[src]
                if w not in keep:
                    del cache[w]
            added = len(starts) if last is None else last
            done += len(group)
            check.raise_if_set("Blockwise prediction")
            yield BlockProgress("predicting", done, total, clock.elapsed, where, len(blocks))
        acc /= count
        local = tuple(slice(b.start - o, b.stop - o) for b, o in zip(block, corner))
        _write_block(out, local, acc, model, components)
    objects = None
    if components is not None:
        local_blocks = list(block_grid(extent, block_shape))
        objects = yield from _renumber(
            out["instances"], local_blocks, components, min_size, check, clock
        )
    return BlockwiseResult(shape, block_shape, len(blocks), total, grid.count, objects=objects)


def predict_blockwise(model: Any, volume: Any, out: MutableMapping[str, Any], **kwargs):
    """:func:`predict_blockwise_events` run to the end (same arguments)."""
    return run_to_end(predict_blockwise_events(model, volume, out, **kwargs))


def _region_bounds(region, shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Start and shape of ``region`` (whole ``shape`` when None), checked against ``shape``."""
    if region is None:
        return (0,) * len(shape), tuple(shape)
    region = tuple(region)
    bounds = [(part.start, part.stop) for part in region] if len(region) == len(shape) else []
    if not bounds or any(
        a is None or b is None or not 0 <= a < b <= n for (a, b), n in zip(bounds, shape)
    ):
        raise ValueError(
            f"Expected a region of {len(shape)} slices with starts and stops inside the "
            f"volume {tuple(shape)}, got {region}."
        )
    return tuple(int(a) for a, _ in bounds), tuple(int(b - a) for a, b in bounds)


def _plan(grid: WindowGrid, blocks: list) -> Iterator[tuple[list, list, set]]:
    """Per block: its windows (grid order), those to run, those to keep for the next block.

    Blocks follow each other along the last axis within a row: the windows a
    block shares with the next one are run once and kept (their weighted
    probabilities), so the last axis costs no repeated windows. A generator:
    memory does not grow with the number of blocks.
    """
    kept: set = set()
    for i, block in enumerate(blocks):
        starts = grid.windows(block)
        if not (i and _same_row(blocks[i - 1], block)):
            kept = set()
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        keep = set()
        if following is not None and _same_row(block, following):
            keep = set(starts) & set(grid.windows(following))
        yield starts, [w for w in starts if w not in kept], keep
        kept = keep


def _same_row(a: tuple[slice, ...], b: tuple[slice, ...]) -> bool:
    return a[:-1] == b[:-1] and a[-1].stop == b[-1].start


def _check_outputs(out: Mapping[str, Any], model: Any, shape: tuple[int, ...]) -> None:
    for name, array in out.items():
        expected = (model.num_classes, *shape) if name == "probabilities" else shape
        if tuple(array.shape) != expected:
            raise ValueError(
                f"Expected out[{name!r}] of shape {expected}, got {tuple(array.shape)}."
            )


def _read_region(model, volume, grid, block, axes, channel_axis) -> np.ndarray:
    """Normalised ``(C, *region)`` input of the windows overlapping ``block``, zero-padded."""
    from ..imaging import check_finite

    region = grid.region(block)
    want = tuple(slice(r.start - p, r.stop - p) for r, p in zip(region, grid.pad_before))
    clipped = tuple(slice(max(w.start, 0), min(w.stop, s)) for w, s in zip(want, grid.shape))
    index: list[Any] = [slice(None)] * len(volume.shape)
    for axis, part in zip(axes, clipped):
        index[axis] = part
    raw = np.asarray(volume[tuple(index)])
    check_finite(raw, what=f"image region {tuple((c.start, c.stop) for c in clipped)}")
    prepared = model.prepare_input(raw, channel_axis=channel_axis)
    if prepared.shape[1:] == tuple(w.stop - w.start for w in want):
        return prepared
    inputs = np.zeros((prepared.shape[0], *(w.stop - w.start for w in want)), np.float32)
    inner = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(clipped, want))
    inputs[(slice(None), *inner)] = prepared
    return inputs


def _overlap(start, roi, lo, size) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Window-local and block-local slices of a window's intersection with the block."""
    src, dst = [], []
    for s, r, b, n in zip(start, roi, lo, size):
        a, z = max(s, b), min(s + r, b + n)
        src.append(slice(a - s, z - s))
        dst.append(slice(a - b, z - b))
    return tuple(src), tuple(dst)


def _write_block(out, block, probabilities, model, components) -> None:
    from ..unet.postprocess import probabilities_to_labels

    if "probabilities" in out:
        out["probabilities"][(slice(None), *block)] = probabilities
    if "labels" not in out:
        return
    labels = probabilities_to_labels(probabilities, model.classes)
    out["labels"][block] = labels
    if components is None:
        return
    ids = components.label_block(labels, block)
    out["instances"][block] = ids
    components.join_block(ids, labels, block, out["instances"], out["labels"])


def _renumber(array, blocks, components, min_size, check, clock):
    """Second pass: provisional ids → whole-volume object ids, block by block."""
    lut, objects = components.lookup(min_size)
    for i, block in enumerate(blocks):
        check.raise_if_set("Blockwise prediction")
        array[block] = lut[np.asarray(array[block])]
        where = tuple((b.start, b.stop) for b in block)
        yield BlockProgress("instances", i + 1, len(blocks), clock.elapsed, where, len(blocks))
    return objects
