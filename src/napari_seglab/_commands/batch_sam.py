"""``seglab batch sam``: prompts from a CSV/JSON file -> one SAM labels image per input.

The pipeline is :class:`napari_seglab.batch.sam.SamPipeline`; the prompt file
format is described in :mod:`napari_seglab.batch.prompts` and ``docs/batch.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "segment the objects of a prompt file (points/boxes per image) with SAM"
DESCRIPTION = (
    "Prompt Segment Anything with the points and boxes a CSV or JSON prompt file gives per "
    "image (matched by the input's name without suffix) and write <name>_sam.<ext> labels "
    "(NIfTI with the source geometry for NIfTI/DICOM inputs, else .tif), one id per object. "
    "With --propagate, objects on a plane of a stack are extended through the stack. "
    "Inputs without prompts fail with an error naming them; images of the prompt file that "
    "are not among the inputs are refused unless --subset is given."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL INPUT... --prompts FILE`` and the SAM options."""
    from .batch_embed import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument(
        "--prompts",
        type=Path,
        required=True,
        metavar="FILE",
        help="prompt file (.csv or .json): points/boxes per image, see docs/batch.md",
    )
    parser.add_argument(
        "--propagate",
        action="store_true",
        help="extend each object from its plane through the stack (3D inputs)",
    )
    parser.add_argument(
        "--proposal",
        choices=("best", "largest", "smallest"),
        default="best",
        help="which of SAM's three proposals to keep for a single point (default: best score)",
    )
    parser.add_argument("--decoder", type=Path, help="fine-tuned decoder weights (.pth)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="disk embedding cache to read and fill (e.g. the one 'seglab batch embed' "
        "filled); default: embeddings kept in memory only",
    )
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("same", "tif", "nii.gz", "nii", "npy"),
        default="same",
        help="output format (default same: NIfTI stays NIfTI, .npy stays .npy, DICOM series "
        "become .nii.gz, the rest .tif)",
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="run on a subset of the prompt file's images: list the others instead of "
        "refusing the run",
    )


def make_items(args: argparse.Namespace):
    """The inputs, checked against the prompt file's images before any work."""
    from ..batch.inputs import collect_items
    from ..batch.prompts import PromptMatch, match_names, read_prompts

    prompts = read_prompts(args.prompts)
    items = collect_items(args.inputs)
    names = [item.name for item in items]
    match = match_names(prompts, names)
    if match.unknown and not args.subset:
        raise ValueError(
            PromptMatch(match.unknown, []).describe(prompts.path, names)
            + " Add --subset to run these inputs anyway."
        )
    if match.unknown or match.unprompted:
        print(f"warning: {match.describe(prompts.path, names)}", file=sys.stderr)
    args.prompt_set = prompts
    return items


def make_pipeline(args: argparse.Namespace):
    """A :class:`~napari_seglab.batch.sam.SamPipeline` from the parsed arguments."""
    from ..batch.sam import SamPipeline
    from .batch_embed import model_spec

    prompts = getattr(args, "prompt_set", None) or args.prompts
    return SamPipeline(
        model_spec(args, decoder=args.decoder),
        prompts,
        proposal=args.proposal,
        propagate=args.propagate,
        cache_dir=args.cache_dir,
        output_format=args.output_format,
    )
