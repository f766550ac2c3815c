"""``seglab batch predict MODEL INPUT... -o OUTPUT_DIR``: a saved U-Net over many inputs.

A pipeline module of ``seglab batch`` (see :mod:`napari_seglab._commands.batch`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "segment many images with a saved model (one output per input)"
DESCRIPTION = (
    "Predict every INPUT (files, folders, globs or .txt list files; a folder of DICOM files "
    "is one input) with MODEL. OUTPUT_DIR gets NAME_labels.EXT per input (and "
    "NAME_probabilities / NAME_instances on request), named after the input; EXT is the "
    "input's format where it can be written (.nii.gz, .nii, .tif, .npy), else .tif. "
    "A model of an instance or panoptic family (maskrcnn, mask2former) always writes "
    "NAME_instances (its own objects) and NAME_labels (classes); such models predict every "
    "input whole, without --memory-budget, --crf, --instances or --tta."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL INPUT...`` and the prediction options."""
    parser.add_argument("model", type=Path, help="model file written by 'seglab train'")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders, globs or list files"
    )
    parser.add_argument(
        "--outputs",
        nargs="+",
        choices=("labels", "probabilities"),
        default=["labels"],
        help="what to write per input (default: labels)",
    )
    parser.add_argument("--crf", action="store_true", help="refine with a dense CRF")
    parser.add_argument(
        "--instances",
        choices=("none", "connected", "watershed"),
        default="none",
        help="also write objects (NAME_instances), split from the labels",
    )
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("same", "tif", "nii.gz", "npy", "ome-zarr"),
        default="same",
        help="output format (default: the input's where writable, else .tif)",
    )
    parser.add_argument(
        "--memory-budget",
        default=None,
        metavar="BYTES",
        help="e.g. 4GB: inputs whose prediction needs more go block by block (OME-Zarr)",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")


def make_pipeline(args: argparse.Namespace):
    """The :class:`~napari_seglab.batch.predict.PredictPipeline` of the arguments."""
    from ..batch.predict import PredictPipeline

    return PredictPipeline(
        args.model,
        outputs=args.outputs,
        crf=args.crf,
        instances=args.instances,
        device=args.device,
        output_format=args.output_format,
        memory_budget=args.memory_budget,
        overlap=args.overlap,
        tta=args.tta,
        batch_size=args.batch_size,
    )
