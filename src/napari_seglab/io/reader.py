"""One reader for every file the plugin takes as input: the array plus its geometry.

:func:`read_array` is what the ``seglab`` subcommands (and scripts) call for
an image, a probability map or a label image, whatever the format:

========================  =====================================================
Path                      Read as
========================  =====================================================
``.nii``, ``.nii.gz``     NIfTI (:func:`~.nifti.read_nifti`), ``(Z, Y, X)`` IPL
folder of DICOM files     the series with most slices (:func:`~.dicom.read_dicom_series`);
                          series of slices, enhanced multi-frame files, SEG
``.dcm``, ``.dicom``,     the series that file belongs to, read from its folder
``.ima`` file
``.tif``, ``.tiff``       TIFF (``tifffile``); spacing from the JSON description
                          ``seglab sample`` writes, or ImageJ resolution tags
``.npy``                  NumPy array (never pickled objects)
``.zarr`` folder          a zarr array, or the full-resolution level of an
                          OME-Zarr image with its ``scale`` / ``translation``
``.png``, ``.jpg``,       2D pictures (Pillow), ``(Y, X)`` or
``.jpeg``, ``.bmp``       ``(Y, X, 3|4)``
========================  =====================================================

Arrays keep the axis order the file stores (NIfTI and DICOM are reoriented to
napari's ``(Z, Y, X)`` layer axes by their readers). ``lazy=True`` memory-maps
``.npy`` and uncompressed TIFF and leaves zarr arrays on disk, so the metrics
can read them slab by slab.

Errors name the path, what was expected and what was found:
``FileNotFoundError`` for a missing path, ``ValueError`` for an unknown
suffix (listing the supported ones) or unreadable content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

#: Suffixes :func:`read_array` reads, by format (DICOM folders have no suffix).
FORMATS: dict[str, tuple[str, ...]] = {
    "nifti": (".nii", ".nii.gz"),
    "dicom": (".dcm", ".dicom", ".ima"),
    "tiff": (".tif", ".tiff"),
    "npy": (".npy",),
    "zarr": (".zarr",),
    "picture": (".png", ".jpg", ".jpeg", ".bmp"),
}
#: Every supported suffix, in the order error messages list them.
SUFFIXES: tuple[str, ...] = tuple(s for suffixes in FORMATS.values() for s in suffixes)
#: Integer arrays with more distinct values than this do not look like labels
#: (8-bit arrays: :data:`MAX_LABEL_VALUES_8BIT`, since an 8-bit picture has at most 256).
MAX_LABEL_VALUES = 256
MAX_LABEL_VALUES_8BIT = 64


def supported_formats() -> str:
    """Human-readable list of what :func:`read_array` accepts, for messages and help."""
    return ", ".join(SUFFIXES) + " or a folder of DICOM files"


@dataclass(frozen=True, eq=False)
class ArrayFile:
    """An array read from a file, with the geometry the file stores.

    Attributes
    ----------
    data : ndarray, numpy.memmap or zarr array
        The array, in the axis order the file stores (NIfTI, DICOM: ``(Z, Y, X)``
        layer axes; TIFF, ``.npy``, zarr: as written; pictures ``(Y, X[, 3|4])``).
    path : Path
        Where it was read from.
    format : str
        A key of :data:`FORMATS` (``"nifti"``, ``"dicom"``, ``"tiff"``, ...).
    spacing : tuple of float or None
        Voxel size per axis of ``data`` (napari ``scale``); None when the file
        does not say.
    origin : tuple of float or None
        Position of voxel 0 per axis (napari ``translate``); None when the file
        does not say.
    affine : ndarray ``(4, 4)`` or None
        Voxel index ``(z, y, x, 1)`` to world, rotation included (NIfTI, DICOM).
    metadata : dict
        Format-specific header fields (NIfTI/DICOM: the :class:`~.volume.Volume`'s).
    label_hint : bool or None
        Labels or image as decided by the format's reader (NIfTI, DICOM SEG);
        None for formats that do not say (see :attr:`is_label`).
    """

    data: Any
    path: Path
    format: str
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    label_hint: bool | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(int(n) for n in self.data.shape)

    @cached_property
    def is_label(self) -> bool:
        """Whether the array looks like a label image.

        The format's decision when it has one (:attr:`label_hint`); otherwise
        True for booleans and for non-negative integers with at most
        :data:`MAX_LABEL_VALUES` distinct values (:data:`MAX_LABEL_VALUES_8BIT`
        for 8-bit data), never for RGB pictures or floats.
        """
        if self.label_hint is not None:
            return self.label_hint
        return looks_like_labels(self.data)


def looks_like_labels(array: Any) -> bool:
    """Guess whether ``array`` is a label image (see :attr:`ArrayFile.is_label`)."""
    from .label_rule import count_distinct

    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        return True
    if not np.issubdtype(dtype, np.integer):
        return False
    values = np.asarray(array)
    if values.ndim == 3 and values.shape[-1] in (3, 4) and dtype.itemsize == 1:
        return False  # an RGB(A) picture
    if values.size == 0 or values.min() < 0:
        return False
    limit = MAX_LABEL_VALUES_8BIT if dtype.itemsize == 1 else MAX_LABEL_VALUES
    return count_distinct(values, limit=limit) <= limit


def read_array(
    path: str | os.PathLike,
    *,
    lazy: bool = False,
    what: str = "file",
    layer_type: str = "auto",
    damaged: str = "error",
) -> ArrayFile:
    """Read an image, probability map or label file into an :class:`ArrayFile`.

    Parameters
    ----------
    path : str or path-like
        A file or folder in one of the formats of the module table.
    lazy : bool
        Memory-map ``.npy`` and uncompressed TIFF files and keep zarr arrays
        on disk (read when sliced) instead of loading them into memory.
    what : str
        What the file is, for error messages (``"image file"``, ``"label file"``).
    layer_type : {"auto", "image", "labels"}
        NIfTI only: force the type (``"labels"`` requires integer voxels), as
        :func:`~.nifti.read_nifti`.
    damaged : {"error", "warn"}
        DICOM only: files that look like part of the series but cannot be read
        (empty, cut short) are refused (:class:`~.dicom.DamagedDicomError`
        naming each one) or, with ``"warn"``, skipped with a ``UserWarning``
        and listed in ``metadata["dicom"]["skipped_files"]``, as
        :func:`~.dicom.read_dicom_series`.

    Returns
    -------
    ArrayFile
        The array with its spacing, origin and affine where the format stores them.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unsupported suffix (the message lists the supported ones), or content
        the format's library cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {str(path)!r} does not exist (expected {supported_formats()})."
        )
    kind = format_of(path, what=what)
    if kind == "nifti":
        return _from_volume(_read_nifti(path, layer_type), path, "nifti")
    if kind == "dicom":
        return _from_volume(_read_dicom(path, damaged), path, "dicom")
    if kind == "tiff":
        return _read_tiff(path, lazy)
    if kind == "npy":
        return _read_npy(path, lazy)
    if kind == "zarr":
        return _read_zarr(path, lazy)
    return _read_picture(path)


