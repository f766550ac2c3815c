"""Read NIfTI volumes onto napari's layer axes; write label volumes back to NIfTI.

:func:`read_nifti` returns a :class:`~napari_seglab.io.volume.Volume` whose
array axes are ``(Z, Y, X)`` = (Inferior, Posterior, patient Left), see
:mod:`napari_seglab.io.orientation`. :func:`write_nifti` writes a layer array
back with the source file's voxel grid and header geometry when the layer came
from a reader of this package (its ``metadata["geometry"]``), else with the
geometry given by ``spacing``/``origin``.

Layer type (labels or image): :mod:`napari_seglab.io.label_rule` decides from
the intent code, the file name and the number of distinct values;
``layer_type`` overrides it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .label_rule import is_integral, label_decision
from .nifti_forms import set_exact_forms
from .nifti_load import NiftiRefused, finite_affine, load_image
from .orientation import from_layer_axes, reorient_to_ras
from .volume import GEOMETRY_KEY, Volume, volume_from_source

#: Header fields that define the voxel grid; copied verbatim on write-back.
GEOMETRY_FIELDS = (
    "pixdim",
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "xyzt_units",
    "dim_info",
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: Scale factor from the file's spatial unit to millimetres.
_UNIT_TO_MM = {"unknown": 1.0, "mm": 1.0, "meter": 1000.0, "micron": 0.001}

#: Errors nibabel, gzip and numpy raise for unreadable files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, TypeError)


def is_nifti_path(path: str | os.PathLike) -> bool:
    """``path`` ends with ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path: str | os.PathLike, *, layer_type: str = "auto") -> Volume:
    """Read a NIfTI-1/2 file (``.nii``, ``.nii.gz``) as a reoriented :class:`Volume`.

    Parameters
    ----------
    path : str or path-like
        The file.
    layer_type : {"auto", "image", "labels"}
        ``"auto"`` applies :func:`~.label_rule.label_decision`; the others force the type
        (``"labels"`` requires integer-valued voxels).

    Returns
    -------
    Volume
        ``data`` ``(Z, Y, X)`` (``(Y, X)`` for one slice, ``(T, Z, Y, X)`` for 4D
        files), ``spacing``/``origin`` in mm and ``(I, P, L)``, header fields and the
        source geometry in ``metadata``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a NIfTI file, truncated or corrupt data, or a bad ``layer_type``.
    """
    if layer_type not in ("auto", "image", "labels"):
        raise ValueError(f"layer_type must be 'auto', 'image' or 'labels', got {layer_type!r}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NIfTI file not found: '{path}'.")
    if path.is_dir():
        raise ValueError(f"Expected a NIfTI file (.nii or .nii.gz), got a folder: '{path}'.")
    try:
        img = load_image(path)
    except NiftiRefused:
        raise
    except nib.filebasedimages.ImageFileError:
        raise ValueError(
            f"'{path}' is not a readable NIfTI file: no valid NIfTI-1/NIfTI-2 header found "
            "(not an image, or the header is damaged)."
        ) from None
    except (*_READ_ERRORS, nib.spatialimages.HeaderDataError) as exc:
        raise ValueError(
            f"'{path}' is not a readable NIfTI file ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(img, nib.Nifti1Pair | nib.Nifti2Pair):
        raise ValueError(
            f"Expected a NIfTI image in '{path}', nibabel read it as {type(img).__name__}."
        )
    header = img.header
    slope, inter = _scaling(img)
    scaled = not (slope == 1.0 and inter == 0.0)
    try:
        raw = np.asarray(img.dataobj.get_unscaled())
    except (*_READ_ERRORS, RuntimeError) as exc:
        raise ValueError(
            f"Could not read the voxel data of '{path}': the file is truncated or corrupt "
            f"(header says shape {tuple(header.get_data_shape())} of "
            f"{header.get_data_dtype()}; {type(exc).__name__}: {exc})."
        ) from None
    if raw.size == 0:
        raise ValueError(f"'{path}' holds no voxels (shape {raw.shape}).")

    is_label, reason = label_decision(raw, header, scaled=scaled, name=path.name)
    if layer_type == "labels":
        is_label, reason = True, "forced by layer_type='labels'"
    elif layer_type == "image":
        is_label, reason = False, "forced by layer_type='image'"
    if is_label:
        data = _as_integer_labels(raw * slope + inter if scaled else raw, path)
    elif scaled:
        data = raw.astype(np.float32)
        data *= np.float32(slope)
        data += np.float32(inter)
    else:
        data = raw

    spatial_unit = header.get_xyzt_units()[0]
    affine, from_qform = finite_affine(img, path)
    affine[:3, :] *= _UNIT_TO_MM.get(spatial_unit, 1.0)
    fields = {key: np.asarray(header[key]).tolist() for key in GEOMETRY_FIELDS}
    if from_qform:  # written back with the qform only, never the bad sform
        fields["sform_code"] = 0
    metadata: dict[str, Any] = {
        "source": {"path": str(path), "format": "nifti"},
        "nifti": _header_summary(header, slope, inter, reason),
        GEOMETRY_KEY: {
            "source_format": "nifti",
            "nifti_fields": fields,
        },
    }
    cal_min, cal_max = float(header["cal_min"]), float(header["cal_max"])
    limits = (cal_min, cal_max) if cal_max > cal_min else None
    return volume_from_source(
        data,
        affine,
        is_label=is_label,
        name=nifti_stem(path),
        metadata=metadata,
        contrast_limits=limits,
        # uncompressed files are memory-mapped: copy once, so layers never map the file
        detach=isinstance(data, np.memmap),
    )


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    origin: tuple[float, ...] | None = None,
    metadata: dict[str, Any] | None = None,
    is_label: bool = True,
) -> Path:
    """Write a layer array to NIfTI, restoring the source geometry when known.

    Parameters
    ----------
    path : str or path-like
        Target ending in ``.nii`` or ``.nii.gz``; written atomically (a
        temporary file in the same folder, then renamed).
    data : array, shape ``(Z, Y, X)``, ``(Y, X)`` or ``(T, Z, Y, X)``
        Layer data on napari's layer axes (Inferior, Posterior, Left).
    spacing, origin : tuple of float, optional
        napari ``scale`` and ``translate`` (one entry per axis of ``data``).
    metadata : dict, optional
        The layer's ``metadata``. When it holds ``"geometry"`` from one of this
        package's readers and ``data``'s shape, ``spacing`` and ``origin`` still
        match it, the file gets the source's voxel order, affine and header
        geometry fields exactly (a NIfTI source's header fields as they were);
        otherwise the geometry is built from ``spacing``/``origin`` (axis
        aligned, RAS+ voxel order). A new header gets the affine as sform and
        as qform only where the qform reproduces it (within 1e-3 mm at the grid
        corners); a sheared grid (DICOM gantry tilt) gets ``qform_code`` 0.
    is_label : bool
        Labels keep their integer dtype (``bool`` becomes ``uint8``) and get the
        NIfTI ``label`` intent; float data is refused. Images keep their dtype.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"Expected a file name ending in .nii or .nii.gz, got '{path.name}'.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Folder does not exist for '{path}'.")
    arr = np.asarray(data)
    if arr.ndim not in (2, 3, 4):
        raise ValueError(
            f"Expected (Y, X), (Z, Y, X) or (T, Z, Y, X) data, got shape {arr.shape}."
        )
    if is_label:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        elif not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"Expected integer label data, got dtype {arr.dtype}.")
    spacing = _per_axis(spacing, arr.ndim, 1.0, "spacing")
    origin = _per_axis(origin, arr.ndim, 0.0, "origin")

    header = nib.Nifti1Header()
    geometry = matching_geometry(metadata, arr.shape, spacing, origin)
    if geometry is not None:
        out = _to_source_grid(arr, geometry)
        affine = np.asarray(geometry["source_affine"], dtype=np.float64)
        fields = geometry.get("nifti_fields")
        if fields is not None:
            for key, value in fields.items():
                header[key] = value
        else:  # a qform only where it is exact (a sheared grid gets qform_code 0)
            set_exact_forms(header, affine, out.shape, "scanner")
    else:
        out, affine = _grid_from_scale(arr, spacing, origin)
        set_exact_forms(header, affine, out.shape, "aligned")
        header.set_xyzt_units("mm")
    header.set_data_dtype(out.dtype)
    header.set_data_shape(out.shape)
    if is_label:
        header.set_intent("label")
        header["descrip"] = b"napari-seglab labels"
    # The header defines the affine; passing its own best affine keeps every
    # geometry field as set above when nibabel harmonises header and image.
    img = nib.Nifti1Image(out, header.get_best_affine(), header=header)
    _atomic_save(img, path)
    return path


def matching_geometry(
    metadata: dict[str, Any] | None,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
) -> dict[str, Any] | None:
    """The reader's ``geometry`` entry if it still describes this layer, else ``None``.

    It matches when the layer has the shape the reader produced (or that shape
    without its leading time/channel axis) and napari's scale/translate are
    unchanged (relative tolerance 1e-6, absolute 1e-4 mm).
    """
    geometry = (metadata or {}).get(GEOMETRY_KEY)
    if not geometry or "layer_shape" not in geometry:
        return None
    layer_shape = tuple(geometry["layer_shape"])
    scale, translate = geometry["layer_scale"], geometry["layer_translate"]
    extra = len(geometry["extra_shape"]) > 0
    if tuple(shape) == layer_shape:
        drop_extra = False
    elif extra and tuple(shape) == layer_shape[1:]:
        drop_extra = True
        scale, translate = scale[1:], translate[1:]
    else:
        return None
    close = np.allclose(spacing, scale, rtol=1e-6, atol=1e-4) and np.allclose(
        origin, translate, rtol=1e-6, atol=1e-4
    )
    if not close:
        return None
    return {**geometry, "drop_extra": drop_extra}


def _to_source_grid(arr: np.ndarray, geometry: dict[str, Any]) -> np.ndarray:
    """Undo the reader's axis moves: layer array → source file's voxel order and shape."""
    extra = len(geometry["extra_shape"]) > 0 and not geometry["drop_extra"]
    out = arr
    dropped = geometry["dropped_axis"]
    if dropped is not None:
        out = np.expand_dims(out, (1 if extra else 0) + dropped)
    if extra:
        out = np.moveaxis(out, 0, 3)
    out = from_layer_axes(out, np.asarray(geometry["transform"]))
    source_shape = list(geometry["source_shape"])
    if geometry["drop_extra"]:
        source_shape = source_shape[: len(source_shape) - len(geometry["extra_shape"])]
    return np.ascontiguousarray(out.reshape(source_shape))


def _grid_from_scale(
    arr: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned geometry from napari scale/translate; returns RAS-ordered data and affine."""
    if arr.ndim == 2:  # one axial slice: add the slice axis
        arr, spacing, origin = arr[np.newaxis], (1.0, *spacing), (0.0, *origin)
    if arr.ndim == 4:  # time/channel axis goes last in NIfTI
        arr, spacing, origin = np.moveaxis(arr, 0, 3), spacing[1:], origin[1:]
    layer_affine = np.eye(4)
    layer_affine[:3, :3] = np.diag(spacing)
    layer_affine[:3, 3] = origin
    out, affine = reorient_to_ras(arr, layer_affine)
    return np.ascontiguousarray(out), affine


