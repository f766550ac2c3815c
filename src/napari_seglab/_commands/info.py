"""``seglab info``: versions, compute device and cache folder."""

from __future__ import annotations

import argparse
import importlib.metadata as md


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show versions, compute device and cache folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..cache import cache_dir
    from ..device import autocast_dtype, resolve_device

    device = resolve_device("auto")
    print(f"napari-seglab {__version__}")
    for name in ("torch", "monai", "segment-anything", "pydensecrf2", "napari", "numpy"):
        try:
            print(f"{name:17s}{md.version(name)}")
        except md.PackageNotFoundError:
            print(f"{name:17s}not installed")
    dtype = autocast_dtype(device)
    print(f"device           {device} (autocast: {dtype or 'off, fp32'})")
    print(f"cache folder     {cache_dir(create=False)}")
    return 0
