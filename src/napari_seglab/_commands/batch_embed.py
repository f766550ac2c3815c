"""``seglab batch embed``: SAM embeddings of every plane into the on-disk cache.

The pipeline is :class:`napari_seglab.batch.embed.EmbedPipeline`. Also holds
the model arguments ``seglab batch sam`` shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "precompute SAM embeddings of every plane into the disk cache (annotate later at once)"
DESCRIPTION = (
    "Compute the SAM image embedding of every plane of every input into the on-disk embedding "
    "cache (default: the one the prompting widget reads, <cache folder>/sam-embeddings.zarr; "
    "--cache-dir for another, e.g. a shared folder). Planes already cached are skipped. "
    "Annotating later with the same model and napari-seglab version, on any machine that sees "
    "the cache folder, starts without computing embeddings. Writes <name>_embed.json (the "
    "cache keys) per input."
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL INPUT...`` plus ``--arch``, ``--device``, ``--offline`` (shared with ``sam``)."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=(
            "registered SAM checkpoint (vit_b, vit_l, vit_h, medsam, or SAM 2.1: "
            "sam2.1_hiera_tiny, _small, _base_plus, _large) or a full SAM .pth / SAM 2 .pt file"
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=str,
        metavar="INPUT",
        help="image files, folders, globs or list files (.txt)",
    )
    parser.add_argument(
        "--arch",
        help=(
            "architecture of a .pth MODEL (vit_b, vit_l, vit_h, tiny; default: guessed); "
            "for a SAM 2 .pt file its SAM 2.1 name (sam2.1_hiera_tiny ...) or sam2 config"
        ),
    )
    parser.add_argument(
        "--device", default="auto", help="auto (default: one GPU per worker), cpu, cuda, mps"
    )
    parser.add_argument(
        "--offline", action="store_true", help="never download a registered checkpoint"
    )


def model_spec(args: argparse.Namespace, *, decoder: Path | None = None):
    """The :class:`~napari_seglab.batch.sam_model.SamModelSpec` of the parsed arguments.

    A registered checkpoint is fetched (or verified) once here before a local
    run, so the workers do not all download it.
    """
    from ..batch.sam_model import SamModelSpec

    spec = SamModelSpec.resolve(
        args.model,
        architecture=args.arch,
        decoder=decoder,
        device=args.device,
        download=not args.offline,
    )
    if not spec.is_file and getattr(args, "scheduler", None) is None:
        from ..sam import ensure_checkpoint

        ensure_checkpoint(spec.model, download=not args.offline)
    return spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL INPUT... [--cache-dir DIR] [--batch-size N]``."""
    add_model_arguments(parser)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="embedding cache folder (default: the widget's, <cache folder>/sam-embeddings.zarr)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="planes per encoder call (default 4 on a GPU, 1 on a CPU)",
    )


def make_pipeline(args: argparse.Namespace):
    """An :class:`~napari_seglab.batch.embed.EmbedPipeline` from the parsed arguments."""
    from ..batch.embed import EmbedPipeline

    return EmbedPipeline(model_spec(args), cache_dir=args.cache_dir, batch_size=args.batch_size)
