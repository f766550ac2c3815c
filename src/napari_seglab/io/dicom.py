"""Read a folder of DICOM slices as reoriented :class:`~napari_seglab.io.volume.Volume` objects.

A folder may hold several series (files are grouped by ``SeriesInstanceUID``).
:func:`read_dicom_folder` reads every series (the napari reader opens each as
its own layer, in ``SeriesNumber`` order); :func:`read_dicom_series` reads one,
by UID or, when none is given, the series with the most slices.

Within a series, slices are sorted by their position along the slice normal
(``row direction × column direction`` from ``ImageOrientationPatient``),
``RescaleSlope``/``RescaleIntercept`` are applied (so CT is in HU), the slice
spacing is taken from the positions and must be uniform, and the volume is
reoriented to the layer axes ``(Z, Y, X)`` = (Superior, Posterior, Left) of
:mod:`napari_seglab.io.orientation`, like NIfTI files.

Only the folder itself is searched (not sub-folders). Files without the DICOM
preamble (``DICM`` at byte 128), DICOMDIR indexes and DICOM objects without
pixel data are skipped. Enhanced multi-frame files (one file per stack, e.g.
Enhanced CT/MR) are split into their frames (:mod:`.dicom_frames`); other
multi-frame files (cine, secondary capture) and colour DICOM are refused with a
clear error. DICOM Segmentation objects (SEG) become label volumes on the
grid of the series they reference (:mod:`.dicom_seg`). ``MONOCHROME1`` series
(low values shown bright) keep their stored values and open with an inverted
grey colormap. No patient-identifying tags are copied into the metadata.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from .dicom_frames import is_multi_frame, split_frames
from .dicom_seg import (
    frame_mask,
    frame_segment,
    is_segmentation,
    referenced_series_uid,
    segment_labels,
)
from .volume import GEOMETRY_KEY, Volume, volume_from_source

#: Slice-position spacing may vary by this fraction of the median (plus 1e-3 mm).
SPACING_TOLERANCE = 0.01

#: Largest difference between two slices' direction cosines still counted as equal.
ORIENTATION_TOLERANCE = 1e-4

#: Non-identifying tags copied into ``metadata["dicom"]`` when present.
KEPT_TAGS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "StudyDescription",
    "BodyPartExamined",
    "PatientPosition",
    "Manufacturer",
    "ManufacturerModelName",
    "ImageType",
    "PhotometricInterpretation",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ImageOrientationPatient",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "KVP",
    "RepetitionTime",
    "EchoTime",
    "MagneticFieldStrength",
)

#: Errors pydicom raises for damaged files.
_DICOM_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError)


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
    """

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...]

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
    for path in files:
        if not _is_dicom(path):
            not_dicom.append(path)
            continue
        try:
            # Large values (the pixels) are deferred: read later, only for the series used.
            ds = pydicom.dcmread(path, defer_size=1024)
        except _DICOM_ERRORS as exc:
            problems.append(f"'{path.name}': {type(exc).__name__}: {exc}")
            continue
        if "PixelData" not in ds:
            problems.append(f"'{path.name}': DICOM without an image ({_sop_class(ds)})")
            continue
        groups[str(ds.get("SeriesInstanceUID", ""))].append((path, ds))
    if not groups:
        detail = "; ".join(problems[:3]) or f"e.g. '{not_dicom[0].name}' has no DICOM preamble"
        raise ValueError(
            f"No DICOM image files in '{folder}': checked {len(files)} file(s), "
            f"{len(not_dicom)} not DICOM ({detail})."
        )
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
        )
        series.append((info, members))
    return sorted(
        series, key=lambda item: (item[0].number is None, item[0].number or 0, item[0].uid)
    )


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one series of a DICOM folder as a reoriented :class:`Volume`.

    Parameters
    ----------
    folder : str or path-like
        Folder holding the slice files (not searched recursively).
    series_uid : str, optional
        ``SeriesInstanceUID`` to read. Default: the only series, or the one with
        the most slices (frames, for enhanced multi-frame files) when the folder
        holds several.

    Returns
    -------
    Volume
        ``data`` ``(Z, Y, X)`` (``(Y, X)`` for a single slice) after rescale
        slope/intercept: ``int16``/``int32`` when the rescale is integral, else
        ``float32``; ``spacing``/``origin`` in mm, LPS, napari axis order.
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
    return _read_series(*chosen, Path(folder), series)


