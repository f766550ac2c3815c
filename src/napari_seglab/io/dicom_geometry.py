"""Geometry of DICOM slices: orientation, position, slice order, slice spacing, voxel grid.

Every slice is a ``(path, dataset)`` pair; the dataset carries the classic
single-frame attributes (``ImageOrientationPatient``, ``ImagePositionPatient``,
``SpacingBetweenSlices``/``SliceThickness``), as read from a file or split
from an enhanced multi-frame file by :mod:`.dicom_frames`. Directions and
positions are in the patient's LPS frame, positions in mm; the slice normal is
``row direction × column direction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Slice-position spacing may vary by this fraction of the median (plus 1e-3 mm).
SPACING_TOLERANCE = 0.01

#: Largest difference between two slices' direction cosines still counted as equal.
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Grid:
    """Voxel grid of a series: directions, sorted slice positions, spacing, first slice.

    Attributes
    ----------
    row_dir : numpy.ndarray
        Direction cosines ``(3,)`` (LPS) along a row, i.e. of increasing column index.
    col_dir : numpy.ndarray
        Direction cosines ``(3,)`` (LPS) along a column, i.e. of increasing row index.
    positions : numpy.ndarray
        ``ImagePositionPatient`` of each plane ``(n_slices, 3)`` (LPS mm), sorted
        along the slice normal.
    slice_spacing : float
        Distance between planes along the normal (mm).
    first : pydicom Dataset
        The first slice's dataset (its ``PixelSpacing`` sets the in-plane spacing).
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    positions: np.ndarray
    slice_spacing: float
    first: Any

    @property
    def normal(self) -> np.ndarray:
        """Slice normal ``(3,)`` (LPS): ``row_dir × col_dir``."""
        return np.cross(self.row_dir, self.col_dir)


def sorted_geometry(
    slices: list[tuple[Path, Any]], where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[Path, Any]]]:
    """Check one orientation and size; sort by position along the normal.

    Parameters
    ----------
    slices : list of (Path, pydicom Dataset)
        The slices of one series, in any order.
    where : str
        What is being stacked, for error messages (e.g. ``"series 'X' in 'dir'"``).

    Returns
    -------
    row_dir, col_dir : numpy.ndarray
        Row and column direction cosines ``(3,)`` shared by all slices.
    positions : numpy.ndarray
        Slice positions ``(n, 3)`` (LPS mm), sorted along the slice normal.
    slices : list of (Path, pydicom Dataset)
        The slices in the same order.

    Raises
    ------
    ValueError
        Slices differ in orientation, size or ``PixelSpacing``, or lack
        orientation/position, or one of them is not a finite number (names the file).
    """
    first_path, first = slices[0]
    row_dir, col_dir = _orientation(first_path, first)
    spacing = pixel_spacing(first_path, first)
    for path, ds in slices[1:]:
        other = pixel_spacing(path, ds)
        if other != spacing and (
            other is None or spacing is None or not np.allclose(other, spacing, rtol=1e-4)
        ):
            raise ValueError(
                f"Cannot stack {where}: '{path.name}' has PixelSpacing {other} mm but "
                f"'{first_path.name}' has {spacing} mm (slices of one volume must share "
                "an in-plane spacing)."
            )
        other_row, other_col = _orientation(path, ds)
        if not same_orientation(other_row, other_col, row_dir, col_dir):
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


def own_grid(
    positions: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, first: Any, where: str
) -> Grid:
    """Evenly spaced planes from the first to the last frame position (gaps allowed).

    Parameters
    ----------
    positions : numpy.ndarray
        Frame positions ``(n, 3)`` (LPS mm), sorted along the normal (repeats allowed).
    row_dir, col_dir : numpy.ndarray
        Direction cosines ``(3,)`` of the frames.
    first : pydicom Dataset
        First frame; its ``SpacingBetweenSlices``/``SliceThickness`` are tried first.
    where : str
        What is being stacked, for error messages.

    Returns
    -------
    Grid
        Planes ``positions[0] + k * spacing * normal`` for ``k = 0 .. count - 1``.

    Raises
    ------
    ValueError
        The positions are not whole multiples of any candidate spacing.
    """
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
    return Grid(row_dir, col_dir, grid, spacing, first)


