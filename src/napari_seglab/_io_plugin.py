"""npe2 reader and writer contributions for NIfTI files and DICOM folders.

Thin adapters over :mod:`napari_seglab.io`: they return napari ``LayerData``
tuples ``(data, kwargs, layer_type)`` and import neither napari nor Qt.

A napari reader takes no options, so what the DICOM reader does with damaged
files of a series (see :func:`~napari_seglab.io.read_dicom_series`) comes from
the environment variable :data:`DAMAGED_ENV`: unset or ``error`` refuses
(the error names the variable), ``warn`` reads the other slices with a warning
naming the skipped files (napari shows it as a notification) and lists them in
``layer.metadata["dicom"]["skipped_files"]``.

Oblique scans (a voxel grid rotated or sheared against the patient axes) open on
their voxel grid with the true voxel sizes as ``scale`` (see ``docs/readers.md``:
napari slices and paints a layer whose affine turns the slice axis inconsistently);
:data:`OBLIQUE_ENV` ``=affine`` gives them their exact affine instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .io.dicom import DamagedDicomError, folder_has_dicom, read_dicom_folder, read_dicom_series
from .io.nifti import is_nifti_path, read_nifti, write_nifti

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
ReaderFunction = Callable[[PathOrPaths], list[LayerData]]

#: Environment variable: ``warn`` lets the napari DICOM reader skip damaged files.
DAMAGED_ENV = "SEGLAB_DICOM_DAMAGED"
#: Environment variable: ``affine`` places oblique volumes with their exact affine.
OBLIQUE_ENV = "SEGLAB_OBLIQUE"


def get_nifti_reader(path: PathOrPaths) -> ReaderFunction | None:
    """The NIfTI reader when every path ends in ``.nii``/``.nii.gz``, else ``None``."""
    paths = _as_list(path)
    if not paths or not all(is_nifti_path(p) for p in paths):
        return None
    return read_nifti_layers


def read_nifti_layers(path: PathOrPaths) -> list[LayerData]:
    """One layer per NIfTI file: Labels for label maps, Image otherwise.

    Raises ``ValueError`` naming the file for unreadable, truncated or
    non-NIfTI content.
    """
    rotate = oblique_mode() == "affine"
    return [read_nifti(p).layer_data(rotate_oblique=rotate) for p in _as_list(path)]


def get_dicom_reader(path: PathOrPaths) -> ReaderFunction | None:
    """The DICOM reader for a folder holding DICOM files or one DICOM file, else ``None``.

    A file counts only when it carries the ``DICM`` preamble (the manifest
    offers only ``*.dcm``, ``*.dicom`` and ``*.ima`` names; called directly it
    also takes a ``DICOMDIR`` path, read as its folder);
    other files are left to other readers.
    """
    paths = _as_list(path)
    if len(paths) != 1:
        return None
    target = Path(paths[0])
    if target.is_dir():
        return read_dicom_layers if folder_has_dicom(target) else None
    if target.name.upper() == "DICOMDIR":
        return read_dicom_layers if folder_has_dicom(target.parent) else None
    return read_dicom_layers if _has_dicom_preamble(target) else None


def read_dicom_layers(path: PathOrPaths) -> list[LayerData]:
    """Layers of the DICOM data at ``path``.

    A folder (or its ``DICOMDIR``) gives one layer per series, in
    ``SeriesNumber`` order; a single file gives the series it belongs to,
    read from the files beside it. Damaged files of a series are refused, or
    skipped with a warning when :data:`DAMAGED_ENV` is ``warn``.

    Raises
    ------
    ValueError
        :class:`~napari_seglab.io.DamagedDicomError` naming each damaged file
        and :data:`DAMAGED_ENV`; other unreadable series.
    """
    damaged = damaged_mode()
    rotate = oblique_mode() == "affine"
    layers = []
    try:
        for p in _as_list(path):
            target = Path(p)
            if target.name.upper() == "DICOMDIR" and not target.is_dir():
                target = target.parent
            if target.is_dir():
                volumes = read_dicom_folder(target, damaged=damaged)
                layers += [volume.layer_data(rotate_oblique=rotate) for volume in volumes]
            else:
                uid = _series_uid(target)
                volume = read_dicom_series(target.parent, uid, damaged=damaged)
                layers.append(volume.layer_data(rotate_oblique=rotate))
    except DamagedDicomError as exc:
        hint = (
            f"set the environment variable {DAMAGED_ENV}=warn before starting napari "
            "to open the readable slices"
        )
        raise DamagedDicomError(exc.files, exc.where, hint) from None
    return layers


def damaged_mode() -> str:
    """What the napari DICOM reader does with damaged files: :data:`DAMAGED_ENV`, else "error".

    Raises
    ------
    ValueError
        The variable holds something other than ``error`` or ``warn``.
    """
    value = os.environ.get(DAMAGED_ENV, "").strip().lower() or "error"
    if value not in ("error", "warn"):
        raise ValueError(f"{DAMAGED_ENV} must be 'error' or 'warn', got {value!r}.")
    return value


def oblique_mode() -> str:
    """How the napari readers place oblique volumes: :data:`OBLIQUE_ENV`, else ``"grid"``.

    ``"grid"``: on the voxel grid (closest patient orientation, true voxel sizes as
    ``scale``; positions away from voxel 0 approximate, with a warning).
    ``"affine"``: with a napari ``affine`` giving every voxel its exact position.

    Raises
    ------
    ValueError
        The variable holds something other than ``grid`` or ``affine``.
    """
    value = os.environ.get(OBLIQUE_ENV, "").strip().lower() or "grid"
    if value not in ("grid", "affine"):
        raise ValueError(f"{OBLIQUE_ENV} must be 'grid' or 'affine', got {value!r}.")
    return value


def _has_dicom_preamble(path: Path) -> bool:
    """True when ``path`` is a file with ``DICM`` at byte 128 (Part 10 files)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _series_uid(path: Path) -> str | None:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    uid = getattr(header, "SeriesInstanceUID", None)
    return str(uid) if uid else None


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: save a Labels layer as NIfTI with its source geometry.

    Parameters
    ----------
    path : str
        Target; ``.nii.gz`` is appended when it ends in neither ``.nii`` nor ``.nii.gz``.
    data : array
        Labels layer data, ``(Z, Y, X)``, ``(Y, X)`` or ``(T, Z, Y, X)``.
    meta : dict
        Layer attributes; ``scale``, ``translate`` and ``metadata`` are used.

    Returns
    -------
    list of str
        The path written.
    """
    target = str(path)
    if not is_nifti_path(target):
        target += ".nii.gz"
    written = write_nifti(
        target,
        data,
        spacing=meta.get("scale"),
        origin=meta.get("translate"),
        metadata=meta.get("metadata"),
        is_label=True,
    )
    return [str(written)]


def _as_list(path: PathOrPaths) -> list[str]:
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]
