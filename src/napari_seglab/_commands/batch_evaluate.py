"""``seglab batch evaluate PRED... --truth TRUTH... -o OUTPUT_DIR``: one table of scores.

A pipeline module of ``seglab batch`` (see :mod:`napari_seglab._commands.batch`).
"""

from __future__ import annotations

import argparse

HELP = "score many predictions against ground truth paired by name (one table)"
DESCRIPTION = (
    "Pair every prediction PRED (files, folders, globs or list files) with the ground truth "
    "of the same name (ct_001_labels.tif matches ct_001.nii.gz or ct_001_gt.tif) and score "
    "it: Dice and IoU per class, and with --instances F1 and PQ of the objects. OUTPUT_DIR "
    "gets report.csv/json (per item and (mean) rows), report.png and manifest.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``PRED...``, ``--truth`` and the scoring options."""
    parser.add_argument(
        "inputs", nargs="+", metavar="PRED", help="prediction files, folders, globs or list files"
    )
    parser.add_argument(
        "--truth",
        nargs="+",
        required=True,
        metavar="TRUTH",
        help="ground-truth files, folders, globs or list files",
    )
    parser.add_argument(
        "--instances", action="store_true", help="also score objects (instance F1, PQ)"
    )
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="for --instances")
    parser.add_argument("--surface", action="store_true", help="also HD95 per class")
    parser.add_argument("--ignore-label", type=int, default=None, help="ground truth not scored")


def make_items(args: argparse.Namespace):
    """Predictions paired with ground truth by name."""
    from ..batch.inputs import collect_items, pair_items

    predictions = collect_items(args.inputs, what="prediction")
    truths = collect_items(args.truth, what="ground truth")
    return pair_items(predictions, truths)


def make_pipeline(args: argparse.Namespace):
    """The :class:`~napari_seglab.batch.evaluate.EvaluatePipeline` of the arguments."""
    from ..batch.evaluate import EvaluatePipeline

    return EvaluatePipeline(
        instances=args.instances,
        iou_threshold=args.iou_threshold,
        surface=args.surface,
        ignore_label=args.ignore_label,
    )
