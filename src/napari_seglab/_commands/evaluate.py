"""``seglab evaluate``: score a prediction against ground truth (Dice/IoU, surfaces, instances)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SUFFIXES = (".tif", ".tiff", ".npy", ".nii", ".nii.gz", ".zarr")


def register(subparsers) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a label image against ground truth (Dice, IoU, HD95, F1, PQ, ...)",
        description=(
            "Compare PRED with GT. Semantic mode: per class Dice, IoU, precision, recall, "
            "HD95, ASSD, surface Dice and volumes. Instance mode: one-to-one matching by IoU, "
            "TP/FP/FN, precision, recall, F1, accuracy, panoptic quality, per threshold "
            "0.50..0.95. Files: .tif/.tiff, .npy (memory-mapped), .nii/.nii.gz, .zarr. "
            "Definitions: docs/evaluation.md."
        ),
    )
    parser.add_argument("pred", type=Path, help="predicted labels")
    parser.add_argument("gt", type=Path, help="ground-truth labels")
    parser.add_argument("--mode", choices=["semantic", "instance"], default="semantic")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="voxel size per axis, (z) y x (default: from a NIfTI ground truth, else 1)",
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="instance: IoU for a match (0.5)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="semantic: surface Dice tolerance in spacing units (1.0)",
    )
    parser.add_argument(
        "--classes", type=int, nargs="+", default=None, help="semantic: classes to report"
    )
    parser.add_argument(
        "--ignore-label", type=int, default=None, help="semantic: ground-truth id to leave out"
    )
    parser.add_argument(
        "--no-surface", action="store_true", help="semantic: skip HD95/ASSD/surface Dice"
    )
    parser.add_argument("--csv", type=Path, default=None, help="write the summary table here")
    parser.add_argument(
        "--objects-csv", type=Path, default=None, help="instance: write per-object rows here"
    )
    parser.set_defaults(func=run)


def read_labels(path: Path) -> tuple[Any, tuple[float, ...] | None]:
    """Read a label image lazily where the format allows; returns ``(array, spacing)``.

    ``.npy`` is memory-mapped and ``.zarr`` opened lazily, so the metrics read
    them slab by slab. ``spacing`` is known for NIfTI only (None otherwise).
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file not found: '{path}'")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from napari_seglab.io import read_nifti

        volume = read_nifti(path, layer_type="labels")
        return volume.data, tuple(float(s) for s in volume.spacing)
    if name.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False), None
    if name.endswith((".tif", ".tiff")):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r"), None
        except ValueError:  # compressed or tiled: not memory-mappable
            return tifffile.imread(path), None
    if name.endswith(".zarr"):
        import zarr

        return zarr.open_array(str(path), mode="r"), None
    raise ValueError(
        f"unsupported label file '{path.name}': expected one of {', '.join(SUFFIXES)}"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write CSV files; exit code 0."""
    from napari_seglab import metrics

    pred, _ = read_labels(args.pred)
    gt, gt_spacing = read_labels(args.gt)
    spacing = tuple(args.spacing) if args.spacing else gt_spacing
    if args.mode == "semantic":
        if args.objects_csv is not None:
            raise ValueError("--objects-csv needs --mode instance, got --mode semantic")
        result = metrics.semantic(
            pred,
            gt,
            classes=args.classes,
            spacing=spacing,
            ignore_label=args.ignore_label,
            tolerance=args.tolerance,
            surface=not args.no_surface,
        )
    else:
        result = metrics.instances(pred, gt, iou_threshold=args.iou_threshold)
    print(format_table(*metrics.results_table(result)))
    if args.mode == "instance":
        print(
            f"\n{result['n_gt']} ground-truth objects, {result['n_pred']} predicted; "
            f"at IoU >= {result['iou_threshold']:g}: TP {result['tp']}, FP {result['fp']}, "
            f"FN {result['fn']}"
        )
    if args.csv is not None:
        metrics.write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    if args.objects_csv is not None:
        metrics.write_csv(result, args.objects_csv, table="objects")
        print(f"wrote {args.objects_csv}")
    return 0


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows as aligned text columns."""
    from napari_seglab.metrics import format_value

    cells = [header] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)
