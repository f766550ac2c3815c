"""``seglab evaluate``: score a prediction against ground truth (Dice/IoU, surfaces, instances)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers) -> None:
    """Add the ``evaluate`` subcommand."""
    from ._shared import INPUT_FORMATS, add_damaged, add_overwrite

    parser = subparsers.add_parser(
        "evaluate",
        help="score a label image against ground truth (Dice, IoU, HD95, F1, PQ, ...)",
        description=(
            "Compare PRED with GT. Semantic mode: per class Dice, IoU, precision, recall, "
            "HD95, ASSD, surface Dice and volumes. Instance mode: one-to-one matching by IoU, "
            "TP/FP/FN, precision, recall, F1, accuracy, panoptic quality, per threshold "
            "0.50..0.95. Panoptic mode: PRED and GT are class images, --pred-instances and "
            "--gt-instances their instance images; PQ, SQ, RQ per class, things and stuff. "
            f"Files: {INPUT_FORMATS}; .npy and uncompressed TIFF are "
            "memory-mapped, zarr read slab by slab. Definitions: docs/evaluation.md."
        ),
    )
    parser.add_argument("pred", type=Path, help="predicted labels")
    parser.add_argument("gt", type=Path, help="ground-truth labels")
    parser.add_argument("--mode", choices=["semantic", "instance", "panoptic"], default="semantic")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="voxel size per axis, (z) y x (default: the ground-truth file's, e.g. NIfTI, "
        "DICOM, OME-Zarr or a TIFF written by seglab; else 1)",
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
        "--ignore-label",
        type=int,
        default=None,
        help="semantic: ground-truth id to leave out; panoptic: the void class",
    )
    parser.add_argument(
        "--no-surface", action="store_true", help="semantic: skip HD95/ASSD/surface Dice"
    )
    mapping = parser.add_mutually_exclusive_group()
    mapping.add_argument(
        "--foreground",
        action="store_true",
        help="semantic: foreground vs background (every id > 0 is class 1 on both sides)",
    )
    mapping.add_argument(
        "--map",
        dest="class_map",
        default=None,
        metavar="PRED:GT,...",
        help="semantic: rename prediction classes first, e.g. 1:1,2:1 merges prediction "
        "classes 1 and 2 into ground-truth class 1 (unlisted ids keep theirs; :0 drops)",
    )
    panoptic = parser.add_argument_group("panoptic mode")
    panoptic.add_argument("--pred-instances", type=Path, default=None, help="predicted ids")
    panoptic.add_argument("--gt-instances", type=Path, default=None, help="ground-truth ids")
    panoptic.add_argument(
        "--things", type=int, nargs="+", default=None, help="classes counted as objects"
    )
    panoptic.add_argument(
        "--stuff",
        type=int,
        nargs="+",
        default=None,
        help="stuff classes (default: every other non-zero class present)",
    )
    panoptic.add_argument(
        "--per-plane", action="store_true", help="3D: each plane along axis 0 is one image"
    )
    parser.add_argument("--csv", type=Path, default=None, help="write the summary table here")
    parser.add_argument(
        "--objects-csv", type=Path, default=None, help="instance: write per-object rows here"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def read_labels(path: Path, damaged: str = "error") -> tuple[Any, tuple[float, ...] | None]:
    """A label file read lazily where the format allows; returns ``(array, spacing)``.

    Read with :func:`napari_seglab.io.read_array` (``lazy=True``): ``.npy`` and
    uncompressed TIFF are memory-mapped and zarr stays on disk, so the metrics
    read them slab by slab. ``spacing`` is None when the file does not store one.
    ``damaged`` is ``--damaged`` (DICOM inputs with unreadable files).
    """
    from napari_seglab.io import read_array

    labels = read_array(path, lazy=True, what="label file", layer_type="labels", damaged=damaged)
    spacing = labels.spacing
    if spacing is not None and len(spacing) != len(labels.shape):
        spacing = None
    return labels.data, spacing


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table (warnings on stderr), write CSV files; exit code 0."""
    from napari_seglab import metrics
    from napari_seglab.jobs import run_to_end

    from ._shared import check_outputs, progress_printer

    if args.mode == "semantic" and args.objects_csv is not None:
        raise ValueError("--objects-csv needs --mode instance, got --mode semantic")
    if args.mode == "instance" and (args.foreground or args.class_map):
        raise ValueError("--foreground and --map need --mode semantic, got --mode instance")
    if args.mode == "panoptic" and args.objects_csv is not None:
        raise ValueError("--objects-csv needs --mode instance, got --mode panoptic")
    panoptic_inputs = check_panoptic_arguments(args)
    class_map = metrics.parse_class_map(args.class_map) if args.class_map else None
    check_outputs(
        [("--csv", args.csv, (".csv",)), ("--objects-csv", args.objects_csv, (".csv",))],
        [("prediction", args.pred), ("ground truth", args.gt), *panoptic_inputs],
        overwrite=args.overwrite,
    )
    pred, _ = read_labels(args.pred, args.damaged)
    gt, gt_spacing = read_labels(args.gt, args.damaged)
    panoptic_options = None
    if args.mode == "panoptic":
        panoptic_options = {
            "pred_instance": read_labels(args.pred_instances, args.damaged)[0],
            "gt_instance": read_labels(args.gt_instances, args.damaged)[0],
            "things": args.things,
            "stuff": args.stuff,
            "per_plane": args.per_plane,
        }
    spacing = tuple(args.spacing) if args.spacing else gt_spacing
    job = metrics.evaluation_steps(
        pred,
        gt,
        mode=args.mode,
        spacing=spacing,
        iou_threshold=args.iou_threshold,
        tolerance=args.tolerance,
        classes=args.classes,
        ignore_label=args.ignore_label,
        surface=not args.no_surface,
        slices=False,
        foreground=args.foreground,
        class_map=class_map,
        panoptic_options=panoptic_options,
    )
    evaluation = run_to_end(job, progress_printer("evaluate", quiet=args.quiet, step=1))
    result = evaluation.result
    print(format_table(*metrics.results_table(result)))
    for warning in evaluation.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.mode == "instance":
        print(
            f"\n{result['n_gt']} ground-truth objects, {result['n_pred']} predicted; "
            f"at IoU >= {result['iou_threshold']:g}: TP {result['tp']}, FP {result['fp']}, "
            f"FN {result['fn']}"
        )
    if args.csv is not None:
        print(f"wrote {metrics.write_csv(result, args.csv)}")
    if args.objects_csv is not None:
        print(f"wrote {metrics.write_csv(result, args.objects_csv, table='objects')}")
    return 0


def check_panoptic_arguments(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The panoptic instance files as ``(what, path)``; errors for missing or misplaced options."""
    given = [
        name
        for name, value in (
            ("--pred-instances", args.pred_instances),
            ("--gt-instances", args.gt_instances),
            ("--things", args.things),
            ("--stuff", args.stuff),
            ("--per-plane", args.per_plane or None),
        )
        if value is not None
    ]
    if args.mode != "panoptic":
        if given:
            raise ValueError(f"{', '.join(given)} need --mode panoptic, got --mode {args.mode}")
        return []
    missing = [n for n in ("--pred-instances", "--gt-instances", "--things") if n not in given]
    if missing:
        raise ValueError(f"--mode panoptic needs {', '.join(missing)}")
    return [
        ("predicted instances", args.pred_instances),
        ("ground-truth instances", args.gt_instances),
    ]


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows as aligned text columns."""
    from napari_seglab.metrics import format_value

    cells = [header] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)
