"""``seglab read`` and ``seglab convert``: inspect any input file, convert it to NIfTI.

NIfTI files and DICOM folders are summarised as napari opens them (orientation,
DICOM tags); every other format :func:`napari_seglab.io.read_array` reads
(TIFF, ``.npy``, zarr, pictures, a single DICOM file) with its shape, dtype and
the geometry the file stores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``read`` and ``convert`` subcommands."""
    from ._shared import add_damaged, add_overwrite

    read = subparsers.add_parser(
        "read",
        help="show how an image file or DICOM folder opens (shape, spacing, layer type)",
        description=(
            "Print shape, dtype, spacing (napari scale), origin (napari translate), "
            "orientation and layer type of a NIfTI file or of every series in a DICOM "
            "folder, as the napari reader opens them; for other files (TIFF, .npy, zarr, "
            "pictures) shape, dtype, the spacing the file stores and whether it looks like "
            "labels."
        ),
    )
    read.add_argument("path", type=Path, help="file or folder in any format seglab reads")
    read.add_argument("--json", action="store_true", help="print JSON, metadata included")
    add_damaged(read)
    read.set_defaults(func=_read)

    convert = subparsers.add_parser(
        "convert",
        help="convert a DICOM series, NIfTI or any other input file to NIfTI",
        description=(
            "Write a DICOM series (or a NIfTI file) to .nii/.nii.gz with its scanner geometry; "
            "other files with the spacing and origin they store (else 1 and 0 per axis)."
        ),
    )
    convert.add_argument("source", type=Path, help="file or folder in any format seglab reads")
    convert.add_argument("target", type=Path, help="output .nii or .nii.gz")
    convert.add_argument(
        "--series", default=None, help="SeriesInstanceUID (default: the series with most slices)"
    )
    add_damaged(convert)
    add_overwrite(convert)
    convert.set_defaults(func=_convert)


def _is_medical(path: Path) -> str | None:
    """``"dicom"`` for a DICOM folder, ``"nifti"`` for a NIfTI file, else None."""
    from napari_seglab.io.reader import format_of

    kind = format_of(path, what="input file") if path.exists() else None
    if kind == "dicom" and path.is_dir():
        return "dicom"
    return "nifti" if kind == "nifti" else None


def _volumes(path: Path, damaged: str = "error") -> list:
    from napari_seglab.io import read_array, read_dicom_folder, read_nifti

    kind = _is_medical(path)
    if kind == "dicom":
        return read_dicom_folder(path, damaged=damaged)
    if kind == "nifti":
        return [read_nifti(path)]
    return [read_array(path, what="input file", damaged=damaged)]


def _read(args: argparse.Namespace) -> int:
    volumes = _volumes(args.path, args.damaged)
    summaries = [
        _summary(v, metadata=args.json) if hasattr(v, "layer_data") else _file_summary(v)
        for v in volumes
    ]
    if args.json:
        print(json.dumps(summaries, indent=2, default=str))
        return 0
    for number, summary in enumerate(summaries):
        if number:
            print()
        for key, value in summary.items():
            print(f"{key + ':':13s}{value}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from napari_seglab.io import read_array, read_dicom_series, read_nifti, write_nifti

    from ._shared import check_outputs

    source: Path = args.source
    check_outputs(
        [("TARGET", args.target, (".nii", ".nii.gz"))],
        [("source", source)],
        overwrite=args.overwrite,
    )
    kind = _is_medical(source)
    if kind is None:
        read = read_array(source, what="input file", damaged=args.damaged)
        data, is_label = read.data, read.is_label
        options = {"spacing": read.spacing, "origin": read.origin, "is_label": is_label}
    else:
        volume = (
            read_dicom_series(source, args.series, damaged=args.damaged)
            if kind == "dicom"
            else read_nifti(source)
        )
        data, is_label = volume.data, volume.is_label
        options = {
            "spacing": volume.spacing,
            "origin": volume.origin,
            "metadata": volume.metadata,
            "is_label": is_label,
        }
    path = write_nifti(args.target, data, **options)
    print(f"wrote {path} ({'labels' if is_label else 'image'}, shape {data.shape})")
    return 0


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _summary(volume, *, metadata: bool) -> dict:
    import numpy as np

    meta = volume.metadata
    orientation = meta["orientation"]
    axes = {2: "(Y, X)", 3: "(Z, Y, X)", 4: "(T, Z, Y, X)"}.get(volume.data.ndim, "")
    reason = meta.get("nifti", {}).get("opened_as")
    kind = "labels" if volume.is_label else "image"
    codes = " -> ".join(" ".join(orientation[k]) for k in ("source_axcodes", "layer_axcodes"))
    degrees = orientation["obliquity_degrees"]
    oblique = f"oblique: {degrees:.2f} degrees" if orientation["oblique"] else "oblique: no"
    summary = {
        "name": volume.name,
        "source": f"{meta['source']['format']} {meta['source']['path']}",
        "layer": f"{kind} ({reason})" if reason else kind,
        "shape": f"{tuple(volume.data.shape)} axes {axes}",
        "dtype": str(volume.data.dtype),
        "spacing": f"{_numbers(volume.spacing)} mm (napari scale)",
        "origin": f"{_numbers(volume.origin)} mm (I, P, L; napari translate)",
        "orientation": f"{codes} ({oblique})",
        "values": f"min {np.min(volume.data):g}, max {np.max(volume.data):g}",
    }
    if volume.is_label:
        summary["labels"] = str(int(np.count_nonzero(np.unique(volume.data))))
    if volume.contrast_limits is not None:
        summary["window"] = _numbers(volume.contrast_limits)
    if "dicom" in meta:
        tags = meta["dicom"]
        summary["dicom"] = (
            f"{tags.get('Modality', '?')} series {tags.get('SeriesNumber', '?')}, "
            f"{tags['n_slices']} slices"
        )
        if "rescale" in tags:
            rescale = tags["rescale"]
            summary["dicom"] += f", rescale {rescale['slope']}/{rescale['intercept']}"
        if "segments" in tags:
            names = ", ".join(f"{k}: {v}" for k, v in tags["segments"].items())
            summary["dicom"] += f", segments {names}"
    if metadata:
        summary["metadata"] = meta
    return summary


def _file_summary(read) -> dict:
    """Summary of an :class:`~napari_seglab.io.ArrayFile` (formats without orientation)."""
    import numpy as np

    values = np.asarray(read.data)
    summary = {
        "name": read.path.name,
        "source": f"{read.format} {read.path}",
        "layer": "labels" if read.is_label else "image",
        "shape": str(tuple(read.shape)),
        "dtype": str(values.dtype),
        "spacing": "not stored (1 per axis)"
        if read.spacing is None
        else f"{_numbers(read.spacing)} (napari scale)",
        "origin": "not stored (0 per axis)"
        if read.origin is None
        else f"{_numbers(read.origin)} (napari translate)",
        "values": f"min {values.min():g}, max {values.max():g}",
    }
    if read.is_label:
        summary["labels"] = str(int(np.count_nonzero(np.unique(values))))
    return summary
