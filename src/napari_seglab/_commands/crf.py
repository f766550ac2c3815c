"""``seglab crf``: refine probabilities or a label image with a dense CRF."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUFFIXES = (".tif", ".tiff", ".npy")


def register(subparsers) -> None:
    """Add the ``crf`` subcommand."""
    from ..crf._labels import DEFAULT_CONFIDENCE
    from ..crf._params import (
        DEFAULT_BILATERAL_WEIGHT,
        DEFAULT_INTENSITY_SIGMA,
        DEFAULT_ITERATIONS,
        DEFAULT_MAX_BLOCK_VOXELS,
        DEFAULT_SMOOTHNESS_WEIGHT,
        DEFAULT_SPATIAL_SIGMA_VOXELS,
    )

    parser = subparsers.add_parser(
        "crf",
        help="refine probabilities or labels so that boundaries follow image edges",
        description=(
            "Dense CRF refinement. INPUT is class probabilities (C, [Z,] Y, X), a single "
            "foreground map shaped like the image, or with --labels a label image. Files: "
            ".tif/.tiff/.npy. Output: class indices (probabilities) or refined labels."
        ),
    )
    parser.add_argument("image", type=Path, help="image (.tif/.tiff/.npy)")
    parser.add_argument("input", type=Path, help="probabilities or, with --labels, labels")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .tif/.tiff/.npy")
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
        help="voxel size per spatial axis, (z) y x; kernel widths use the same unit",
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
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"Expected a {'/'.join(SUFFIXES)} file, got {str(path)!r}.")


def read_array(path: Path):
    """Read a .tif/.tiff/.npy file into a numpy array."""
    import numpy as np

    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}.")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


def write_array(path: Path, array) -> None:
    """Write ``array`` to a .tif/.tiff/.npy file (folders are created)."""
    import numpy as np

    _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, array)
    else:
        import tifffile

        tifffile.imwrite(path, array)


def run(args: argparse.Namespace) -> int:
    """Run the CRF on the files named in ``args``; returns the exit code."""
    import numpy as np

    from .. import crf

    image = read_array(args.image)
    given = read_array(args.input)
    common = {
        "spacing": args.spacing,
        "iterations": args.iterations,
        "spatial_sigma": args.spatial_sigma,
        "intensity_sigma": args.intensity_sigma,
        "bilateral_weight": args.bilateral_weight,
        "smoothness_sigma": args.smoothness_sigma,
        "smoothness_weight": args.smoothness_weight,
        "channel_axis": args.channel_axis,
        "intensity_range": args.intensity_range,
        "max_block_voxels": args.max_block_voxels,
    }
    if args.labels:
        steps = crf.refine_labels_steps(
            image, given, confidence=args.confidence, mode=args.mode, **common
        )
    else:
        if given.ndim in (2, 3) and given.shape in (image.shape, image.shape[:-1]):
            # one foreground map shaped like a greyscale or channels-last image
            given = given[np.newaxis]
        steps = crf.refine_steps(image, given, **common)
    last = -1
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            result = stop.value
            break
        percent = int(100 * event.done / max(event.total, 1))
        if not args.quiet and percent >= last + 10:
            print(f"crf: {percent:3d}% {event.message}", file=sys.stderr, flush=True)
            last = percent
    write_array(args.out, result)
    values = np.unique(result)
    print(
        f"wrote {args.out}  shape {result.shape} {result.dtype}, "
        f"{values.size} values ({'labels' if args.labels else 'class indices'})"
    )
    return 0
