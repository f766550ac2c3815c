"""``seglab sam-refine``: refine the objects of a label image with SAM, keeping ids."""

from __future__ import annotations

import argparse
from pathlib import Path


def _ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids like 3,5,12, got {text!r}") from None
    if not ids or min(ids) < 1:
        raise argparse.ArgumentTypeError(f"expected positive object ids like 3,5, got {text!r}")
    return ids


def register(subparsers) -> None:
    """Add the ``sam-refine`` subcommand."""
    from ._shared import add_damaged, add_overwrite

    parser = subparsers.add_parser(
        "sam-refine",
        help="refine the objects of a label image with SAM (its masks as prompts)",
        description=(
            "Refine every object of LABELS (or --ids) with Segment Anything on IMAGE, each "
            "prompted with its own mask, its box and its most interior pixel. A refinement "
            "replaces the object only where SAM's score >= --min-score and its IoU with the "
            "original >= --min-overlap; rejected objects are left as they were, ids are "
            "kept, other objects' pixels are never taken, background claimed by two "
            "refined objects stays background. A stack (Z, Y, X) is refined plane by plane "
            "(or, with --propagate, from each object's largest plane through the others). "
            "LABELS is never modified: the result goes to -o."
        ),
    )
    parser.add_argument("image", type=Path, help="image file (.tif, .npy, .png, .nii.gz, ...)")
    parser.add_argument("labels", type=Path, help="integer label image of the same shape")
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="refined labels (.tif, .npy, .nii.gz)"
    )
    parser.add_argument("--ids", type=_ids, metavar="3,5", help="refine only these object ids")
    parser.add_argument(
        "--min-score", type=float, default=0.7, help="least SAM score to accept (default 0.7)"
    )
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="least IoU with the original object to accept (default 0.5)",
    )
    parser.add_argument(
        "--no-box", action="store_true", help="prompt without the object's bounding box"
    )
    parser.add_argument(
        "--box-margin",
        type=float,
        default=0.1,
        help="growth of the box on each side, as a fraction of its size (default 0.1)",
    )
    parser.add_argument(
        "--propagate",
        action="store_true",
        help="stacks: refine each object's largest plane and carry it through its other "
        "planes (each plane still accepted on its own) instead of plane by plane",
    )
    parser.add_argument("--report", type=Path, help="per-object CSV (id, plane, accepted, ...)")
    parser.add_argument(
        "--model", default="vit_b", help="vit_b (default), vit_l, vit_h, medsam, or tiny"
    )
    parser.add_argument("--checkpoint", type=Path, help="local .pth instead of the registry file")
    parser.add_argument("--decoder", type=Path, help="fine-tuned decoder weights (.pth)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--offline", action="store_true", help="never download")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def write_report(path: Path, records) -> Path:
    """The per-object records as CSV (one row per object and plane), written atomically."""
    import csv

    from ..checkpoints import atomic_path
    from ..sam.refine_all import ObjectRecord

    columns = [*ObjectRecord.__dataclass_fields__, "pixels_changed"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            row = record.as_row()
            for key in ("score", "overlap"):
                row[key] = f"{row[key]:.4f}"
            writer.writerow(row)
    return Path(path)


def run(args: argparse.Namespace) -> int:
    """Read, refine, write the labels (and the report)."""
    import numpy as np

    from ..io import WRITE_SUFFIXES, read_array, write_array
    from ..sam import SamInput, load_model
    from ..sam.refine_all import refine_all
    from ._shared import check_outputs, progress_printer

    inputs = [
        ("image", args.image),
        ("labels", args.labels),
        ("checkpoint", args.checkpoint),
        ("decoder", args.decoder),
    ]
    outputs = [("-o", args.out, WRITE_SUFFIXES), ("--report", args.report, (".csv",))]
    check_outputs(outputs, inputs, overwrite=args.overwrite)
    image = np.asarray(read_array(args.image, what="image file", damaged=args.damaged).data)
    label_file = read_array(
        args.labels, what="label file", layer_type="labels", damaged=args.damaged
    )
    labels = np.asarray(label_file.data)
    source = SamInput(image)
    expected = ((source.n_planes,) if source.is_stack else ()) + tuple(source.plane_shape)
    if labels.shape != expected:
        raise ValueError(
            f"{args.labels} has shape {labels.shape}, expected {expected} to match the image "
            f"{args.image} of shape {image.shape}"
        )
    model = load_model(
        args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        decoder_checkpoint=args.decoder,
        download=not args.offline,
    )
    result = refine_all(
        model,
        source,
        labels,
        ids=args.ids,
        min_score=args.min_score,
        min_overlap=args.min_overlap,
        use_box=not args.no_box,
        box_margin=args.box_margin,
        through="propagation" if args.propagate else "planes",
        callback=progress_printer("sam-refine", quiet=args.quiet),
    )
    accepted = len(result.accepted)
    changed = sum(r.pixels_changed for r in result.records)
    print(
        f"refined {len(result.records)} object(s): {accepted} accepted, "
        f"{len(result.records) - accepted} rejected, {changed} pixel(s) changed"
    )
    print(f"wrote {write_array(args.out, result.labels, spacing=label_file.spacing)}")
    if args.report is not None:
        print(f"wrote {write_report(args.report, result.records)}")
    return 0
