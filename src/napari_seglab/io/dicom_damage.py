"""Reading the header of each file of a DICOM folder, and telling damaged files from others.

A folder may hold files that are not DICOM at all (notes, pictures) beside the
slices. A file is *damaged* when it looks like it belongs to a series but
cannot be read as one: empty, cut short, or a header without pixel data. It
belongs when its bytes hold the ``SeriesInstanceUID`` of a series in the folder
(then it belongs to that series), or when its name looks like a DICOM file's
(``.dcm``, ``.dicom``, ``.ima``, ``.dic``, a numeric suffix as in UID-named
files, or no suffix and a digit in the name; then it may belong to any series of the folder).

A file without the 128-byte preamble and ``DICM`` marker but otherwise valid is
read (``pydicom.dcmread(force=True)``), not dropped.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

#: Errors pydicom raises for damaged files.
DICOM_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError)

#: What :func:`~.dicom.read_dicom_series` may do with damaged files of a series.
DAMAGED_MODES = ("error", "warn")

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")


#: How to read the readable slices anyway, as said to a Python caller.
PYTHON_HINT = "pass damaged='warn' to read the readable slices"


class DamagedDicomError(ValueError):
    """Files that belong to a DICOM series could not be read (the message names each one).

    Attributes
    ----------
    files : list of (str, str)
        ``(file name, reason)`` of each damaged file.
    where : str
        The series, as named in the message.
    hint : str
        How to read the readable slices anyway, the end of the message
        (default :data:`PYTHON_HINT`; the napari reader names its environment variable).
    """

    def __init__(self, files: list[tuple[str, str]], where: str, hint: str = PYTHON_HINT) -> None:
        self.files = [tuple(item) for item in files]
        self.where = where
        self.hint = hint
        super().__init__(self.message(hint))

    def __reduce__(self):  # pickled across processes (dask workers) with its fields
        return (type(self), (self.files, self.where, self.hint))

    def message(self, hint: str) -> str:
        """The error message ending with ``hint`` (how to read the readable slices anyway).

        The ``seglab`` command says ``--damaged warn``.
        """
        listed = "; ".join(f"'{name}': {reason}" for name, reason in self.files)
        return (
            f"{len(self.files)} file(s) that look like part of {self.where} could not be read: "
            f"{listed}. Reading without them would give a volume with missing slices or a "
            f"shifted origin; repair or remove them, or {hint}."
        )


def read_header(path: Path, has_preamble: bool) -> tuple[Any | None, str | None]:
    """The dataset of ``path`` (pixels deferred), or None and why it is not a usable image.

    Parameters
    ----------
    path : Path
        One file of the folder.
    has_preamble : bool
        The file starts with the DICOM preamble and ``DICM`` marker.

    Returns
    -------
    dataset : pydicom Dataset or None
        The dataset when it is readable (it may lack pixel data: see ``reason``).
    reason : str or None
        None for an image dataset; else what is wrong (``"not DICOM"`` for a
        file that is not DICOM at all).
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot be read ({exc})"
    if size == 0:
        return None, "empty file (0 bytes)"
    try:
        ds = pydicom.dcmread(path, defer_size=1024, force=not has_preamble)
    except DICOM_ERRORS as exc:
        if not has_preamble:
            return None, "not DICOM"
        return None, f"cut short or damaged ({type(exc).__name__}: {exc})"
    if not has_preamble and "SOPClassUID" not in ds and "PixelData" not in ds:
        return None, "not DICOM"
    if "PixelData" in ds:
        return ds, _pixels_cut_short(ds, size)
    sop = str(getattr(ds.get("SOPClassUID"), "name", ""))
    image_like = any(key in ds for key in ("Rows", "ImagePositionPatient", "BitsAllocated"))
    if image_like or "Image" in sop or "SOPClassUID" not in ds:
        return ds, "header without pixel data (the file is cut short?)"
    return ds, "DICOM without an image"


def _pixels_cut_short(ds: Any, size: int) -> str | None:
    """Why the pixel data is cut short (it would end past the end of the file), or None."""
    element = ds.get_item("PixelData")
    length, tell = getattr(element, "length", None), getattr(element, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:  # undefined: encapsulated
        return None
    if tell + length <= size:
        return None
    return f"cut short: the pixel data needs {length} bytes, the file holds {size - tell}"


def looks_like_dicom_name(path: Path) -> bool:
    """``path``'s name is one a DICOM slice file typically has (see the module docstring)."""
    suffix = path.suffix.lower()
    if not suffix:  # IM0001, 00000012: not README or LOCKFILE
        return any(char.isdigit() for char in path.name)
    return suffix in _DICOM_SUFFIXES or suffix[1:].isdigit()


def owner_uid(path: Path, uids: list[str]) -> str | None:
    """The series UID among ``uids`` in the file's first MiB (the header), longest first."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(2**20)
    except OSError:
        return None
    for uid in sorted(uids, key=len, reverse=True):
        if uid and uid.encode("ascii", "ignore") in raw:
            return uid
    return None


def check_damaged(
    damaged: tuple[tuple[str, str], ...], mode: str, where: str
) -> list[tuple[str, str]]:
    """Refuse or warn about damaged files of a series; returns them for the metadata.

    Parameters
    ----------
    damaged : tuple of (str, str)
        ``(file name, reason)`` of each file that belongs to the series but could not be read.
    mode : {"error", "warn"}
        ``"error"`` raises :class:`DamagedDicomError`; ``"warn"`` warns
        (``UserWarning``) and the series is read without them.
    where : str
        The series, for the message.

    Returns
    -------
    list of (str, str)
        ``damaged`` as a list (empty when there are none).
    """
    if mode not in DAMAGED_MODES:
        raise ValueError(f"damaged must be 'error' or 'warn', got {mode!r}.")
    if not damaged:
        return []
    if mode == "error":
        raise DamagedDicomError(list(damaged), where)
    listed = "; ".join(f"'{name}': {reason}" for name, reason in damaged)
    warnings.warn(
        f"Reading {where} without {len(damaged)} unreadable file(s): {listed}.",
        UserWarning,
        stacklevel=4,
    )
    return list(damaged)


def described(reason: str, damaged: list[tuple[str, str]]) -> str:
    """``reason`` followed by the names of the damaged files skipped, when any."""
    if not damaged:
        return reason
    names = ", ".join(f"'{name}'" for name, _ in damaged)
    return f"{reason} Unreadable files skipped: {names}."
