"""``seglab sam-everything``: automatic instance segmentation with SAM (segment everything)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: (option, type, help) of the settings, by their names in SamAutomaticMaskGenerator.
_SETTINGS = (
    ("points_per_side", int, "grid points along each side (default 32)"),
    ("points_per_batch", int, "prompts decoded together (memory only; default 64)"),
    ("pred_iou_thresh", float, "keep proposals with predicted IoU above this (default 0.88)"),
    ("stability_score_thresh", float, "keep proposals this stable or more (default 0.95)"),
    ("stability_score_offset", float, "logit offset of the stability score (default 1.0)"),
    ("box_nms_thresh", float, "box IoU of duplicates within a crop (default 0.7)"),
    ("crop_n_layers", int, "extra layers of overlapping crops (default 0)"),
    ("crop_nms_thresh", float, "box IoU of duplicates between crops (default 0.7)"),
    ("crop_overlap_ratio", float, "overlap of the first crop layer (default 512/1500)"),
    ("crop_n_points_downscale_factor", int, "fewer points per crop layer (default 1)"),
    ("min_mask_region_area", int, "remove holes and islands under this many pixels (default 0)"),
)


def register(subparsers) -> None:
    """Add the ``sam-everything`` subcommand."""
    from ._shared import OUTPUT_FORMATS, add_damaged, add_overwrite

    parser = subparsers.add_parser(
        "sam-everything",
        help="segment every object of an image with SAM (automatic mask generation)",
        description=(
            "Prompt SAM with a grid of points and keep the good, distinct masks, with the "
            "settings of segment_anything's SamAutomaticMaskGenerator. Writes an instance "
            "label image (0 background, ids by area, largest first); stacks (Z, Y, X) are "
            "segmented plane by plane with ids linked across planes."
        ),
    )
    parser.add_argument("image", type=Path, help="image file (.tif, .npy, .png, .nii.gz, ...)")
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help=f"label image ({OUTPUT_FORMATS})"
    )
    parser.add_argument(
        "--objects",
        type=Path,
        help="also write the object records (.csv or .json; boxes and points are (x, y))",
    )
    parser.add_argument(
        "--model", default="vit_b", help="vit_b (default), vit_l, vit_h, medsam, or tiny"
    )
    parser.add_argument("--checkpoint", type=Path, help="local .pth instead of the registry file")
    parser.add_argument("--decoder", type=Path, help="fine-tuned decoder weights (.pth)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--offline", action="store_true", help="never download")
    for name, kind, text in _SETTINGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    parser.add_argument(
        "--link-iou",
        type=float,
        default=0.5,
        help="stacks: IoU at which an object keeps the id of one in the plane before (0.5)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def write_objects(path: Path, records: list[dict]) -> Path:
    """The object records (no masks) as CSV or JSON, written atomically."""
    import csv
    import json

    from ..checkpoints import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".json":
            json.dump(records, handle, indent=1)
            return Path(path)
        columns = ["plane", "id"] if records and "plane" in records[0] else ["id"]
        columns += ["area", "visible_area", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
        columns += ["predicted_iou", "stability_score", "point_x", "point_y"]
        columns += ["crop_x", "crop_y", "crop_w", "crop_h"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            row = {k: record[k] for k in columns if k in record}
            row.update(zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), record["bbox"]))
            row.update(zip(("crop_x", "crop_y", "crop_w", "crop_h"), record["crop_box"]))
            row.update(zip(("point_x", "point_y"), record["point_coords"][0]))
            for key in ("predicted_iou", "stability_score"):
                row[key] = f"{record[key]:.6f}"
            writer.writerow(row)
    return Path(path)


def run(args: argparse.Namespace) -> int:
    """Read the image, segment everything, write the labels (and the records)."""
    import numpy as np

    from ..io import WRITE_SUFFIXES, read_array, write_array
    from ..jobs import run_to_end
    from ..sam import load_model
    from ..sam.everything import segment_everything_job
    from ._shared import check_outputs, progress_printer

    inputs = [("image", args.image), ("checkpoint", args.checkpoint), ("decoder", args.decoder)]
    outputs = [("-o", args.out, WRITE_SUFFIXES), ("--objects", args.objects, (".csv", ".json"))]
    check_outputs(outputs, inputs, overwrite=args.overwrite)
    settings = {name: getattr(args, name) for name, _, _ in _SETTINGS}
    settings = {k: v for k, v in settings.items() if v is not None}
    image = np.asarray(read_array(args.image, what="image file", damaged=args.damaged).data)
    model = load_model(
        args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        decoder_checkpoint=args.decoder,
        download=not args.offline,
    )
    job = segment_everything_job(model, image, link_iou=args.link_iou, **settings)
    result = run_to_end(job, progress_printer("sam-everything", quiet=args.quiet))
    count = len({int(r["id"]) for r in result.objects})
    print(f"{count} objects")
    written = write_array(args.out, result.labels, what="label file", compression="zlib")
    print(f"wrote {written}")
    if args.objects is not None:
        print(f"wrote {write_objects(args.objects, result.records())}")
    return 0
