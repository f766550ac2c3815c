"""DICOM Segmentation objects (SEG): segments, their frames and the referenced series.

A SEG is an enhanced multi-frame image whose frames are binary (or fractional)
masks; each frame belongs to one segment (``SegmentIdentificationSequence``)
and lies on a plane of the image series it was drawn on
(``ReferencedSeriesSequence``). The series reader turns the frames into one
label volume, segment number = label value, on the referenced series' voxel
grid when that series is in the same folder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: SOP class UID of DICOM Segmentation Storage.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_segmentation(ds: Any) -> bool:
    """The dataset is a DICOM Segmentation object."""
    return str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE or ds.get("Modality") == "SEG"


def segment_labels(ds: Any) -> dict[int, str]:
    """``{segment number: label}`` from the ``SegmentSequence``."""
    return {
        int(item.SegmentNumber): str(item.get("SegmentLabel", f"segment {item.SegmentNumber}"))
        for item in ds.get("SegmentSequence", [])
    }


def referenced_series_uid(ds: Any) -> str | None:
    """``SeriesInstanceUID`` of the image series the segmentation was drawn on, if given."""
    items = ds.get("ReferencedSeriesSequence")
    if items is None or not len(items) or "SeriesInstanceUID" not in items[0]:
        return None
    return str(items[0].SeriesInstanceUID)


def frame_mask(ds: Any, frame: Any) -> np.ndarray:
    """A frame's pixels as a bool mask ``(Rows, Columns)``.

    ``BINARY`` segmentations: non-zero pixels. ``FRACTIONAL`` ones (probability
    or occupancy): pixels above half of ``MaximumFractionalValue``.
    """
    pixels = np.asarray(frame.pixel_array)
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        return pixels > float(ds.get("MaximumFractionalValue", 255)) / 2.0
    return pixels > 0


def frame_segment(path: Any, frame: Any) -> int:
    """The segment number of one frame; raises ValueError when it is missing."""
    number = frame.get("ReferencedSegmentNumber")
    if number is None:
        raise ValueError(
            f"DICOM SEG frame '{path.name}' has no ReferencedSegmentNumber "
            "(SegmentIdentificationSequence), so its segment is unknown."
        )
    return int(number)
