"""Predict a lazy (dask, zarr, memory-mapped) image into a zarr store, block by block.

What the U-Net widget runs for layers that are not in memory: the image is
read one block (plus halo) at a time by
:func:`~.blockwise.predict_blockwise_events`, and the outputs are zarr
arrays on disk that napari shows lazily, so neither the input nor the result
is ever held whole in memory. The result equals whole-volume prediction
(see :mod:`.blockwise`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..jobs import ProgressEvent

__all__ = [
    "is_lazy",
    "predict_into_store_events",
    "predict_region_events",
    "spatial_shape",
    "visible_region",
]


def is_lazy(data: Any) -> bool:
    """Whether ``data`` is read on demand (dask, zarr, memory map), not held in memory.

    Parameters
    ----------
    data : array-like
        A layer's data (for a multiscale layer, one level).
    """
    if isinstance(data, np.memmap):
        return True
    return not isinstance(data, np.ndarray) and hasattr(data, "shape") and hasattr(data, "dtype")


def spatial_shape(model: Any, shape: Sequence[int], channel_axis: int | None = None) -> tuple:
    """The spatial part of ``shape`` for ``model`` (RGB or channel axis dropped).

    Parameters
    ----------
    model : SegmentationModel
    shape : tuple of int
        Shape of the image in the model's layout.
    channel_axis : int, optional
        Overrides ``model.channel_axis``.
    """
    ndim = len(shape)
    axis = -1 if model.rgb else (model.channel_axis if channel_axis is None else channel_axis)
    if axis is None:
        return tuple(int(s) for s in shape)
    return tuple(int(s) for a, s in enumerate(shape) if a != axis % ndim)


def predict_into_store_events(
    model: Any,
    volume: Any,
    folder: str | os.PathLike,
    *,
    instances: str = "none",
    probabilities: bool = False,
    spacing: Sequence[float] | None = None,
    cancel: Any = None,
    **predict_kwargs: Any,
) -> Generator[ProgressEvent, None, Any]:
    """Predict ``volume`` block by block into a new zarr store in ``folder``, as a job.

    Parameters
    ----------
    model : SegmentationModel
        A trained or loaded model (its intensity recipe fitted).
    volume : array-like
        The image in the model's layout (``(Z, Y, X)``, ``(Y, X)``, RGB or with the
        model's channel axis); dask, zarr, memory-mapped or numpy.
    folder : path-like
        Where the store ``prediction-*.zarr`` is created (made if missing).
    instances : {"none", "connected"}
        Object split, exact across blocks (``"watershed"`` is refused by the
        blockwise prediction).
    probabilities : bool
        Also store the class probabilities ``(C, *spatial)`` float32.
    spacing : sequence of float, optional
        Recorded in the result (voxel size of the spatial axes).
    cancel : threading.Event or callable, optional
    **predict_kwargs
        ``overlap``, ``tta``, ``device``, ``batch_size``, ``slicewise``,
        ``memory_budget``, ``block_shape`` (see
        :func:`~.blockwise.predict_blockwise_events`).

    Yields
    ------
    BlockProgress

    Returns
    -------
    napari_seglab.unet.Prediction
        ``labels`` ``(*spatial)`` and ``instances`` (or None) as writable zarr
        arrays (a Labels layer can be painted), ``probabilities``
        ``(C, *spatial)`` as a dask array over the store (or None).

    Raises
    ------
    JobCancelled, ValueError
        The store is removed first: a cancelled or failed prediction leaves
        nothing on disk.
    """
    from ..unet.postprocess import Prediction
    from .blockwise import create_outputs, predict_blockwise_events

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    shape = spatial_shape(model, volume.shape, predict_kwargs.get("channel_axis"))
    what = ["labels"]
    if probabilities:
        what.append("probabilities")
    if instances != "none":
        what.append("instances")
    store = Path(tempfile.mkdtemp(prefix="prediction-", suffix=".zarr", dir=folder))
    try:
        out = create_outputs(store, model, shape, what=what)
        yield from predict_blockwise_events(
            model, volume, out, instances=instances, cancel=cancel, **predict_kwargs
        )
    except BaseException:
        shutil.rmtree(store, ignore_errors=True)
        raise
    used = None if spacing is None else tuple(float(s) for s in spacing)[-len(shape) :]
    chances = out.get("probabilities")
    if chances is not None:
        import dask.array as da

        chances = da.from_zarr(chances)  # one class is sliced lazily, not read whole
    return Prediction(chances, out["labels"], out.get("instances"), used)


def predict_region_events(
    model: Any,
    volume: Any,
    region: Sequence[slice],
    labels: Any,
    *,
    cancel: Any = None,
    **predict_kwargs: Any,
) -> Generator[ProgressEvent, None, tuple[slice, ...]]:
    """Predict one region of ``volume`` (e.g. the part on screen) into ``labels``, as a job.

    The values equal the whole-volume prediction in that region (the same
    windows, with their context outside it; :func:`~.blockwise.predict_blockwise_events`
    with ``region``). Only the region of ``labels`` is written, after the
    prediction finished: a cancelled or failed job leaves ``labels`` as it was.

    Parameters
    ----------
    model : SegmentationModel
    volume : array-like
        The image in the model's layout; dask, zarr, memory-mapped or numpy.
    region : tuple of slice
        Spatial slices with starts and stops.
    labels : writable array-like ``(*spatial)``
        Receives the labels of the region (e.g. a zarr array the size of the
        volume, so regions predicted one after the other fill one layer).
    cancel : threading.Event or callable, optional
    **predict_kwargs
        ``overlap``, ``tta``, ``device``, ``batch_size``, ``slicewise``,
        ``block_shape``, ``memory_budget``, ``channel_axis``.

    Returns
    -------
    tuple of slice
        The region written.
    """
    from .blockwise import predict_blockwise_events

    shape = spatial_shape(model, volume.shape, predict_kwargs.get("channel_axis"))
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"Expected a labels array of the image's spatial shape {shape}, got "
            f"{tuple(labels.shape)}."
        )
    region = tuple(region)
    extent = tuple(int(r.stop) - int(r.start) for r in region)
    values = np.asarray(model.classes)
    out = {"labels": np.zeros(extent, dtype=np.min_scalar_type(int(values.max())))}
    yield from predict_blockwise_events(
        model, volume, out, region=region, cancel=cancel, **predict_kwargs
    )
    labels[region] = out["labels"]
    return region


def visible_region(
    shape: Sequence[int],
    corners: np.ndarray,
    plane: Sequence[int],
    depth: Sequence[int] | None = None,
) -> tuple[slice, ...]:
    """The part of a volume on screen, as slices (for :func:`predict_region_events`).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``([Z,] Y, X)``.
    corners : array ``(2, 2)``
        Two opposite screen corners in data coordinates ``(row, col)`` of the
        last two axes (any order, may lie outside the image).
    plane : tuple of int
        Index on screen along each leading axis (``()`` for 2D).
    depth : tuple of int, optional
        Planes to include around ``plane`` per leading axis (a 3D model's
        patch depth: the region then reaches ``depth // 2`` planes each way).

    Raises
    ------
    ValueError
        When the screen shows no part of the image.
    """
    shape = tuple(int(n) for n in shape)
    lead = len(shape) - 2
    corners = np.asarray(corners, dtype=float)
    low, high = corners.min(axis=0), corners.max(axis=0)
    spans = []
    for lo, hi, n in zip(low, high, shape[lead:]):
        start, stop = max(int(np.floor(lo)), 0), min(int(np.ceil(hi)) + 1, n)
        if start >= stop:
            raise ValueError(
                f"The view shows no part of the image (rows/cols {low} to {high} of {shape})."
            )
        spans.append(slice(start, stop))
    planes = []
    for axis, index in enumerate(plane[:lead]):
        reach = 0 if depth is None else int(depth[axis]) // 2
        index = min(max(int(index), 0), shape[axis] - 1)
        planes.append(slice(max(index - reach, 0), min(index + reach + 1, shape[axis])))
    return (*planes, *spans)
