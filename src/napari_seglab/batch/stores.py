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

__all__ = ["is_lazy", "predict_into_store_events", "spatial_shape"]


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
