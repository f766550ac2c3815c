"""Write a result array in the format its suffix names (the counterpart of :func:`.read_array`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Suffixes :func:`write_array` writes.
WRITE_SUFFIXES = (".tif", ".tiff", ".npy", ".nii", ".nii.gz")


def check_output(path: str | os.PathLike, *, what: str = "output file") -> Path:
    """``path`` as a Path when :func:`write_array` can write it (check before long work).

    Raises
    ------
    ValueError
        ``path`` ends in none of :data:`WRITE_SUFFIXES`, or is an existing folder.
    """
    path = Path(path)
    if not path.name.lower().endswith(WRITE_SUFFIXES):
        raise ValueError(
            f"unsupported {what} {str(path)!r}: expected one of {', '.join(WRITE_SUFFIXES)}, "
            f"got {repr(path.suffix) if path.suffix else 'no suffix'}."
        )
    if path.is_dir():
        raise ValueError(f"expected a file name for the {what}, got the folder {str(path)!r}.")
    return path


def write_array(
    path: str | os.PathLike,
    array: Any,
    *,
    spacing: tuple[float, ...] | None = None,
    what: str = "output file",
    compression: str | None = None,
) -> Path:
    """Write ``array`` to ``path`` (``.tif``/``.tiff``, ``.npy`` or ``.nii``/``.nii.gz``).

    The file is written atomically (:func:`napari_seglab.checkpoints.atomic_path`):
    to a temporary file in the same folder, renamed onto ``path`` only when
    complete, so a failure (a full disk, a kill) leaves an existing ``path``
    intact and no partial file. The name written is exactly ``path`` (a
    ``.NPY`` name gets no extra ``.npy``).

    Parameters
    ----------
    path : str or path-like
        Target file; missing parent folders are created.
    array : array-like
        Data, in the axis order :func:`.read_array` gives back (NIfTI: ``(Z, Y, X)``
        layer axes).
    spacing : tuple of float, optional
        Voxel size per axis; stored in the TIFF description (read back by
        :func:`.read_array`) and the NIfTI header; ``.npy`` keeps no geometry.
    what : str
        What the file is, for error messages.
    compression : str, optional
        TIFF compression (e.g. ``"zlib"``); ignored for other formats.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    ValueError
        ``path`` ends in none of :data:`WRITE_SUFFIXES` (see :func:`check_output`).
    """
    from ..checkpoints import atomic_path

    path = check_output(path, what=what)
    name = path.name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array)
    if name.endswith(".npy"):
        # through a file handle: np.save would add ".npy" to a name like "x.NPY"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, data)
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        metadata = {} if spacing is None else {"spacing": [float(s) for s in spacing]}
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, metadata=metadata, compression=compression)
    else:
        from .nifti import write_nifti  # atomic itself

        is_label = data.dtype == np.bool_ or np.issubdtype(data.dtype, np.integer)
        return Path(write_nifti(path, data, spacing=spacing, is_label=bool(is_label)))
    return path
