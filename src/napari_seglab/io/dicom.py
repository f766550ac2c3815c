"""Read a folder of DICOM slices as reoriented :class:`~napari_seglab.io.volume.Volume` objects.

A folder may hold several series (files are grouped by ``SeriesInstanceUID``).
:func:`read_dicom_folder` reads every series (the napari reader opens each as
its own layer, in ``SeriesNumber`` order); :func:`read_dicom_series` reads one,
by UID or, when none is given, the series with the most slices.

Within a series, slices are sorted by their position along the slice normal
(``row direction × column direction`` from ``ImageOrientationPatient``),
``RescaleSlope``/``RescaleIntercept`` are applied (so CT is in HU), the slice
spacing is taken from the positions and must be uniform, and the volume is
reoriented to the layer axes ``(Z, Y, X)`` = (Inferior, Posterior, Left) of
:mod:`napari_seglab.io.orientation`, like NIfTI files.

Only the folder itself is searched. Non-DICOM files, DICOMDIR and DICOM objects
without pixels are skipped; a file without the preamble but with a valid header
is read; a file that looks like part of a series but cannot be read is refused
(or skipped with a warning, ``damaged="warn"``; :mod:`.dicom_damage`). Enhanced
multi-frame files and RT Dose grids are split into frames (:mod:`.dicom_frames`);
other multi-frame files and colour DICOM are refused. DICOM SEG objects become
label volumes on the grid of the series they reference (:mod:`.dicom_seg`).
``MONOCHROME1`` series keep their stored values and open with an inverted grey
colormap. No patient-identifying tags are copied into the metadata.

This module scans folders and reads series; slice geometry lives in
:mod:`.dicom_geometry`, pixel values (rescale, window) in :mod:`.dicom_pixels`
and the making of the :class:`Volume` (affine, metadata) in :mod:`.dicom_volume`.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.misc import is_dicom

from .dicom_damage import (
    DamagedDicomError,
    check_damaged,
    described,
    looks_like_dicom_name,
    owner_uid,
    read_header,
)
from .dicom_frames import has_frame_positions, is_multi_frame, split_frames
from .dicom_geometry import (
    ORIENTATION_TOLERANCE,
    SPACING_TOLERANCE,
    Grid,
    own_grid,
    same_orientation,
    sorted_geometry,
    uniform_slice_spacing,
)
from .dicom_pixels import rescaled_stack, window
from .dicom_seg import (
    frame_mask,
    frame_segment,
    is_segmentation,
    referenced_series_uid,
    segment_labels,
)
from .dicom_volume import KEPT_TAGS, grid_volume
from .volume import Volume

__all__ = [
    "KEPT_TAGS",
    "ORIENTATION_TOLERANCE",
    "SPACING_TOLERANCE",
    "DamagedDicomError",
    "DicomSeriesInfo",
    "folder_has_dicom",
    "list_dicom_series",
    "read_dicom_folder",
    "read_dicom_series",
]


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One series found in a folder.

    Attributes
    ----------
    uid : str
        ``SeriesInstanceUID``.
    number : int or None
        ``SeriesNumber``.
    description : str
        ``SeriesDescription`` (may be empty).
    modality : str
        ``Modality`` (``CT``, ``MR``, ...).
    files : tuple of Path
        Its image files, in folder listing order (not yet sorted by position).
    damaged : tuple of (str, str)
        ``(file name, reason)`` of the folder's files that look like part of this
        series (its UID in their bytes, or a DICOM-like name) but cannot be read.
    """

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...]
    damaged: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """Short human-readable name: description, else ``series <number>``."""
        if self.description:
            return self.description
        return f"series {self.number}" if self.number is not None else f"series {self.uid}"


