"""The dense CRF and the object split after a blockwise prediction, block by block.

A volume over the memory budget is predicted block by block into zarr arrays
(:func:`~.blockwise.predict_blockwise`); with ``--crf`` its probabilities are
then refined by :func:`napari_seglab.crf.refine_blockwise` (equal to
:func:`napari_seglab.crf.refine` on the whole volume with the same CRF block
size), mapped to the model's label values, and split into connected objects
joined across block faces (:class:`~napari_seglab.block_components.BlockComponents`),
as the in-memory path does with the whole arrays.
"""

from __future__ import annotations

from collections.abc import Generator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from ..block_components import BlockComponents
from ..jobs import CancelCheck, CancelLike, Stopwatch
from .blockwise import BlockProgress, _renumber
from .windows import block_grid

__all__ = [
    "ForegroundMap",
    "crf_block_voxels",
    "refine_and_split_events",
    "refine_into_store_events",
]

#: Smallest CRF block (voxels, margins included) a memory budget can ask for: below it the
#: kernel margins dominate and blocks multiply (about 8 MB for two classes).
MIN_CRF_BLOCK_VOXELS = 2**15


def crf_block_voxels(memory_budget: int | None, classes: int) -> int:
    """Largest CRF block (voxels) for ``memory_budget`` bytes and ``classes`` classes.

    The dense CRF needs about ``80 + 80 * classes`` bytes per block voxel
    (240 for two classes, measured in ``crf.refine``'s docstring); the result
    lies between :data:`MIN_CRF_BLOCK_VOXELS` and the CRF's default block.
    """
    from ..crf import DEFAULT_MAX_BLOCK_VOXELS

    if memory_budget is None:
        return DEFAULT_MAX_BLOCK_VOXELS
    fitting = int(memory_budget) // (80 + 80 * max(int(classes), 2))
    return int(min(DEFAULT_MAX_BLOCK_VOXELS, max(MIN_CRF_BLOCK_VOXELS, fitting)))


def refine_and_split_events(
    image: Any,
    out: MutableMapping[str, Any],
    classes: Any,
    *,
    spacing: tuple[float, ...] | None,
    channel_axis: int | None,
    scratch: Path,
    max_block_voxels: int,
    instances: str = "none",
    block_shape: tuple[int, ...] | None = None,
    cancel: CancelLike = None,
) -> Generator[Any, None, int | None]:
    """Refine ``out["probabilities"]`` into ``out["labels"]`` (and ``out["instances"]``), a job.

    Parameters
    ----------
    image : array-like
        The input in the model's layout (read a region at a time).
    out : mapping of str to array
        ``"probabilities"`` ``(K, *spatial)`` (filled), ``"labels"`` ``(*spatial)``
        and, for an object split, ``"instances"`` ``(*spatial)`` int32 (written).
    classes : sequence of int
        Label value of each probability channel (the model's ``classes``).
    spacing : tuple of float or None
        Voxel size of the spatial axes.
    channel_axis : int or None
        Axis of ``image`` holding channels.
    scratch : Path
        Folder for the CRF's intermediate arrays.
    max_block_voxels : int
        CRF block size (see :func:`crf_block_voxels`).
    instances : {"none", "connected"}
    block_shape : tuple of int, optional
        Blocks for the label mapping and the split (default: ``out["labels"]``'s chunks).
    cancel : threading.Event or callable, optional

    Yields
    ------
    CrfProgress, BlockProgress

    Returns
    -------
    int or None
        Objects found (None without a split).
    """
    import zarr

    from ..crf import refine_blockwise_steps

    if instances not in ("none", "connected"):
        raise ValueError(
            f"instances={instances!r} cannot be computed block by block: expected 'none' or "
            "'connected' (a watershed's seeds come from whole objects)."
        )
    check, clock = CancelCheck(cancel), Stopwatch()
    labels = out["labels"]
    shape = tuple(int(n) for n in labels.shape)
    index = zarr.open_array(
        str(Path(scratch) / "crf-classes.zarr"),
        mode="w",
        shape=shape,
        chunks=tuple(labels.chunks),
        dtype=np.uint8 if len(classes) <= 256 else np.int32,
    )
    yield from refine_blockwise_steps(
        image,
        out["probabilities"],
        index,
        spacing=spacing,
        channel_axis=channel_axis,
        max_block_voxels=max_block_voxels,
        scratch=Path(scratch),
        cancel=check,
    )
    values = np.asarray(classes).astype(labels.dtype)
    blocks = list(block_grid(shape, block_shape or tuple(labels.chunks)))
    components = BlockComponents(shape, int(values[0])) if instances != "none" else None
    for i, block in enumerate(blocks):
        check.raise_if_set("CRF refinement")
        mapped = values[np.asarray(index[block])]
        labels[block] = mapped
        if components is not None:
            ids = components.label_block(mapped, block)
            out["instances"][block] = ids
            components.join_block(ids, mapped, block, out["instances"], labels)
        where = tuple((b.start, b.stop) for b in block)
        yield BlockProgress("labelling", i + 1, len(blocks), clock.elapsed, where, len(blocks))
    if components is None:
        return None
    return (yield from _renumber(out["instances"], blocks, components, 0, check, clock))


class ForegroundMap:
    """A foreground probability array ``(*spatial)`` seen as ``(1, *spatial)``, read lazily.

    Parameters
    ----------
    data : array-like
        zarr, dask, memory map or numpy; only the regions asked for are read.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.shape = (1, *(int(n) for n in data.shape))
        self.dtype = data.dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        return np.asarray(self.data[tuple(index[1:])])[np.newaxis]


def refine_into_store_events(
    image: Any,
    probabilities: Any,
    folder: str | Path,
    *,
    cancel: CancelLike = None,
    **crf_kwargs: Any,
) -> Generator[Any, None, Any]:
    """Refine lazy probabilities into a new zarr store in ``folder``, as a job.

    What the CRF widget runs for layers that are not in memory.

    Parameters
    ----------
    image : array-like
        As :func:`napari_seglab.crf.refine`'s, read a region at a time.
    probabilities : array-like ``(K, *spatial)``, or a :class:`ForegroundMap`
    folder : path-like
        Where the store ``crf-*.zarr`` is created (made if missing).
    cancel : threading.Event or callable, optional
    **crf_kwargs
        Keywords of :func:`napari_seglab.crf.refine_blockwise_steps`
        (``spacing``, kernel settings, ``max_block_voxels``, guards).

    Returns
    -------
    zarr.Array ``(*spatial)``
        Class index per voxel (writable: a Labels layer can be painted).

    Raises
    ------
    JobCancelled, ValueError
        The store is removed first: a cancelled or failed refinement leaves
        nothing on disk.
    """
    import shutil
    import tempfile

    import zarr

    from ..crf import refine_blockwise_steps

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(n) for n in probabilities.shape[1:])
    classes = max(int(probabilities.shape[0]), 2)
    store = Path(tempfile.mkdtemp(prefix="crf-", suffix=".zarr", dir=folder))
    try:
        group = zarr.open_group(str(store), mode="w")
        out = group.create_array(
            "labels",
            shape=shape,
            chunks=tuple(min(n, 64) for n in shape),
            dtype=np.uint8 if classes <= 256 else np.int32,
            fill_value=0,
        )
        scratch = store / "scratch"
        scratch.mkdir()
        yield from refine_blockwise_steps(
            image, probabilities, out, scratch=scratch, cancel=cancel, **crf_kwargs
        )
        shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(store, ignore_errors=True)
        raise
    return out
