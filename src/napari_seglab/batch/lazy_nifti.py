"""An uncompressed NIfTI file as a dask array on napari's layer axes, read slab by slab.

:func:`open_nifti_lazy` gives the same array (values, dtype, ``(Z, Y, X)`` =
``(I, P, L)`` axes) and the same geometry (spacing, origin, affine, the
``geometry`` metadata the NIfTI writer uses to write results back on the
source grid) as :func:`napari_seglab.io.read_nifti`, but reads voxels only
when a part of the array is computed: the dask array slices nibabel's array
proxy (one slab of the file per chunk) and reorients by flips and transposes,
as :mod:`napari_seglab.io.orientation` does for the eager reader.

The labels-or-image decision (:func:`~napari_seglab.io.label_rule.label_decision`)
needs the intent code and, for integer voxels, their range and count; with
``layer_type="auto"`` those are computed by streaming over the file once
(bounded memory); pass ``layer_type="image"`` to skip that pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["open_nifti_lazy"]

#: Default bytes per dask chunk (a slab of whole planes of the file).
CHUNK_BYTES = 64 * 2**20


class _UnscaledProxy:
    """Array-like over nibabel's proxy returning the stored (unscaled) voxels."""

    def __init__(self, proxy: Any, dtype: np.dtype):
        self._proxy = proxy
        self.shape = tuple(int(n) for n in proxy.shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self._proxy._get_unscaled(slicer=index))