def folder_has_dicom(folder: str | os.PathLike, *, max_files: int = 32) -> bool:
    """Cheap check: one of the first ``max_files`` files in ``folder`` has a DICOM preamble."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for count, path in enumerate(_files(folder)):
        if count >= max_files:
            return False
        if _is_dicom(path):
            return True
    return False


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeriesInfo]:
    """The image series in ``folder`` (headers only), sorted by ``SeriesNumber``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        ``folder`` is a file, is empty, or holds no DICOM image files.
    """
    return [info for info, _ in _scan(folder)]


def _scan(folder: str | os.PathLike) -> list[tuple[DicomSeriesInfo, list[tuple[Path, Any]]]]:
    """Group the folder's DICOM image files by series; datasets with deferred pixel data."""
    folder = _check_folder(folder)
    files = list(_files(folder))
    if not files:
        raise ValueError(f"Folder '{folder}' is empty: expected the DICOM files of a series.")
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    not_dicom: list[Path] = []
    problems: list[str] = []
    unreadable: list[tuple[Path, str, Any]] = []
    for path in files:
        # Large values (the pixels) are deferred: read later, only for the series used.
        preamble = _is_dicom(path)
        ds, reason = read_header(path, preamble)
        if reason == "DICOM without an image":
            problems.append(f"'{path.name}': DICOM without an image ({_sop_class(ds)})")
        elif reason is not None:
            unreadable.append((path, reason, ds))
            if preamble:
                problems.append(f"'{path.name}': {reason}")
            else:
                not_dicom.append(path)
        else:
            groups[str(ds.get("SeriesInstanceUID", ""))].append((path, ds))
    if not groups:
        detail = "; ".join(problems[:3]) or f"e.g. '{not_dicom[0].name}' has no DICOM preamble"
        raise ValueError(
            f"No DICOM image files in '{folder}': checked {len(files)} file(s), "
            f"{len(not_dicom)} not DICOM ({detail})."
        )
    damaged: dict[str | None, list[tuple[str, str]]] = defaultdict(list)
    for path, reason, ds in unreadable:
        uid = None if ds is None else ds.get("SeriesInstanceUID")
        owner = str(uid) if uid else owner_uid(path, list(groups))
        if owner is not None or looks_like_dicom_name(path):
            why = "no DICOM header could be read" if reason == "not DICOM" else reason
            damaged[owner].append((path.name, why))
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        number = first.get("SeriesNumber")
        info = DicomSeriesInfo(
            uid=uid,
            number=int(number) if number not in (None, "") else None,
            description=str(first.get("SeriesDescription", "")),
            modality=str(first.get("Modality", "")),
            files=tuple(path for path, _ in members),
            damaged=tuple(damaged[uid] + damaged[None]),
        )
        series.append((info, members))
    return sorted(
        series, key=lambda item: (item[0].number is None, item[0].number or 0, item[0].uid)
    )


def read_dicom_series(
    folder: str | os.PathLike, series_uid: str | None = None, *, damaged: str = "error"
) -> Volume:
    """Read one series of a DICOM folder as a reoriented :class:`Volume`.

    Parameters
    ----------
    folder : str or path-like
        Folder holding the slice files (not searched recursively).
    series_uid : str, optional
        ``SeriesInstanceUID`` to read. Default: the only series, or the one with
        the most slices (frames, for enhanced multi-frame files) when the folder
        holds several.
    damaged : {"error", "warn"}
        What to do when files that look like part of the series cannot be read
        (empty, cut short): ``"error"`` raises :class:`DamagedDicomError` naming
        each file and why; ``"warn"`` reads the other slices with a
        ``UserWarning`` and lists them in ``metadata["dicom"]["skipped_files"]``.

    Returns
    -------
    Volume
        ``data`` ``(Z, Y, X)`` (``(Y, X)`` for a single slice) after rescale
        slope/intercept: ``int16``/``int32`` when the rescale is integral, else
        ``float32``; ``spacing``/``origin`` in mm, ``(I, P, L)``, napari axis order.
    """
    series = _scan(folder)
    if series_uid is None:
        chosen = max(series, key=lambda item: _n_frames(item[1]))
    else:
        matches = [item for item in series if item[0].uid == series_uid]
        if not matches:
            available = ", ".join(f"{info.uid} ({info.label})" for info, _ in series)
            raise ValueError(
                f"Series {series_uid} not found in '{folder}'; available: {available}."
            )
        chosen = matches[0]
    return _read_series(*chosen, Path(folder), series, damaged=damaged)


