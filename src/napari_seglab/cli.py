"""The ``seglab`` command: every capability from a shell or a batch job.

Subcommands live in :mod:`napari_seglab._commands` (one module each) and call
the same core functions as the widgets. Errors the core raises for bad input
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``) are printed as one
line and give exit code 2, not a traceback; other operating-system errors while
reading or writing (a full disk, a permission denied) and running out of memory
give one line and exit code 1; a cancelled job
(:class:`~napari_seglab.jobs.JobCancelled`, or Ctrl+C) gives exit code 130.
Python warnings (an oblique volume, DICOM files skipped with ``--damaged warn``)
are printed as one ``seglab COMMAND: warning: ...`` line each on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

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
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.command)
            return int(args.func(args) or 0)
    except JobCancelled:
        print(f"seglab {args.command}: cancelled", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"seglab {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"seglab {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        detail = f": {_error_text(exc)}" if str(exc) else ""
        print(f"seglab {args.command}: error: out of memory{detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"seglab {args.command}: cancelled", file=sys.stderr)
        return 130


def _warning_printer(command: str):
    """A ``warnings.showwarning`` printing ``seglab COMMAND: warning: MESSAGE`` (one line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"seglab {command}: warning: {text}", file=sys.stderr, flush=True)

    return show


def _error_text(exc: BaseException) -> str:
    """The one-line message of ``exc``; damaged DICOM files: how to read the rest here."""
    retell = getattr(exc, "message", None)
    if callable(retell) and hasattr(exc, "files"):  # io.DamagedDicomError
        return retell("add --damaged warn to read the readable slices")
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
