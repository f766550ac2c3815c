"""``seglab read`` and ``seglab convert``: inspect and convert NIfTI files and DICOM folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``read`` and ``convert`` subcommands."""
    read = subparsers.add_parser(
        "read",
        help="show how a NIfTI file or DICOM folder opens in napari",
        description=(
            "Print shape, dtype, spacing (napari scale), origin (napari translate), "
            "orientation and layer type of a NIfTI file or of every series in a DICOM "
            "folder, as the napari reader opens them."
        ),
    )
    read.add_argument("path", type=Path, help=".nii/.nii.gz file or folder of DICOM files")
    read.add_argument("--json", action="store_true", help="print JSON, metadata included")
    read.set_defaults(func=_read)

    convert = subparsers.add_parser(
        "convert",
        help="convert a DICOM series or NIfTI file to NIfTI",
        description=(
            "Write a DICOM series (or a NIfTI file) to .nii/.nii.gz with its scanner geometry."
        ),
    )
    convert.add_argument("source", type=Path, help=".nii/.nii.gz file or DICOM folder")
    convert.add_argument("target", type=Path, help="output .nii or .nii.gz")
    convert.add_argument(
        "--series", default=None, help="SeriesInstanceUID (default: the series with most slices)"
    )
    convert.set_defaults(func=_convert)


def _volumes(path: Path) -> list:
    from napari_seglab.io import read_dicom_folder, read_nifti

    if path.is_dir():
        return read_dicom_folder(path)
    return [read_nifti(path)]


def _read(args: argparse.Namespace) -> int:
    volumes = _volumes(args.path)
    if args.json:
        print(json.dumps([_summary(v, metadata=True) for v in volumes], indent=2, default=str))
        return 0
    for number, volume in enumerate(volumes):
        if number:
            print()
        for key, value in _summary(volume, metadata=False).items():
            print(f"{key + ':':13s}{value}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from napari_seglab.io import read_dicom_series, read_nifti, write_nifti

    source: Path = args.source
    volume = read_dicom_series(source, args.series) if source.is_dir() else read_nifti(source)
    path = write_nifti(
        args.target,
        volume.data,
        spacing=volume.spacing,
        origin=volume.origin,
        metadata=volume.metadata,
        is_label=volume.is_label,
    )
    print(f"wrote {path} ({'labels' if volume.is_label else 'image'}, shape {volume.data.shape})")
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
        "origin": f"{_numbers(volume.origin)} mm LPS (napari translate)",
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
