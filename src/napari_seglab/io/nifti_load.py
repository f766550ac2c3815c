"""Open a NIfTI file safely: sniff compression, check its size, verify gzip, check the affine.

:func:`load_image` decides compression from the content (gzip magic ``1f 8b``),
not the suffix, so a ``.nii.gz`` that is not compressed (or a ``.nii`` that is)
opens. Before any voxel is read, the header's data size is checked against the
file (or the gzip trailer's size) and the machine's memory. A compressed file
is decompressed once through :mod:`gzip`, which checks the CRC-32 at the end of
the stream, so a damaged stream is refused instead of opening with wrong
voxels. :func:`finite_affine` refuses an affine with NaN or infinite entries,
or falls back to the qform with a warning when only the sform is bad.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"


class NiftiRefused(ValueError):
    """The file cannot be opened safely; the message names the file and why."""


#: Header size (``sizeof_hdr``) → image class.
_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}


def load_image(path: Path) -> Any:
    """The NIfTI image in ``path``; voxel data checked for size and, if compressed, CRC.

    Parameters
    ----------
    path : Path
        A ``.nii`` or ``.nii.gz`` file (compressed or not, whatever the suffix says).

    Returns
    -------
    nibabel.Nifti1Image or nibabel.Nifti2Image
        Uncompressed files whose name says so are opened by ``nibabel.load``
        (memory-mapped); others are read into memory.

    Raises
    ------
    ValueError
        No NIfTI header, a damaged compressed stream (bad CRC, cut short), or a
        header asking for more voxel bytes than the file holds or the machine has.
    """
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    named_gz = path.name.lower().endswith(".gz")
    head = _head(path, compressed)
    klass = _image_class(path, head)
    header = klass.header_class.from_fileobj(io.BytesIO(head), check=False)
    stored = _stored_size(path, compressed)
    _check_size(path, header, stored, compressed)
    if not compressed:
        if not named_gz:
            return nib.load(str(path))
        return klass.from_bytes(path.read_bytes())
    try:
        raw = _gunzip_checked(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiRefused(
            f"'{path}' is a damaged gzip stream, truncated or corrupt ({type(exc).__name__}: "
            f"{exc}); reading it would give wrong voxels."
        ) from None
    return klass.from_bytes(raw)


def _gunzip_checked(data: bytes) -> bytes:
    """Decompress every gzip member of ``data``; zlib checks each member's CRC-32 and length.

    One C call per member (faster than reading through :mod:`gzip`); raises
    ``EOFError`` for a stream cut short and ``zlib.error`` for a bad CRC or data.
    """
    parts = []
    while data:
        member = zlib.decompressobj(wbits=31)  # gzip framing, trailer verified at the end
        parts.append(member.decompress(data))
        if not member.eof:
            raise EOFError("the compressed stream ends before its gzip trailer")
        data = member.unused_data.lstrip(b"\x00")  # padding after the last member
    return parts[0] if len(parts) == 1 else b"".join(parts)


def finite_affine(img: Any, path: Path) -> tuple[np.ndarray, bool]:
    """The image's affine, checked finite; the qform when only the sform is not.

    Parameters
    ----------
    img : nibabel.Nifti1Image or nibabel.Nifti2Image
        The image.
    path : Path
        Its file, for messages.

    Returns
    -------
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-RAS affine (file units).
    from_qform : bool
        True when the sform held NaN/infinite values and the qform was used instead
        (a ``UserWarning`` says so).

    Raises
    ------
    ValueError
        The affine holds NaN or infinite values and no finite qform is set.
    """
    affine = np.array(img.affine, dtype=np.float64)
    if np.all(np.isfinite(affine)):
        return affine, False
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform_bad = int(header["sform_code"]) > 0
    if sform_bad and qform is not None and qcode > 0 and np.all(np.isfinite(qform)):
        warnings.warn(
            f"'{path}': the sform holds NaN or infinite values; the qform "
            f"(code {int(qcode)}) gives the geometry instead.",
            UserWarning,
            stacklevel=3,
        )
        return np.array(qform, dtype=np.float64), True
    which = "sform" if sform_bad else "qform/pixdim"
    raise NiftiRefused(
        f"Cannot open '{path}': its {which} affine holds NaN or infinite values "
        f"({np.round(affine, 4).tolist()}) and no finite qform is set, so the voxel "
        "positions are unknown."
    )


def _head(path: Path, compressed: bool) -> bytes:
    """The first 540 bytes of the (decompressed) file: room for either header."""
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                return stream.read(540)
        with open(path, "rb") as handle:
            return handle.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiRefused(
            f"'{path}' is not a readable NIfTI file: its gzip stream is damaged at the start "
            f"({type(exc).__name__}: {exc})."
        ) from None


def _image_class(path: Path, head: bytes) -> Any:
    for order in ("<", ">"):
        if len(head) >= 4 and struct.unpack(f"{order}i", head[:4])[0] in _CLASSES:
            size = struct.unpack(f"{order}i", head[:4])[0]
            if len(head) >= size:
                return _CLASSES[size]
    raise NiftiRefused(
        f"'{path}' is not a readable NIfTI file: no valid NIfTI-1/NIfTI-2 header found "
        "(not an image, or the header is damaged)."
    )


def _stored_size(path: Path, compressed: bool) -> int:
    """Bytes of the (decompressed) file; for gzip the trailer's size (modulo 2**32)."""
    size = path.stat().st_size
    if not compressed:
        return size
    with open(path, "rb") as handle:
        handle.seek(max(size - 4, 0))
        return struct.unpack("<I", handle.read(4).rjust(4, b"\0"))[0]


def _check_size(path: Path, header: Any, stored: int, compressed: bool) -> None:
    """Refuse a header whose data cannot be in the file or cannot fit in memory."""
    shape = tuple(int(n) for n in header.get_data_shape())
    dtype = header.get_data_dtype()
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize + int(header["vox_offset"])
    memory = _physical_memory()
    if memory is not None and needed > memory:
        raise NiftiRefused(
            f"Cannot open '{path}': its header says shape {shape} of {dtype}, "
            f"{needed / 2**30:.1f} GiB, more than this machine's memory "
            f"({memory / 2**30:.1f} GiB); the header is damaged or the image is too large."
        )
    exact = not compressed or needed < 2**32  # the gzip trailer stores the size mod 2**32
    if exact and stored < needed:
        raise NiftiRefused(
            f"Cannot open '{path}': its header says shape {shape} of {dtype} "
            f"({needed} bytes with the header) but the file holds {stored} bytes"
            f"{' uncompressed' if compressed else ''}; it is truncated or corrupt, or the "
            "header is wrong."
        )


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
