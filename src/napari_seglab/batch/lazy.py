"""Open any input lazily: a dask array plus the geometry :func:`napari_seglab.io.read_array` gives.

:func:`open_lazy` returns an :class:`~napari_seglab.io.reader.ArrayFile` whose
``data`` is always a dask array, so batch pipelines can read a volume block
by block whatever its format:

=====================  =========================================================
Input                  How it is opened
=====================  =========================================================
zarr array             ``dask.array.from_zarr`` (its own chunks)
OME-Zarr image         level 0 of the multiscale, ``scale`` / ``translation``
                       of its ``coordinateTransformations`` as spacing / origin
TIFF, OME-TIFF         tifffile's zarr store (``imread(aszarr=True)``): pages or
                       tiles read on demand, compressed or not
``.npy``               memory-mapped, chunked along the first axis
``.nii`` (uncompressed) nibabel's array proxy, slab by slab, reoriented to
                       ``(Z, Y, X)`` = ``(I, P, L)`` like the eager reader
                       (:mod:`.lazy_nifti`)
``.nii.gz``            read **eagerly** (a gzip stream cannot be read at an
                       offset without decompressing everything before it)
DICOM series           read **eagerly** (one file per slice, already small)
PNG, JPEG, BMP         read eagerly (2D pictures)
=====================  =========================================================

The array and its geometry equal those of ``read_array(path)`` (tested); only
when voxels are read differs. Eagerly read inputs are wrapped in a dask array
too, and ``metadata["lazy"]`` says which way the file was opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["open_lazy"]

#: Default bytes per dask chunk for memory-mapped inputs.
CHUNK_BYTES = 64 * 2**20


def open_lazy(
    path: str | os.PathLike,
    *,
    layer_type: str = "auto",
    what: str = "file",
    chunk_bytes: int = CHUNK_BYTES,
) -> Any:
    """Open ``path`` as an :class:`~napari_seglab.io.reader.ArrayFile` holding a dask array.

    Parameters
    ----------
    path : path-like
        A file or folder :func:`~napari_seglab.io.read_array` reads.
    layer_type : {"auto", "image", "labels"}
        NIfTI only, as :func:`~napari_seglab.io.read_nifti`. ``"image"`` spares
        a lazily opened integer NIfTI the pass that counts its values.
    what : str
        What the file is, for error messages.
    chunk_bytes : int
        Bytes per chunk for memory-mapped ``.npy`` and NIfTI files.

    Returns
    -------
    ArrayFile
        ``data`` a ``dask.array.Array``; spacing, origin, affine, metadata and
        label hint as ``read_array`` gives them; ``metadata["lazy"]`` is True
        unless the format was read eagerly.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unsupported or unreadable input (as :func:`~napari_seglab.io.read_array`).
    """
    from ..io.reader import format_of, supported_formats

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {str(path)!r} does not exist (expected {supported_formats()})."
        )
    kind = format_of(path, what=what)
    if kind == "zarr":
        return _open_zarr(path)
    if kind == "tiff":
        return _open_tiff(path)
    if kind == "npy":
        return _open_npy(path, chunk_bytes)
    if kind == "nifti" and _uncompressed(path):
        from .lazy_nifti import open_nifti_lazy

        file = open_nifti_lazy(path, layer_type=layer_type, chunk_bytes=chunk_bytes)
        return _with(file, lazy=True)
    return _eager(path, what=what, layer_type=layer_type)


def _uncompressed(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) != b"\x1f\x8b"


def _with(file: Any, *, lazy: bool, **changes: Any) -> Any:
    from dataclasses import replace

    metadata = {**file.metadata, "lazy": lazy}
    return replace(file, metadata=metadata, **changes)


def _eager(path: Path, *, what: str, layer_type: str) -> Any:
    import dask.array as da

    from ..io.reader import read_array

    file = read_array(path, what=what, layer_type=layer_type)
    return _with(file, lazy=False, data=da.from_array(file.data, chunks=file.data.shape or ()))


def _open_zarr(path: Path) -> Any:
    import dask.array as da

    from ..io.reader import _read_zarr

    file = _read_zarr(path, lazy=True)  # level 0, its geometry, image-label metadata
    return _with(file, lazy=True, data=da.from_zarr(file.data))


def _open_tiff(path: Path) -> Any:
    import dask.array as da
    import tifffile
    import zarr

    from ..io.reader import ArrayFile, _tiff_spacing

    try:
        with tifffile.TiffFile(path) as tif:
            spacing = _tiff_spacing(tif)
        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
    except (tifffile.TiffFileError, OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"expected a TIFF image, could not read {str(path)!r} ({type(exc).__name__}: {exc})."
        ) from None
    if not hasattr(node, "shape"):  # a pyramid (OME-TIFF with sub-resolutions): level 0
        node = node[sorted(node.array_keys())[0]]
    data = da.from_zarr(node)
    if spacing is not None and len(spacing) != data.ndim:
        spacing = None
    return ArrayFile(data=data, path=path, format="tiff", spacing=spacing, metadata={"lazy": True})


def _open_npy(path: Path, chunk_bytes: int) -> Any:
    import dask.array as da

    from ..io.reader import ArrayFile

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"expected a NumPy .npy array, could not read {str(path)!r} "
            f"({type(exc).__name__}: {exc})."
        ) from None
    chunks: Any = array.shape
    if array.ndim:
        row = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
        chunks = (max(1, min(array.shape[0], chunk_bytes // max(row, 1))), *array.shape[1:])
    data = da.from_array(array, chunks=chunks)
    return ArrayFile(data=data, path=path, format="npy", metadata={"lazy": True})