def format_of(path: str | os.PathLike, *, what: str = "file") -> str:
    """The :data:`FORMATS` key for ``path`` (a folder without suffix is DICOM).

    Raises
    ------
    ValueError
        The suffix is none of :data:`SUFFIXES`.
    """
    path = Path(path)
    name = path.name.lower()
    for kind, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return kind
    if path.is_dir():
        return "dicom"
    suffix = "".join(path.suffixes[-2:]) if name.endswith(".gz") else path.suffix
    raise ValueError(
        f"unsupported {what} {str(path)!r}: expected {supported_formats()}, "
        f"got {repr(suffix) if suffix else 'no suffix'}."
    )


def _from_volume(volume: Any, path: Path, kind: str) -> ArrayFile:
    return ArrayFile(
        data=volume.data,
        path=path,
        format=kind,
        spacing=tuple(float(s) for s in volume.spacing),
        origin=tuple(float(o) for o in volume.origin),
        affine=np.asarray(volume.affine),
        metadata=volume.metadata,
        label_hint=bool(volume.is_label),
    )


def _read_nifti(path: Path, layer_type: str) -> Any:
    from .nifti import read_nifti

    return read_nifti(path, layer_type=layer_type)


def _read_dicom(path: Path, damaged: str = "error") -> Any:
    from .dicom import read_dicom_series

    if path.is_dir():
        return read_dicom_series(path, damaged=damaged)
    import pydicom

    try:
        uid = pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID")
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ValueError(
            f"expected a DICOM file, could not read {str(path)!r} ({type(exc).__name__}: {exc})."
        ) from None
    return read_dicom_series(path.parent, None if uid is None else str(uid), damaged=damaged)


