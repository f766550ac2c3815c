"""``seglab sam`` (prompt SAM on an image) and ``seglab sam-download`` (fetch a checkpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _pair(text: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL, got {text!r}") from None
    return row, col


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected ROW0,COL0,ROW1,COL1, got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers) -> None:
    """Add the ``sam`` and ``sam-download`` subcommands."""
    from ._shared import add_damaged, add_overwrite

    parser = subparsers.add_parser(
        "sam",
        help="segment one object with SAM from point / box prompts",
        description=(
            "Prompt Segment Anything on a 2D image (or one plane of a stack with --plane; "
            "--propagate extends the object through the stack). Coordinates are pixel "
            "(row, col), as napari shows them. Writes a mask (0/1, uint8)."
        ),
    )
    parser.add_argument("image", type=Path, help="image file (.tif, .npy, .png, .nii.gz, ...)")
    parser.add_argument(
        "--points", type=_pair, nargs="+", default=[], metavar="R,C", help="positive points"
    )
    parser.add_argument(
        "--negative", type=_pair, nargs="+", default=[], metavar="R,C", help="negative points"
    )
    parser.add_argument("--box", type=_box, metavar="R0,C0,R1,C1", help="box prompt")
    parser.add_argument("--plane", type=int, help="plane of a (Z, Y, X) stack to prompt on")
    parser.add_argument(
        "--propagate", action="store_true", help="extend the object through the stack"
    )
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="output mask (.tif, .tiff, .npy, .nii.gz)"
    )
    parser.add_argument(
        "--model",
        default="vit_b",
        help=(
            "vit_b (default), vit_l, vit_h, medsam, tiny, or a SAM 2.1 model (sam2.1_hiera_tiny, "
            "_small, _base_plus, _large; needs the sam2 extra; --propagate then tracks with "
            "SAM 2's memory)"
        ),
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="local weights file instead of the registry file (.pth; .pt for SAM 2)",
    )
    parser.add_argument("--decoder", type=Path, help="fine-tuned decoder weights (.pth)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--offline", action="store_true", help="never download")
    parser.add_argument(
        "--proposal", type=int, help="write proposal K (0-2) instead of the best-scoring one"
    )
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)

    download = subparsers.add_parser(
        "sam-download",
        help="download a SAM checkpoint into the cache folder (verified by hash)",
        description="Download registered SAM checkpoints; --list shows names, files and URLs.",
    )
    download.add_argument(
        "names",
        nargs="*",
        help="vit_b, vit_l, vit_h, medsam, sam2.1_hiera_tiny, _small, _base_plus, _large",
    )
    download.add_argument("--list", action="store_true", help="list registered checkpoints")
    download.set_defaults(func=run_download)


def _read_image(path: Path, damaged: str = "error") -> np.ndarray:
    from ..io import read_array

    return np.asarray(read_array(path, what="image file", damaged=damaged).data)


def _write_mask(path: Path, mask: np.ndarray) -> Path:
    from ..io import write_array

    return write_array(path, mask.astype(np.uint8), what="mask file", compression="zlib")


def run(args: argparse.Namespace) -> int:
    """Load the model, prompt once, write the mask."""
    from ..io import WRITE_SUFFIXES
    from ..sam import PromptSegmenter, SamInput, load_model, propagate
    from ._shared import check_outputs

    if not (args.points or args.negative or args.box):
        raise ValueError("Give at least one prompt: --points R,C, --negative R,C or --box.")
    inputs = [("image", args.image), ("checkpoint", args.checkpoint), ("decoder", args.decoder)]
    check_outputs([("-o", args.out, WRITE_SUFFIXES)], inputs, overwrite=args.overwrite)
    image = _read_image(args.image, args.damaged)
    source = SamInput(image)
    if source.is_stack and args.plane is None:
        raise ValueError(
            f"{args.image} is a stack of {source.n_planes} planes {np.shape(image)}: "
            "choose one with --plane."
        )
    if args.propagate and not source.is_stack:
        raise ValueError("--propagate needs a stack (Z, Y, X).")
    model = load_model(
        args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        decoder_checkpoint=args.decoder,
        download=not args.offline,
    )
    segmenter = PromptSegmenter(model)
    segmenter.set_image(source, args.plane)
    points = [*args.points, *args.negative]
    labels = [1] * len(args.points) + [0] * len(args.negative)
    prediction = segmenter.predict(
        points=points or None,
        labels=labels or None,
        box=args.box,
        multimask=len(points) <= 1 and args.box is None,
    )
    k = prediction.best if args.proposal is None else args.proposal
    mask = prediction.mask_at(k)
    scores = ", ".join(f"{s:.3f}" for s in prediction.scores)
    print(f"proposal {k} of {len(prediction.scores)} (scores {scores}): {mask.sum()} pixels")
    if args.propagate:
        mask = propagate(source, args.plane, mask, segmenter=segmenter)
        planes = np.flatnonzero(mask.any(axis=(1, 2)))
        print(f"propagated through planes {planes.min()}..{planes.max()}")
    elif source.is_stack:
        full = np.zeros((source.n_planes, *source.plane_shape), dtype=bool)
        full[args.plane] = mask
        mask = full
    print(f"wrote {_write_mask(args.out, mask)}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download the named checkpoints (or list the registry)."""
    from ..sam.download import checkpoint_path, ensure_checkpoint
    from ..sam.registry import CHECKPOINTS, get_checkpoint
    from ..sam.sam2_download import ensure_sam2_checkpoint, sam2_checkpoint_path
    from ..sam.sam2_registry import SAM2_CHECKPOINTS, is_sam2_name

    if args.list or not args.names:
        rows = [(spec, checkpoint_path(spec)) for spec in CHECKPOINTS.values()]
        rows += [(spec, sam2_checkpoint_path(spec)) for spec in SAM2_CHECKPOINTS.values()]
        for spec, path in rows:
            cached = "cached" if path.is_file() else "not cached"
            print(f"{spec.name:20s}{spec.filename:28s}{cached:12s}{spec.url}")
        print(f"cache folder: {checkpoint_path(next(iter(CHECKPOINTS))).parent}")
        return 0
    for name in args.names:
        if is_sam2_name(name):
            path = ensure_sam2_checkpoint(name)
            print(f"{name}: {path}")
            continue
        spec = get_checkpoint(name)
        path = ensure_checkpoint(spec)
        print(f"{spec.name}: {path}")
    return 0