def read_dicom_folder(folder: str | os.PathLike, *, damaged: str = "error") -> list[Volume]:
    """Read every image series of ``folder``, in ``SeriesNumber`` order.

    A series that cannot be made into a volume (e.g. a localizer with slices in
    three orientations) is skipped with a ``UserWarning`` naming the reason;
    when no series can be read the first reason is raised as ``ValueError``.
    Damaged files are handled as ``damaged`` says (see :func:`read_dicom_series`);
    with ``"error"`` they stop the whole read.
    """
    volumes, failures = [], []
    series = _scan(folder)
    for info, members in series:
        try:
            volumes.append(_read_series(info, members, Path(folder), series, damaged=damaged))
        except DamagedDicomError:
            raise
        except ValueError as exc:
            failures.append(str(exc))
    if not volumes:
        raise ValueError(failures[0] if len(failures) == 1 else " | ".join(failures))
    for failure in failures:
        warnings.warn(f"Skipped a DICOM series: {failure}", UserWarning, stacklevel=2)
    return volumes


def _read_series(
    info: DicomSeriesInfo,
    members: list[tuple[Path, Any]],
    folder: Path,
    others: list[tuple[DicomSeriesInfo, list[tuple[Path, Any]]]] = (),
    damaged: str = "error",
) -> Volume:
    """Sort, rescale and reorient one series (``members``: its files and datasets).

    ``others`` are the folder's other series; a DICOM segmentation (SEG) is put
    on the grid of the series it references when that series is among them.
    """
    where = f"series '{info.label}' in '{folder}'"
    skipped = check_damaged(info.damaged, damaged, where)
    try:
        return _read_checked(info, members, folder, others, skipped)
    except DamagedDicomError:
        raise
    except ValueError as exc:
        if not skipped:
            raise
        raise ValueError(described(str(exc), skipped)) from None