def _read_npy(path: Path, lazy: bool) -> ArrayFile:
    try:
        data = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"expected a NumPy .npy array, could not read {str(path)!r} "
            f"({type(exc).__name__}: {exc})."
        ) from None
    return ArrayFile(data=data, path=path, format="npy")


def _read_tiff(path: Path, lazy: bool) -> ArrayFile:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            spacing = _tiff_spacing(tif)
            data = None
            if lazy:
                try:
                    data = tifffile.memmap(path, mode="r")
                except ValueError:  # compressed or tiled: not memory-mappable
                    data = None
            if data is None:
                data = tif.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"expected a TIFF image, could not read {str(path)!r} ({type(exc).__name__}: {exc})."
        ) from None
    if spacing is not None and len(spacing) != data.ndim:
        spacing = None
    return ArrayFile(data=data, path=path, format="tiff", spacing=spacing)


def _tiff_spacing(tif: Any) -> tuple[float, ...] | None:
    """Spacing from tifffile's JSON description (``spacing`` key) or ImageJ tags."""
    for meta in tif.shaped_metadata or ():
        spacing = meta.get("spacing") if isinstance(meta, dict) else None
        if spacing is not None:
            return tuple(float(s) for s in np.ravel(spacing))
    imagej = tif.imagej_metadata
    if not imagej:
        return None
    page = tif.pages[0]
    x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x_res is None or y_res is None:
        return None
    (xn, xd), (yn, yd) = x_res.value, y_res.value
    if not (xn and yn):
        return None
    plane = (float(yd) / float(yn), float(xd) / float(xn))
    if "spacing" in imagej and int(imagej.get("slices", 1)) > 1:
        return (float(imagej["spacing"]), *plane)
    return plane


def _read_zarr(path: Path, lazy: bool) -> ArrayFile:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises various errors for a non-zarr folder
        raise ValueError(
            f"expected a zarr array or OME-Zarr image, could not open {str(path)!r} "
            f"({type(exc).__name__}: {exc})."
        ) from None
    spacing = origin = label_hint = None
    if not hasattr(node, "shape"):  # a group: the first level of an OME-Zarr image
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if "image-label" in attrs or "image-label" in attrs.get("ome", {}):
            label_hint = True  # an OME-Zarr label image
        if not multiscales:
            raise ValueError(
                f"expected a zarr array or OME-Zarr image in {str(path)!r}, got a zarr group "
                "without 'multiscales' metadata."
            )
        level = multiscales[0]["datasets"][0]
        node = node[level["path"]]
        for transform in level.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                spacing = tuple(float(s) for s in transform["scale"])
            elif transform.get("type") == "translation":
                origin = tuple(float(t) for t in transform["translation"])
    data = node if lazy else np.asarray(node[...])
    return ArrayFile(
        data=data,
        path=path,
        format="zarr",
        spacing=spacing,
        origin=origin,
        label_hint=label_hint,
    )


def _read_picture(path: Path) -> ArrayFile:
    from PIL import Image

    try:
        with Image.open(path) as picture:
            data = np.asarray(picture)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(
            f"expected a {path.suffix} picture, could not read {str(path)!r} "
            f"({type(exc).__name__}: {exc})."
        ) from None
    return ArrayFile(data=data, path=path, format="picture")
