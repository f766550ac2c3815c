"""Enhanced multi-frame DICOM (Enhanced CT/MR/PET...) as single-frame slices.

An enhanced image stores a whole stack in one file: the pixels of all frames in
one ``PixelData`` element, and per-frame geometry and value transforms in
*functional groups*, each either shared by all frames
(``SharedFunctionalGroupsSequence``) or given per frame
(``PerFrameFunctionalGroupsSequence``). :func:`split_frames` turns such a file
into one dataset per frame carrying the classic single-frame attributes
(``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``,
``RescaleSlope`` ...), so the series reader sorts, checks and stacks them like
a folder of slices. An RT Dose grid (frames placed by ``GridFrameOffsetVector``)
is split the same way; its ``DoseGridScaling`` is kept on every frame, and the
pixel reader applies it (:mod:`.dicom_pixels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

#: (functional group sequence, attribute) pairs copied onto each frame, per-frame value first.
FRAME_ATTRIBUTES = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices"),
    ("PixelValueTransformationSequence", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept"),
    ("PixelValueTransformationSequence", "RescaleType"),
    ("FrameVOILUTSequence", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth"),
    ("SegmentIdentificationSequence", "ReferencedSegmentNumber"),
)

#: Top-level attributes every frame keeps (identity, size, pixel format, description).
FILE_ATTRIBUTES = (
    "SOPClassUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "StudyInstanceUID",
    "StudyDescription",
    "BodyPartExamined",
    "PatientPosition",
    "Manufacturer",
    "ManufacturerModelName",
    "ImageType",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "KVP",
    "MagneticFieldStrength",
)


#: Attributes of an RT Dose file every frame keeps (geometry, dose scaling and units).
DOSE_ATTRIBUTES = (
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "DoseGridScaling",
    "DoseUnits",
    "DoseType",
    "DoseSummationType",
)


class FrameDataset(Dataset):
    """One frame of a multi-frame image as a single-frame dataset.

    ``pixel_array`` returns the frame's stored values ``(Rows, Columns)``.
    """

    def __init__(self, pixels: np.ndarray) -> None:
        super().__init__()
        self._frame_pixels = pixels

    @property
    def pixel_array(self) -> np.ndarray:  # type: ignore[override]
        return self._frame_pixels


def is_multi_frame(ds: Any) -> bool:
    """More than one frame in the file."""
    return int(ds.get("NumberOfFrames", 1) or 1) > 1


def has_frame_positions(ds: Any) -> bool:
    """The frames' positions are stated: per-frame functional groups, or an RT Dose grid."""
    return "PerFrameFunctionalGroupsSequence" in ds or "GridFrameOffsetVector" in ds


def _group_value(groups: list[Dataset], sequence: str, attribute: str) -> Any:
    """``attribute`` of the first item of ``sequence`` in the first group that has it."""
    for group in groups:
        items = group.get(sequence)
        if items is not None and len(items) and attribute in items[0]:
            return items[0][attribute].value
    return None


def split_frames(path: Path, ds: Any) -> list[tuple[Path, Dataset]]:
    """The frames of an enhanced multi-frame file, each as ``(name, dataset)``.

    Parameters
    ----------
    path : Path
        The file (frames are named ``<file>#frame<k>``, 1-based, in messages).
    ds : pydicom Dataset
        Its dataset (pixel data may be deferred; it is read here).

    Returns
    -------
    list of (Path, FrameDataset)
        In file order; the series reader sorts them by position.

    Raises
    ------
    ValueError
        When the per-frame functional groups do not match the frames (frame
        positions unknown) or the pixels cannot be decoded.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None and "GridFrameOffsetVector" in ds:
        return _dose_frames(path, ds, _decoded(path, ds, frames))
    if per_frame is None or len(per_frame) != frames:
        count = 0 if per_frame is None else len(per_frame)
        raise ValueError(
            f"DICOM file '{path}' has {frames} frames but {count} per-frame functional "
            "groups, so the frames' positions are unknown."
        )
    shared_items = ds.get("SharedFunctionalGroupsSequence")
    shared = [shared_items[0]] if shared_items is not None and len(shared_items) else []
    pixels = _decoded(path, ds, frames)
    out = []
    for index in range(frames):
        frame = _frame(ds, pixels[index], FILE_ATTRIBUTES)
        groups = [per_frame[index], *shared]
        for sequence, attribute in FRAME_ATTRIBUTES:
            value = _group_value(groups, sequence, attribute)
            if value is not None:
                setattr(frame, attribute, value)
        out.append((path.with_name(f"{path.name}#frame{index + 1}"), frame))
    return out


def _dose_frames(path: Path, ds: Any, pixels: np.ndarray) -> list[tuple[Path, Dataset]]:
    """RT Dose frames at ``ImagePositionPatient + offset * normal`` (``GridFrameOffsetVector``).

    Offsets are relative to the first frame when the first is 0, else absolute
    positions along the normal (DICOM PS3.3 C.8.8.3.2).
    """
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    if offsets.shape != (len(pixels),) or "ImagePositionPatient" not in ds:
        raise ValueError(
            f"RT Dose file '{path}' has {len(pixels)} frames but GridFrameOffsetVector "
            f"{offsets.tolist()} (and ImagePositionPatient {ds.get('ImagePositionPatient')}), "
            "so the frames' positions are unknown."
        )
    cosines = np.array([float(v) for v in ds.get("ImageOrientationPatient", [])])
    normal = np.cross(cosines[:3], cosines[3:]) if cosines.shape == (6,) else np.zeros(3)
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    if offsets[0] != 0:
        offsets = offsets - origin @ normal
    out = []
    for index, offset in enumerate(offsets):
        frame = _frame(ds, pixels[index], (*FILE_ATTRIBUTES, *DOSE_ATTRIBUTES))
        frame.ImagePositionPatient = [float(v) for v in origin + offset * normal]
        out.append((path.with_name(f"{path.name}#frame{index + 1}"), frame))
    return out


def _frame(ds: Any, pixels: np.ndarray, keywords: tuple[str, ...]) -> FrameDataset:
    """One frame's dataset with ``keywords`` copied from the file's dataset ``ds``."""
    frame = FrameDataset(pixels)
    for keyword in keywords:
        if keyword in ds:
            setattr(frame, keyword, ds[keyword].value)
    return frame


def _decoded(path: Path, ds: Any, frames: int) -> np.ndarray:
    """The file's pixels ``(frames, rows, cols)``; raises naming the file if they do not fit."""
    try:
        pixels = np.asarray(ds.pixel_array)  # deferred pixel data is read from the file here
    except Exception as exc:  # pydicom raises many types for unsupported encodings
        raise ValueError(
            f"Cannot decode the pixels of multi-frame DICOM file '{path}': "
            f"{type(exc).__name__}: {exc}."
        ) from None
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[None]  # pydicom drops the frame axis of a single frame
    if pixels.shape[0] != frames:
        raise ValueError(
            f"DICOM file '{path}': NumberOfFrames is {frames} but the pixel data holds "
            f"{pixels.shape[0]} frames."
        )
    return pixels
