"""``seglab sample``: write the synthetic sample images and their ground truth to files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from ._shared import add_overwrite

    parser = subparsers.add_parser(
        "sample", help="write a synthetic image and its ground-truth labels (TIFF)"
    )
    parser.add_argument("kind", choices=["2d", "3d"], help="2D nuclei or 3D anisotropic stack")
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("."), help="output folder (made if missing)"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tifffile

    from ..checkpoints import atomic_path
    from ..data import nuclei_2d, nuclei_3d
    from ._shared import check_outputs

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"-o: expected a folder, got the file {str(args.out)!r}")
    paths = {s: args.out / f"nuclei_{args.kind}_{s}.tif" for s in ("image", "labels")}
    if args.out.is_dir():
        outputs = [(f"{s} file", p, (".tif",)) for s, p in paths.items()]
        check_outputs(outputs, overwrite=args.overwrite)
    sample = nuclei_2d(seed=args.seed) if args.kind == "2d" else nuclei_3d(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    axes = "YX" if sample.image.ndim == 2 else "ZYX"
    meta = {"axes": axes, "spacing": list(sample.spacing)}
    for suffix, array in (("image", sample.image), ("labels", sample.labels)):
        path = paths[suffix]
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, array, metadata=meta)
        print(f"wrote {path}  shape {array.shape} {array.dtype} spacing {sample.spacing}")
    return 0