def _per_axis(values, ndim: int, default: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (default,) * ndim
    values = tuple(float(v) for v in np.ravel(values))
    if len(values) != ndim:
        raise ValueError(f"Expected {ndim} {name} values (one per axis), got {len(values)}.")
    return values


def _atomic_save(img: Any, path: Path) -> None:
    from ..checkpoints import atomic_path

    # the temporary name ends with path's name, so nibabel picks the same format
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _scaling(img: Any) -> tuple[float, float]:
    """Effective ``(slope, inter)`` of the image data (1, 0 when unscaled)."""
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    return float(slope), float(inter)


def _as_integer_labels(raw: np.ndarray, path: Path) -> np.ndarray:
    """Label ids as an integer array that holds every id exactly.

    Integer voxels are kept as they are. Float voxels (or scaled ones) become
    ``int32`` when every id fits, else ``uint32``, ``int64`` or ``uint64``,
    the first that holds the smallest and the largest id; two different ids
    never end up as one value.

    Raises
    ------
    ValueError
        If a voxel is NaN, infinite or not a whole number, or an id lies
        outside even ``int64``/``uint64`` (names the file and the values).
    """
    if np.issubdtype(raw.dtype, np.integer):
        return raw
    if not is_integral(raw):
        finite = np.isfinite(raw)
        bad = int(raw.size - np.count_nonzero(finite))
        fraction = int(np.count_nonzero(raw[finite] != np.round(raw[finite])))
        raise ValueError(
            f"Cannot open '{path}' as labels: its voxels are not integers ({bad} NaN or "
            f"infinite, {fraction} with a fractional part)."
        )
    low, high = float(raw.min()), float(raw.max())
    for dtype in (np.int32, np.uint32, np.int64, np.uint64):
        info = np.iinfo(dtype)
        # float(info.max) rounds up to a power of two for 64 bits: compare with <
        if low >= info.min and (high < float(info.max) + 1):
            return raw.astype(dtype)
    raise ValueError(
        f"Cannot open '{path}' as labels: its ids span {low:.17g} to {high:.17g}, "
        "outside what a 64-bit integer holds."
    )


def _header_summary(header: Any, slope: float, inter: float, reason: str) -> dict[str, Any]:
    """JSON-friendly header fields worth showing (the raw geometry lives in ``geometry``)."""
    spatial_unit, time_unit = header.get_xyzt_units()
    intent_code = int(header["intent_code"])
    return {
        "version": 2 if header.sizeof_hdr == 540 else 1,
        "shape": [int(n) for n in header.get_data_shape()],
        "dtype": str(header.get_data_dtype()),
        "zooms": [float(z) for z in header.get_zooms()],
        "spatial_unit": spatial_unit,
        "time_unit": time_unit,
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "description": _text(header["descrip"]),
        "intent_code": intent_code,
        "intent_name": _text(header["intent_name"]),
        "scl_slope": slope,
        "scl_inter": inter,
        "cal_min": float(header["cal_min"]),
        "cal_max": float(header["cal_max"]),
        "opened_as": reason,
    }


def _text(value: Any) -> str:
    raw = np.asarray(value).item()
    if isinstance(raw, bytes):
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    return str(raw).strip()