def _slab_chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """Whole planes along the last stored axis (contiguous in a Fortran-ordered file)."""
    if not shape:
        return ()
    plane = int(np.prod(shape[:-1], dtype=np.int64)) * itemsize
    count = max(1, min(shape[-1], chunk_bytes // max(plane, 1)))
    return (*shape[:-1], int(count))


def _label_decision(raw: Any, header: Any, *, scaled: bool, name: str) -> tuple[bool, str]:
    """:func:`~napari_seglab.io.label_rule.label_decision` with streamed dask reductions."""
    import dask.array as da

    from ..io.label_rule import (
        LABEL_INTENTS,
        MAX_LABEL_VALUES,
        MAX_UNNAMED_LABEL_VALUES,
        name_says_labels,
    )

    intent = int(header["intent_code"])
    integer = np.issubdtype(raw.dtype, np.integer)
    if intent in LABEL_INTENTS:
        integral = integer or bool(da.all(da.isfinite(raw) & (raw == da.round(raw))).compute())
        if integral:
            return True, f"intent code {intent} ({LABEL_INTENTS[intent]})"
        return False, f"intent {LABEL_INTENTS[intent]} but non-integer voxel values"
    if not integer:
        return False, f"{raw.dtype} voxels"
    if scaled:
        return False, "integer voxels with intensity scaling (scl_slope/scl_inter)"
    low, top = (int(v) for v in da.compute(raw.min(), raw.max()))
    if low < 0:
        return False, "integer voxels with negative values"
    named = name_says_labels(name)
    limit = MAX_LABEL_VALUES if named else MAX_UNNAMED_LABEL_VALUES
    why = f"a file name that says labels ({name!r})" if named else "a file name without a hint"
    if top < limit:
        return True, f"non-negative integer voxels up to {top} and {why}"
    count = int(da.unique(raw).size.compute())
    if count > limit:
        return False, f"more than {limit} distinct integer values with {why}"
    return True, f"non-negative integer voxels with {count} distinct values and {why}"


def _as_labels(values: Any, path: Path) -> Any:
    """Integer ids as :func:`napari_seglab.io.nifti._as_integer_labels` chooses them."""
    import dask.array as da

    if np.issubdtype(values.dtype, np.integer):
        return values
    integral, low, high = da.compute(
        da.all(da.isfinite(values) & (values == da.round(values))), values.min(), values.max()
    )
    if not integral:
        raise ValueError(f"Cannot open '{path}' as labels: its voxels are not integers.")
    for dtype in (np.int32, np.uint32, np.int64, np.uint64):
        info = np.iinfo(dtype)
        if float(low) >= info.min and float(high) < float(info.max) + 1:
            return values.astype(dtype)
    raise ValueError(f"Cannot open '{path}' as labels: its ids do not fit a 64-bit integer.")


def _reorient(data: Any, ras_affine: np.ndarray, name: str) -> tuple[Any, dict, np.ndarray]:
    """:func:`napari_seglab.io.volume.volume_from_source` on a dask array (no copy)."""
    import dask.array as da
    from nibabel.orientations import inv_ornt_aff

    from ..io.orientation import layer_affine_from_ras, layer_transform, split_layer_affine
    from ..io.volume import orientation_record

    source_shape = tuple(int(n) for n in data.shape)
    padded = max(0, 3 - data.ndim)
    arr = data.reshape(source_shape + (1,) * padded)
    extra_shape = arr.shape[3:]
    if len(extra_shape) > 1:
        arr = arr.reshape((*arr.shape[:3], int(np.prod(extra_shape))))
    ras_affine = np.asarray(ras_affine, dtype=np.float64)
    source, transform = layer_transform(ras_affine)
    shape3 = arr.shape[:3]
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            arr = da.flip(arr, axis=axis)
    order = np.arange(arr.ndim)
    order[:3] = np.argsort(transform[:, 0])
    arr = arr.transpose(tuple(int(i) for i in order))
    layer_affine = layer_affine_from_ras(ras_affine @ inv_ornt_aff(transform, shape3))
    spacing, origin, rotation = split_layer_affine(layer_affine)
    has_extra = arr.ndim == 4
    if has_extra:
        arr = da.moveaxis(arr, 3, 0)
    singletons = [axis for axis, n in enumerate(arr.shape[-3:]) if n == 1]
    dropped = singletons[0] if len(singletons) == 1 else None
    spatial_spacing = [float(s) for s in spacing]
    spatial_origin = [float(o) for o in origin]
    if dropped is not None:
        arr = da.squeeze(arr, axis=arr.ndim - 3 + dropped)
        del spatial_spacing[dropped]
        del spatial_origin[dropped]
    layer_spacing = ([1.0] if has_extra else []) + spatial_spacing
    layer_origin = ([0.0] if has_extra else []) + spatial_origin
    orientation = orientation_record(name, _axcodes(source), rotation, stacklevel=5)
    geometry = {
        "source_shape": list(source_shape),
        "source_affine": ras_affine.tolist(),
        "transform": transform.tolist(),
        "padded_axes": padded,
        "extra_shape": [int(n) for n in extra_shape],
        "dropped_axis": dropped,
        "layer_shape": list(arr.shape),
        "layer_scale": layer_spacing,
        "layer_translate": layer_origin,
    }
    info = {"orientation": orientation, "geometry": geometry}
    return arr, info, layer_affine


def _axcodes(ornt: np.ndarray) -> tuple[str, ...]:
    from nibabel.orientations import ornt2axcodes

    return tuple(ornt2axcodes(ornt))


def open_nifti_lazy(
    path: str | Path, *, layer_type: str = "auto", chunk_bytes: int = CHUNK_BYTES
) -> Any:
    """An uncompressed ``.nii`` file as an :class:`~napari_seglab.io.ArrayFile` of dask data.

    Parameters
    ----------
    path : path-like
        An uncompressed NIfTI-1/2 file.
    layer_type : {"auto", "image", "labels"}
        As :func:`napari_seglab.io.read_nifti`; ``"auto"`` streams over integer
        voxels once to count them.
    chunk_bytes : int
        Bytes per dask chunk (whole planes of the file's last axis).

    Returns
    -------
    ArrayFile
        ``data`` a dask array ``(Z, Y, X)`` (``(Y, X)``, ``(T, Z, Y, X)``) equal
        to ``read_array(path).data``; spacing, origin, affine and metadata as
        :func:`~napari_seglab.io.read_array` gives them.

    Raises
    ------
    ValueError
        Compressed content, not NIfTI, truncated data, a degenerate affine.
    """
    import dask.array as da
    import nibabel as nib

    from ..io.nifti import _UNIT_TO_MM, GEOMETRY_FIELDS, _header_summary, _scaling, nifti_stem
    from ..io.nifti_load import finite_affine
    from ..io.reader import ArrayFile
    from ..io.volume import GEOMETRY_KEY

    if layer_type not in ("auto", "image", "labels"):
        raise ValueError(f"layer_type must be 'auto', 'image' or 'labels', got {layer_type!r}.")
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise ValueError(f"'{path}' is gzip-compressed: it cannot be read lazily.")
    try:
        img = nib.load(str(path), mmap=False)
    except Exception as exc:
        raise ValueError(
            f"'{path}' is not a readable NIfTI file ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(img, nib.Nifti1Pair | nib.Nifti2Pair):
        raise ValueError(f"Expected a NIfTI image in '{path}', got {type(img).__name__}.")
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    dtype = np.dtype(header.get_data_dtype())
    needed = (
        int(getattr(img.dataobj, "offset", 0))
        + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    )
    if path.stat().st_size < needed:
        raise ValueError(
            f"Could not read the voxel data of '{path}': the file is truncated (header says "
            f"shape {shape} of {dtype}, {needed} bytes; the file has {path.stat().st_size})."
        )
    slope, inter = _scaling(img)
    scaled = not (slope == 1.0 and inter == 0.0)
    proxy = _UnscaledProxy(img.dataobj, dtype)
    raw = da.from_array(
        proxy, chunks=_slab_chunks(shape, dtype.itemsize, chunk_bytes), asarray=False
    )
    if layer_type == "auto":
        is_label, reason = _label_decision(raw, header, scaled=scaled, name=path.name)
    else:
        is_label, reason = layer_type == "labels", f"forced by layer_type={layer_type!r}"
    if is_label:
        data = _as_labels(raw * slope + inter if scaled else raw, path)
    elif scaled:
        data = raw.astype(np.float32) * np.float32(slope) + np.float32(inter)
    else:
        data = raw
    affine, from_qform = finite_affine(img, path)
    affine[:3, :] *= _UNIT_TO_MM.get(header.get_xyzt_units()[0], 1.0)
    fields = {key: np.asarray(header[key]).tolist() for key in GEOMETRY_FIELDS}
    if from_qform:
        fields["sform_code"] = 0
    out, info, layer_affine = _reorient(data, affine, nifti_stem(path))
    metadata: dict[str, Any] = {
        "source": {"path": str(path), "format": "nifti"},
        "nifti": _header_summary(header, slope, inter, reason),
        "orientation": info["orientation"],
        GEOMETRY_KEY: {
            "source_format": "nifti",
            "nifti_fields": fields,
            **info["geometry"],
        },
    }
    return ArrayFile(
        data=out,
        path=path,
        format="nifti",
        spacing=tuple(info["geometry"]["layer_scale"]),
        origin=tuple(info["geometry"]["layer_translate"]),
        affine=layer_affine,
        metadata=metadata,
        label_hint=bool(is_label),
    )
