"""Pixel values of DICOM slices: decoding, stacking, rescale slope/intercept, display window.

Every slice is a ``(path, dataset)`` pair, already sorted and checked for one
size by :func:`.dicom_geometry.sorted_geometry`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pydicom


def rescaled_stack(slices: list) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixel arrays stacked ``(slices, rows, cols)`` with rescale slope/intercept applied.

    Parameters
    ----------
    slices : list of (Path, pydicom Dataset)
        The slices in stacking order, all ``Rows × Columns``.

    Returns
    -------
    data : numpy.ndarray
        ``(slices, rows, cols)``: ``int16`` (or ``int32`` when the values do not
        fit) when every slope is 1 and every intercept integral, else ``float32``.
    rescale : dict
        ``slope`` (``DoseGridScaling`` for RT Dose) and ``intercept`` (one float,
        or a list per slice when they differ), ``applied`` (True), ``stored_dtype``
        (the decoded dtype) and, for RT Dose, ``units`` (``DoseUnits``, e.g. ``"GY"``).

    Raises
    ------
    ValueError
        The pixels of a slice cannot be decoded (names the transfer syntax), or
        a slice's RescaleSlope/RescaleIntercept is NaN or infinite (names the file).
    """
    raws = []
    for path, ds in slices:
        try:
            # pydicom's warnings about the size of the pixel data are kept back
            # until the shape check: a mismatch is one clear error, not a warning too
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                raws.append(np.asarray(ds.pixel_array))
        except Exception as exc:  # pydicom raises many types for unsupported encodings
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            syntax_name = getattr(syntax, "name", str(syntax))
            raise ValueError(
                f"Cannot decode the pixels of DICOM file '{path}' (transfer syntax "
                f"{syntax_name}): {type(exc).__name__}: {exc}."
            ) from None
        _check_shape(path, ds, raws[-1])
        for message in said:
            warnings.warn_explicit(
                message.message, message.category, message.filename, message.lineno
            )
    slopes = np.array([_slope(ds) for _, ds in slices])
    inters = np.array([float(ds.get("RescaleIntercept", 0) or 0) for _, ds in slices])
    for (path, _), slope, inter in zip(slices, slopes, inters):
        if not (np.isfinite(slope) and np.isfinite(inter)):
            raise ValueError(
                f"DICOM file '{path}' has RescaleSlope {slope:g} and RescaleIntercept {inter:g}; "
                "both must be finite numbers (a NaN or infinite rescale would turn every "
                "pixel of the slice into NaN)."
            )
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
    units = slices[0][1].get("DoseUnits")
    if units:  # RT Dose: DoseGridScaling applied, values in these units
        rescale["units"] = str(units)
    return data, rescale


def _slope(ds: Any) -> float:
    """``RescaleSlope``, else an RT Dose's ``DoseGridScaling``, else 1."""
    value = ds.get("RescaleSlope")
    if value in (None, ""):
        value = ds.get("DoseGridScaling")
    return float(value or 1)


def _check_shape(path: Any, ds: Any, pixels: np.ndarray) -> None:
    """Refuse pixels whose decoded shape is not ``(Rows, Columns)`` (wrong bit depth tags)."""
    expected = (int(ds.Rows), int(ds.Columns))
    if pixels.shape == expected:
        return
    stored = ds.get("PixelData")
    size = f"{len(stored)} bytes of pixel data" if isinstance(stored, bytes) else "pixel data"
    raise ValueError(
        f"DICOM file '{path}' decodes to shape {pixels.shape}, not Rows×Columns {expected}: "
        f"its {size} do not match BitsAllocated {ds.get('BitsAllocated')} (header and pixel "
        "data disagree; the file is damaged or was written with wrong bit-depth tags)."
    )


def window(ds: Any) -> tuple[float, float] | None:
    """``(low, high)`` display range from WindowCenter/WindowWidth (first value).

    Parameters
    ----------
    ds : pydicom Dataset
        A slice.

    Returns
    -------
    tuple of float or None
        ``(center - width / 2, center + width / 2)``; None when either tag is
        missing or unreadable, or the width is not positive.
    """
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
