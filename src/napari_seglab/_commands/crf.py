"""``seglab crf``: refine probabilities or a label image with a dense CRF."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``crf`` subcommand."""
    from ..crf import (
        DEFAULT_BILATERAL_WEIGHT,
        DEFAULT_CONFIDENCE,
        DEFAULT_INTENSITY_SIGMA,
        DEFAULT_ITERATIONS,
        DEFAULT_MAX_BLOCK_VOXELS,
        DEFAULT_SMOOTHNESS_WEIGHT,
        DEFAULT_SPATIAL_SIGMA_VOXELS,
    )
    from ._shared import INPUT_FORMATS, OUTPUT_FORMATS, add_damaged, add_overwrite

    parser = subparsers.add_parser(
        "crf",
        help="refine probabilities or labels so that boundaries follow image edges",
        description=(
            "Dense CRF refinement. INPUT is class probabilities (C, [Z,] Y, X), a single "
            f"foreground map shaped like the image, or with --labels a label image. Files: "
            f"{INPUT_FORMATS}. Output ({OUTPUT_FORMATS}): class indices "
            "(probabilities) or refined labels."
        ),
    )
    parser.add_argument("image", type=Path, help="image file (any format seglab reads)")
    parser.add_argument("input", type=Path, help="probabilities or, with --labels, labels")
    parser.add_argument("-o", "--out", type=Path, required=True, help=f"output ({OUTPUT_FORMATS})")
    parser.add_argument("--labels", action="store_true", help="INPUT is a label image")
    parser.add_argument(
        "--mode",
        choices=["instance", "semantic"],
        default="instance",
        help="labels: refine each object on its own (default) or all classes jointly",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=DEFAULT_CONFIDENCE,
        help=f"labels: probability that a given label is right (default {DEFAULT_CONFIDENCE})",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="voxel size per spatial axis, (z) y x; kernel widths use the same unit "
        "(default: the image file's, e.g. NIfTI, DICOM or a TIFF written by seglab; else 1)",
    )
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument(
        "--spatial-sigma",
        type=float,
        default=None,
        help=f"bilateral width, physical units (default {DEFAULT_SPATIAL_SIGMA_VOXELS:g} "
        "x finest voxel)",
    )
    parser.add_argument(
        "--intensity-sigma",
        type=float,
        default=DEFAULT_INTENSITY_SIGMA,
        help="bilateral intensity width on the [0, 1] normalised scale",
    )
    parser.add_argument("--bilateral-weight", type=float, default=DEFAULT_BILATERAL_WEIGHT)
    parser.add_argument(
        "--smoothness-sigma",
        type=float,
        default=None,
        help="smoothness width, physical units (default 1 x finest voxel)",
    )
    parser.add_argument("--smoothness-weight", type=float, default=DEFAULT_SMOOTHNESS_WEIGHT)
    parser.add_argument(
        "--channel-axis", type=int, default=None, help="axis of IMAGE holding channels"
    )
    parser.add_argument(
        "--intensity-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="raw intensities mapped to 0 and 1 (e.g. a CT window); default: percentiles",
    )
    parser.add_argument(
        "--max-block-voxels",
        type=int,
        default=DEFAULT_MAX_BLOCK_VOXELS,
        help="largest block per CRF; bigger volumes are tiled (bounds memory)",
    )
    safety = parser.add_argument_group(
        "no-harm checks (see docs/crf.md, 'Real data: no harm by default')"
    )
    safety.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="keep changes the image contradicts (the plain CRF)",
    )
    safety.add_argument(
        "--no-keep-objects",
        dest="keep_objects",
        action="store_false",
        help="probabilities only: let the CRF erase input objects whole",
    )
    safety.add_argument(
        "--keep-confident",
        type=float,
        default=None,
        metavar="P",
        help="probabilities only: pixels whose input probability is at least P keep their class",
    )
    safety.add_argument(
        "--warn-fraction",
        type=float,
        default=None,
        metavar="F",
        help="probabilities only: warn when more than F of the confident pixels change",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def _spacing(args: argparse.Namespace, image_file, n_spatial: int):
    """``--spacing``, else the image file's spacing when it has one per spatial axis."""
    if args.spacing is not None:
        return args.spacing
    spacing = image_file.spacing
    if spacing is not None and len(spacing) == n_spatial:
        return spacing
    return None


def run(args: argparse.Namespace) -> int:
    """Run the CRF on the files named in ``args``; returns the exit code."""
    import numpy as np

    from .. import crf
    from ..io import WRITE_SUFFIXES, read_array, write_array
    from ..jobs import run_to_end
    from ._shared import check_outputs, progress_printer

    check_outputs(
        [("-o", args.out, WRITE_SUFFIXES)],
        [("image", args.image), ("labels" if args.labels else "input", args.input)],
        overwrite=args.overwrite,
    )
    image_file = read_array(args.image, what="image file", damaged=args.damaged)
    given_file = read_array(
        args.input, what="labels file" if args.labels else "input file", damaged=args.damaged
    )
    image, given = image_file.data, given_file.data
    if not args.labels and given.ndim in (2, 3) and given.shape in (image.shape, image.shape[:-1]):
        # one foreground map shaped like a greyscale or channels-last image
        given = given[np.newaxis]
    n_spatial = given.ndim if args.labels else given.ndim - 1
    common = {
        "spacing": _spacing(args, image_file, n_spatial),
        "iterations": args.iterations,
        "spatial_sigma": args.spatial_sigma,
        "intensity_sigma": args.intensity_sigma,
        "bilateral_weight": args.bilateral_weight,
        "smoothness_sigma": args.smoothness_sigma,
        "smoothness_weight": args.smoothness_weight,
        "channel_axis": args.channel_axis,
        "intensity_range": args.intensity_range,
        "max_block_voxels": args.max_block_voxels,
        "verify": args.verify,
    }
    if args.labels:
        job = crf.refine_labels_steps(
            image, given, confidence=args.confidence, mode=args.mode, **common
        )
    else:
        checks = {"keep_objects": args.keep_objects, "keep_confident": args.keep_confident}
        if args.warn_fraction is not None:
            checks["warn_fraction"] = args.warn_fraction
        job = crf.refine_steps(image, given, **common, **checks)
    result = run_to_end(job, progress_printer("crf", quiet=args.quiet))
    written = write_array(args.out, result, spacing=common["spacing"])
    values = np.unique(result)
    print(
        f"wrote {written}  shape {result.shape} {result.dtype}, "
        f"{values.size} values ({'labels' if args.labels else 'class indices'})"
    )
    return 0
