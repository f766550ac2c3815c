"""The ``seglab`` command: every capability from a shell or a batch job.

Subcommands live in :mod:`napari_seglab._commands` (one module each) and call
the same core functions as the widgets. Errors the core raises for bad input
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``) are printed as one
line and give exit code 2, not a traceback; other operating-system errors while
reading or writing (a full disk, a permission denied) one line and exit code 1;
a cancelled job
(:class:`~napari_seglab.jobs.JobCancelled`, or Ctrl+C) gives exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from ._commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="seglab", description="napari-seglab: segmentation from the command line."
    )
    parser.add_argument("--version", action="version", version=f"napari-seglab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"napari_seglab._commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"napari_seglab._commands.{name}":
                continue  # capability not installed in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seglab``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    from .jobs import JobCancelled

    try:
        return int(args.func(args) or 0)
    except JobCancelled:
        print(f"seglab {args.command}: cancelled", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"seglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"seglab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"seglab {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