def _orientation(path: Path, ds: Any) -> tuple[np.ndarray, np.ndarray]:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise ValueError(
            f"DICOM file '{path}' has no ImageOrientationPatient/ImagePositionPatient, so "
            "its place in a volume is unknown (only CT/MR/PET-like series are supported)."
        )
    cosines = _numbers(path, ds, "ImageOrientationPatient", 6)
    if np.linalg.norm(cosines[:3]) < 0.5 or np.linalg.norm(cosines[3:]) < 0.5:
        raise ValueError(
            f"DICOM file '{path}': ImageOrientationPatient {cosines.tolist()} are not two "
            "direction cosines (unit vectors)."
        )
    return cosines[:3], cosines[3:]


def _position(path: Path, ds: Any) -> np.ndarray:
    return _numbers(path, ds, "ImagePositionPatient", 3)


def pixel_spacing(path: Path, ds: Any) -> tuple[float, float] | None:
    """``PixelSpacing`` ``(between rows, between columns)`` in mm, None when missing.

    Raises
    ------
    ValueError
        It is not two finite positive numbers (names the file).
    """
    if ds.get("PixelSpacing") in (None, ""):
        return None
    values = _numbers(path, ds, "PixelSpacing", 2)
    if np.any(values <= 0):
        raise ValueError(
            f"DICOM file '{path}': PixelSpacing {values.tolist()} must be positive (mm)."
        )
    return float(values[0]), float(values[1])


def _numbers(path: Path, ds: Any, key: str, count: int) -> np.ndarray:
    """The ``count`` values of ``key`` as floats; raises naming the file unless finite."""
    try:
        values = np.array([float(v) for v in np.ravel(ds.get(key))], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"DICOM file '{path}': {key} is not numeric ({exc}).") from None
    if values.shape != (count,):
        raise ValueError(
            f"DICOM file '{path}': expected {count} {key} values, got {values.tolist()}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"DICOM file '{path}': {key} {values.tolist()} holds NaN or infinite values, so "
            "the slice's place or size is unknown."
        )
    return values


def same_orientation(
    row: np.ndarray, col: np.ndarray, other_row: np.ndarray, other_col: np.ndarray
) -> bool:
    """Direction cosines equal within :data:`ORIENTATION_TOLERANCE`.

    Parameters
    ----------
    row, col : numpy.ndarray
        Row and column direction cosines ``(3,)`` of one slice.
    other_row, other_col : numpy.ndarray
        Those of another slice.

    Returns
    -------
    bool
        No component differs by more than :data:`ORIENTATION_TOLERANCE`.
    """
    difference = max(np.abs(row - other_row).max(), np.abs(col - other_col).max())
    return bool(difference <= ORIENTATION_TOLERANCE)


def _header_spacings(ds: Any) -> list[float]:
    """Positive ``SpacingBetweenSlices`` then ``SliceThickness`` of ``ds`` (mm), if given."""
    values = (ds.get(key) for key in ("SpacingBetweenSlices", "SliceThickness"))
    return [float(v) for v in values if v not in (None, "") and float(v) > 0]


def uniform_slice_spacing(along: np.ndarray, slices: list, first: Any, where: str) -> float:
    """Uniform distance between sorted slice positions (mm); raises on duplicates and gaps.

    Parameters
    ----------
    along : numpy.ndarray
        Slice positions projected on the slice normal ``(n,)`` (mm), ascending.
    slices : list of (Path, pydicom Dataset)
        The slices in the same order, for error messages.
    first : pydicom Dataset
        First slice; for a single slice its header spacing is used (else 1 mm).
    where : str
        What is being stacked, for error messages.

    Returns
    -------
    float
        The median step between neighbouring slices (mm).

    Raises
    ------
    ValueError
        Two slices share a position, or a step differs from the median by more
        than :data:`SPACING_TOLERANCE` of it (plus 1e-3 mm).
    """
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