def _read_checked(info, members, folder, others, skipped) -> Volume:
    for path, ds in members:
        _check_supported(path, ds)
    if is_segmentation(members[0][1]):
        return _read_segmentation(info, members, folder, others)
    slices = _expanded(members)
    where = f"series '{info.label}' in '{folder}'"
    row_dir, col_dir, positions, slices = sorted_geometry(slices, where)
    first = slices[0][1]
    slice_spacing = uniform_slice_spacing(
        positions @ np.cross(row_dir, col_dir), slices, first, where
    )
    data, rescale = rescaled_stack(slices)  # (slices, rows, cols)
    notes: list[str] = []
    inverted = str(first.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    if inverted:
        notes.append(
            "MONOCHROME1: low values are meant to look bright; the values are kept as stored "
            "and the layer is shown with an inverted grey colormap."
        )
    return grid_volume(
        _layer_name(info, folder),
        folder,
        data,
        Grid(row_dir, col_dir, positions, slice_spacing, first),
        tags={
            "rescale": rescale,
            "files": [path.name for path, _ in slices],
            **({"skipped_files": [list(item) for item in skipped]} if skipped else {}),
        },
        notes=notes,
        is_label=False,
        contrast_limits=window(first),
        colormap="gray_r" if inverted else None,
    )


def _expanded(members: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """The series' slices: single-frame files as they are, multi-frame files split."""
    return [
        frame
        for path, ds in members
        for frame in (split_frames(path, ds) if is_multi_frame(ds) else [(path, ds)])
    ]


def _read_segmentation(
    info: DicomSeriesInfo,
    members: list[tuple[Path, Any]],
    folder: Path,
    others: list[tuple[DicomSeriesInfo, list[tuple[Path, Any]]]],
) -> Volume:
    """A DICOM SEG as one label volume (segment number = label value).

    On the voxel grid of the referenced series when it is in ``others`` (so the
    labels line up voxel for voxel with that scan), else on a grid spanning the
    frames with the SEG's own slice spacing (planes without frames are empty).
    """
    where = f"segmentation '{info.label}' in '{folder}'"
    frames = [frame for path, ds in members for frame in split_frames(path, ds)]
    row_dir, col_dir, positions, frames = sorted_geometry(frames, where)
    first = frames[0][1]
    seg = members[0][1]
    normal = np.cross(row_dir, col_dir)
    reference = referenced_series_uid(seg)
    grid = _reference_grid(reference, others, row_dir, col_dir, first, where)
    notes: list[str] = []
    if grid is None:
        grid = own_grid(positions, row_dir, col_dir, first, where)
        if reference is not None:
            notes.append(
                f"Referenced series {reference} is not in the folder: the labels are on a grid "
                "spanning the segmentation's frames, not on the scan's grid."
            )
    grid_along = grid.positions @ normal
    spacing = max(grid.slice_spacing, 1e-6)
    segments = segment_labels(seg)
    top = max([*segments, *(frame_segment(path, frame) for path, frame in frames)], default=1)
    labels = np.zeros(
        (len(grid.positions), int(first.Rows), int(first.Columns)),
        dtype=np.uint8 if top < 256 else np.uint16,
    )
    overlapping = 0
    for (path, frame), position in zip(frames, positions):
        k = int(np.argmin(np.abs(grid_along - position @ normal)))
        offset = position - grid.positions[k]
        if np.linalg.norm(offset) > SPACING_TOLERANCE * spacing + 1e-3:
            raise ValueError(
                f"Cannot place {where}: frame '{path.name}' at {np.round(position, 3).tolist()} "
                f"mm is {np.linalg.norm(offset):.3f} mm from the nearest slice of the grid "
                "(frames must lie on the referenced scan's slices, uncropped)."
            )
        mask = frame_mask(seg, frame)
        plane = labels[k]
        overlapping += int(np.count_nonzero(mask & (plane > 0)))
        plane[mask] = frame_segment(path, frame)
    if overlapping:
        notes.append(
            f"{overlapping} voxels belong to several segments; each keeps the segment of the "
            "frame read last."
        )
    return grid_volume(
        _layer_name(info, folder),
        folder,
        labels,
        grid,
        tags={
            "segments": {str(k): v for k, v in segments.items()},
            "referenced_series": reference,
            "segmentation_type": str(seg.get("SegmentationType", "")),
            "files": [path.name for path, _ in members],
        },
        notes=notes,
        is_label=True,
        header=first,
    )


def _reference_grid(
    reference: str | None,
    others: list[tuple[DicomSeriesInfo, list[tuple[Path, Any]]]],
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    first: Any,
    where: str,
) -> Grid | None:
    """The referenced series' grid, when it is present and matches the frames' plane and size."""
    for info, members in others:
        if info.uid != reference or is_segmentation(members[0][1]):
            continue
        slices = _expanded(members)
        r_row, r_col, positions, slices = sorted_geometry(slices, f"series '{info.label}'")
        header = slices[0][1]
        same_size = (header.Rows, header.Columns) == (first.Rows, first.Columns)
        if not (same_size and same_orientation(r_row, r_col, row_dir, col_dir)):
            raise ValueError(
                f"Cannot place {where} on its referenced series '{info.label}': the frames are "
                f"{first.Rows}×{first.Columns} with orientation {[*row_dir, *col_dir]}, the "
                f"series {header.Rows}×{header.Columns} with {[*r_row, *r_col]}."
            )
        spacing = uniform_slice_spacing(positions @ np.cross(r_row, r_col), slices, header, where)
        return Grid(r_row, r_col, positions, spacing, header)
    return None


def _check_supported(path: Path, ds: Any) -> None:
    if "PixelData" not in ds:
        raise ValueError(f"DICOM file '{path}' has no pixel data ({_sop_class(ds)}).")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and not has_frame_positions(ds):
        raise ValueError(
            f"DICOM file '{path}' is multi-frame ({frames} frames, {_sop_class(ds)}) without "
            "per-frame functional groups, so the frames' positions are unknown; only "
            "single-frame slices and enhanced multi-frame images (Enhanced CT/MR/PET...) are "
            "supported."
        )
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples != 1:
        raise ValueError(
            f"DICOM file '{path}' holds colour pixels (SamplesPerPixel={samples}); "
            "only greyscale series are supported."
        )


def _layer_name(info: DicomSeriesInfo, folder: Path) -> str:
    """Layer name: the series description, else ``<folder> series <number>``, else the folder."""
    return info.description or (
        f"{folder.name} series {info.number}" if info.number is not None else folder.name
    )


def _n_frames(members: list[tuple[Path, Any]]) -> int:
    """Slices in a series: its files, counting each frame of a multi-frame file."""
    return sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in members)


def _sop_class(ds: Any) -> str:
    sop = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
    return getattr(sop, "name", str(sop)) if sop else "unknown SOP class"


def _check_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"DICOM folder not found: '{folder}'.")
    if not folder.is_dir():
        raise ValueError(f"Expected a folder of DICOM files, got a file: '{folder}'.")
    return folder


def _files(folder: Path):
    """Regular, non-hidden files of ``folder`` in name order (no DICOMDIR)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name.upper() != "DICOMDIR":
            yield path


def _is_dicom(path: Path) -> bool:
    try:
        return bool(is_dicom(path))
    except OSError:
        return False
