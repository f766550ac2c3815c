"""npe2 reader and writer contributions for NIfTI files and DICOM folders.

Thin adapters over :mod:`napari_seglab.io`: they return napari ``LayerData``
tuples ``(data, kwargs, layer_type)`` and import neither napari nor Qt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .io.dicom import folder_has_dicom, read_dicom_folder
from .io.nifti import is_nifti_path, read_nifti, write_nifti

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
ReaderFunction = Callable[[PathOrPaths], list[LayerData]]


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
    return [read_nifti(p).layer_data() for p in _as_list(path)]


def get_dicom_reader(path: PathOrPaths) -> ReaderFunction | None:
    """The DICOM reader when ``path`` is a folder holding DICOM files, else ``None``."""
    paths = _as_list(path)
    if len(paths) != 1 or not Path(paths[0]).is_dir():
        return None
    if not folder_has_dicom(paths[0]):
        return None
    return read_dicom_layers


def read_dicom_layers(path: PathOrPaths) -> list[LayerData]:
    """One Image layer per series in the folder, in ``SeriesNumber`` order."""
    return [volume.layer_data() for p in _as_list(path) for volume in read_dicom_folder(p)]


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
