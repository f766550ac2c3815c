"""A :class:`~napari_seglab.io.volume.Volume` from stacked DICOM slices on their voxel grid.

Builds the affine from the grid (direction cosines, ``PixelSpacing``, slice
positions), reorients to the layer axes ``(Z, Y, X)`` and fills the metadata
with non-identifying tags only (:data:`KEPT_TAGS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from .dicom_geometry import Grid
from .volume import GEOMETRY_KEY, Volume, volume_from_source

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
    "DoseUnits",
    "DoseType",
    "DoseSummationType",
    "DoseGridScaling",
)


def grid_volume(
    name: str,
    folder: Path,
    data: np.ndarray,
    grid: Grid,
    *,
    tags: dict[str, Any],
    notes: list[str],
    is_label: bool,
    contrast_limits: tuple[float, float] | None = None,
    colormap: str | None = None,
    header: Any = None,
) -> Volume:
    """A :class:`Volume` from stacked slices ``(slices, rows, cols)`` on ``grid``.

    Parameters
    ----------
    name : str
        Layer name.
    folder : Path
        The folder read (``metadata["source"]["path"]``).
    data : numpy.ndarray
        Pixels ``(slices, rows, cols)``, slices in the order of ``grid.positions``.
    grid : Grid
        The slices' voxel grid; its first slice's ``PixelSpacing`` gives the
        in-plane spacing (1 mm, with a note, when missing).
    tags : dict
        Extra entries for ``metadata["dicom"]`` (they override kept tags).
    notes : list of str
        Notes for the user; appended to here (missing spacing, gantry tilt) and
        stored as ``metadata["dicom"]["notes"]`` when not empty.
    is_label : bool
        The volume is a label image.
    contrast_limits : tuple of float, optional
        Display range of an image.
    colormap : str, optional
        Colormap name of an image.
    header : pydicom Dataset, optional
        The dataset whose descriptive tags (:data:`KEPT_TAGS`) go into the
        metadata (default the grid's first slice).

    Returns
    -------
    Volume
        Reoriented to the layer axes ``(Z, Y, X)`` with ``spacing``/``origin``
        in mm; the affine keeps the true slice positions (sheared for gantry tilt).
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
    return volume_from_source(
        source,
        ras,
        is_label=is_label,
        name=name,
        metadata=metadata,
        contrast_limits=contrast_limits,
        colormap=colormap,
    )


def _plain(value: Any) -> Any:
    """DICOM element value as a JSON-friendly Python value."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal | float):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS | int):
        return int(value)
    return str(value)