def read_dicom_folder(folder: str | os.PathLike) -> list[Volume]:
    """Read every image series of ``folder``, in ``SeriesNumber`` order.

    A series that cannot be made into a volume (e.g. a localizer with slices in
    three orientations) is skipped with a ``UserWarning`` naming the reason;
    when no series can be read the first reason is raised as ``ValueError``.
    """
    volumes, failures = [], []
    series = _scan(folder)
    for info, members in series:
        try:
            volumes.append(_read_series(info, members, Path(folder), series))
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
) -> Volume:
    """Sort, rescale and reorient one series (``members``: its files and datasets).

    ``others`` are the folder's other series; a DICOM segmentation (SEG) is put
    on the grid of the series it references when that series is among them.
    """
    for path, ds in members:
        _check_supported(path, ds)
    if is_segmentation(members[0][1]):
        return _read_segmentation(info, members, folder, others)
    slices = _expanded(members)
    where = f"series '{info.label}' in '{folder}'"
    row_dir, col_dir, positions, slices = _sorted_geometry(slices, where)
    first = slices[0][1]
    slice_spacing = _slice_spacing(positions @ np.cross(row_dir, col_dir), slices, first, where)
    data, rescale = _rescaled_stack(slices)  # (slices, rows, cols)
    notes: list[str] = []
    inverted = str(first.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    if inverted:
        notes.append(
            "MONOCHROME1: low values are meant to look bright; the values are kept as stored "
            "and the layer is shown with an inverted grey colormap."
        )
    return _volume(
        info,
        folder,
        data,
        _Grid(row_dir, col_dir, positions, slice_spacing, first),
        tags={"rescale": rescale, "files": [path.name for path, _ in slices]},
        notes=notes,
        is_label=False,
        contrast_limits=_window(first),
        colormap="gray_r" if inverted else None,
    )


def _expanded(members: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """The series' slices: single-frame files as they are, multi-frame files split."""
    return [
        frame
        for path, ds in members
        for frame in (split_frames(path, ds) if is_multi_frame(ds) else [(path, ds)])
    ]


def _sorted_geometry(
    slices: list[tuple[Path, Any]], where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[Path, Any]]]:
    """Check one orientation and size; sort by position along the normal.

    Returns the row and column direction cosines, the positions ``(n, 3)`` (LPS
    mm) and the slices, both sorted along the slice normal.
    """
    first_path, first = slices[0]
    row_dir, col_dir = _orientation(first_path, first)
    for path, ds in slices[1:]:
        other_row, other_col = _orientation(path, ds)
        if not _same_orientation(other_row, other_col, row_dir, col_dir):
            raise ValueError(
                f"Cannot stack {where}: '{path.name}' has ImageOrientationPatient "
                f"{[*other_row, *other_col]} but '{first_path.name}' has "
                f"{[*row_dir, *col_dir]} (slices of one volume must share an orientation)."
            )
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ValueError(
                f"Cannot stack {where}: '{path.name}' is {ds.Rows}×{ds.Columns} pixels but "
                f"'{first_path.name}' is {first.Rows}×{first.Columns}."
            )
    positions = np.array([_position(path, ds) for path, ds in slices])
    order = np.argsort(positions @ np.cross(row_dir, col_dir), kind="stable")
    return row_dir, col_dir, positions[order], [slices[i] for i in order]


@dataclass(frozen=True)
class _Grid:
    """Voxel grid of a series: directions, sorted slice positions, spacing, first slice."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    positions: np.ndarray
    slice_spacing: float
    first: Any

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)


def _volume(
    info: DicomSeriesInfo,
    folder: Path,
    data: np.ndarray,
    grid: _Grid,
    *,
    tags: dict[str, Any],
    notes: list[str],
    is_label: bool,
    contrast_limits: tuple[float, float] | None = None,
    colormap: str | None = None,
    header: Any = None,
) -> Volume:
    """A :class:`Volume` from stacked slices ``(slices, rows, cols)`` on ``grid``.

    ``header``: the dataset whose descriptive tags go into the metadata
    (default the grid's first slice).
    """
    first = grid.first
    header = first if header is None else header
    if "PixelSpacing" in first:
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    else:
        row_spacing = col_spacing = 1.0
        notes.append("PixelSpacing missing: in-plane spacing set to 1 mm.")
    positions, normal = grid.positions, grid.normal
    source = np.transpose(data, (2, 1, 0))  # (cols, rows, slices): i along the row direction
    lps = np.eye(4)
    lps[:3, 0] = grid.row_dir * col_spacing
    lps[:3, 1] = grid.col_dir * row_spacing
    lps[:3, 2] = normal * grid.slice_spacing
    if len(positions) > 1:
        # The mean step between slice origins; equals normal * spacing unless the
        # slices are offset sideways (CT gantry tilt), which makes the grid sheared.
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        sideways = np.linalg.norm(step - (step @ normal) * normal)
        if sideways > 1e-3:
            notes.append(
                f"Slice origins move {sideways:.3f} mm sideways per slice (gantry tilt?): "
                "the voxel grid is sheared; the affine keeps the true slice positions."
            )
        lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    kept = {key: _plain(header.get(key)) for key in KEPT_TAGS if key in header}
    kept.update(tags)
    kept["n_slices"] = len(positions)
    kept["slice_spacing"] = grid.slice_spacing
    if notes:
        kept["notes"] = notes
    metadata: dict[str, Any] = {
        "source": {"path": str(folder), "format": "dicom"},
        "dicom": kept,
        GEOMETRY_KEY: {"source_format": "dicom"},
    }
    name = info.description or (
        f"{folder.name} series {info.number}" if info.number is not None else folder.name
    )
    return volume_from_source(
        source,
        ras,
        is_label=is_label,
        name=name,
        metadata=metadata,
        contrast_limits=contrast_limits,
        colormap=colormap,
    )


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
    row_dir, col_dir, positions, frames = _sorted_geometry(frames, where)
    first = frames[0][1]
    seg = members[0][1]
    normal = np.cross(row_dir, col_dir)
    reference = referenced_series_uid(seg)
    grid = _reference_grid(reference, others, row_dir, col_dir, first, where)
    notes: list[str] = []
    if grid is None:
        grid = _own_grid(positions, row_dir, col_dir, first, where)
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
    return _volume(
        info,
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
) -> _Grid | None:
    """The referenced series' grid, when it is present and matches the frames' plane and size."""
    for info, members in others:
        if info.uid != reference or is_segmentation(members[0][1]):
            continue
        slices = _expanded(members)
        r_row, r_col, positions, slices = _sorted_geometry(slices, f"series '{info.label}'")
        header = slices[0][1]
        same_size = (header.Rows, header.Columns) == (first.Rows, first.Columns)
        if not (same_size and _same_orientation(r_row, r_col, row_dir, col_dir)):
            raise ValueError(
                f"Cannot place {where} on its referenced series '{info.label}': the frames are "
                f"{first.Rows}×{first.Columns} with orientation {[*row_dir, *col_dir]}, the "
                f"series {header.Rows}×{header.Columns} with {[*r_row, *r_col]}."
            )
        spacing = _slice_spacing(positions @ np.cross(r_row, r_col), slices, header, where)
        return _Grid(r_row, r_col, positions, spacing, header)
    return None


def _own_grid(
    positions: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, first: Any, where: str
) -> _Grid:
    """Evenly spaced planes from the first to the last frame position (gaps allowed)."""
    normal = np.cross(row_dir, col_dir)
    along = positions @ normal
    distinct = np.unique(np.round(along, 3))
    steps = distinct - distinct[0]

    def fits(spacing: float) -> bool:
        ratios = steps / spacing
        return bool(np.abs(ratios - np.round(ratios)).max() <= SPACING_TOLERANCE)

    # SpacingBetweenSlices when given; else the slice thickness if every frame lies a whole
    # number of thicknesses apart (frames may skip planes); else the smallest gap.
    candidates = _header_spacings(first)
    if len(distinct) > 1:
        candidates.append(float(np.diff(distinct).min()))
    usable = [value for value in candidates if fits(value)]
    if candidates and not usable:
        raise ValueError(
            f"Cannot stack {where}: frame positions are not multiples of the slice spacing "
            f"({', '.join(f'{v:.3f}' for v in candidates)} mm tried)."
        )
    spacing = usable[0] if usable else 1.0
    count = int(np.rint(steps[-1] / spacing)) + 1
    grid = positions[0] + np.arange(count)[:, None] * spacing * normal[None, :]
    return _Grid(row_dir, col_dir, grid, spacing, first)


def _check_supported(path: Path, ds: Any) -> None:
    if "PixelData" not in ds:
        raise ValueError(f"DICOM file '{path}' has no pixel data ({_sop_class(ds)}).")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and "PerFrameFunctionalGroupsSequence" not in ds:
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


def _orientation(path: Path, ds: Any) -> tuple[np.ndarray, np.ndarray]:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise ValueError(
            f"DICOM file '{path}' has no ImageOrientationPatient/ImagePositionPatient, so "
            "its place in a volume is unknown (only CT/MR/PET-like series are supported)."
        )
    cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
    if cosines.shape != (6,):
        raise ValueError(
            f"DICOM file '{path}': expected 6 ImageOrientationPatient values, "
            f"got {cosines.tolist()}."
        )
    return cosines[:3], cosines[3:]


def _position(path: Path, ds: Any) -> np.ndarray:
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    if position.shape != (3,):
        raise ValueError(
            f"DICOM file '{path}': expected 3 ImagePositionPatient values, "
            f"got {position.tolist()}."
        )
    return position


def _same_orientation(
    row: np.ndarray, col: np.ndarray, other_row: np.ndarray, other_col: np.ndarray
) -> bool:
    """Direction cosines equal within :data:`ORIENTATION_TOLERANCE`."""
    difference = max(np.abs(row - other_row).max(), np.abs(col - other_col).max())
    return bool(difference <= ORIENTATION_TOLERANCE)


def _header_spacings(ds: Any) -> list[float]:
    """Positive ``SpacingBetweenSlices`` then ``SliceThickness`` of ``ds`` (mm), if given."""
    values = (ds.get(key) for key in ("SpacingBetweenSlices", "SliceThickness"))
    return [float(v) for v in values if v not in (None, "") and float(v) > 0]


def _slice_spacing(along: np.ndarray, slices: list, first: Any, where: str) -> float:
    """Uniform distance between sorted slice positions (mm); raises on duplicates and gaps."""
    if len(along) == 1:
        return next(iter(_header_spacings(first)), 1.0)
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        i = int(np.argmin(steps))
        raise ValueError(
            f"Cannot stack {where}: '{slices[i][0].name}' and '{slices[i + 1][0].name}' lie at "
            f"the same position ({along[i]:.3f} mm along the slice normal); the series may hold "
            "several time points or echoes."
        )
    spacing = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - spacing) > SPACING_TOLERANCE * spacing + 1e-3)
    if bad.size:
        gaps = ", ".join(f"{steps[i]:.3f} mm after '{slices[i][0].name}'" for i in bad[:3])
        raise ValueError(
            f"Cannot stack {where}: slice spacing is not uniform (median {spacing:.3f} mm; "
            f"{gaps}); a slice may be missing."
        )
    return spacing


def _rescaled_stack(slices: list) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixel arrays stacked ``(slices, rows, cols)`` with rescale slope/intercept applied."""
    raws = []
    for path, ds in slices:
        try:
            raws.append(np.asarray(ds.pixel_array))
        except Exception as exc:  # pydicom raises many types for unsupported encodings
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            syntax_name = getattr(syntax, "name", str(syntax))
            raise ValueError(
                f"Cannot decode the pixels of DICOM file '{path}' (transfer syntax "
                f"{syntax_name}): {type(exc).__name__}: {exc}."
            ) from None
    slopes = np.array([float(ds.get("RescaleSlope", 1) or 1) for _, ds in slices])
    inters = np.array([float(ds.get("RescaleIntercept", 0) or 0) for _, ds in slices])
    raw = np.stack(raws)
    integral = np.all(slopes == 1.0) and np.all(inters == np.round(inters))
    if integral:
        shifted = raw.astype(np.int32) + inters.astype(np.int32)[:, None, None]
        small = shifted.size == 0 or (
            shifted.min() >= np.iinfo(np.int16).min and shifted.max() <= np.iinfo(np.int16).max
        )
        data = shifted.astype(np.int16) if small else shifted
    else:
        data = raw.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
        data += inters.astype(np.float32)[:, None, None]
    rescale = {
        "slope": float(slopes[0]) if np.all(slopes == slopes[0]) else slopes.tolist(),
        "intercept": float(inters[0]) if np.all(inters == inters[0]) else inters.tolist(),
        "applied": True,
        "stored_dtype": str(raw.dtype),
    }
    return data, rescale


def _window(ds: Any) -> tuple[float, float] | None:
    """``(low, high)`` display range from WindowCenter/WindowWidth (first value)."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if center is None or width is None or width <= 0:
        return None
    return center - width / 2.0, center + width / 2.0


def _first(value: Any) -> float | None:
    try:
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _plain(value: Any) -> Any:
    """DICOM element value as a JSON-friendly Python value."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal | float):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS | int):
        return int(value)
    return str(value)


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
