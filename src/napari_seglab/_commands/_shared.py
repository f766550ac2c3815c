"""What the subcommands share: the file formats for help texts, job progress on stderr.

Nothing heavy is imported here: ``seglab --help`` builds every parser.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Inputs :func:`napari_seglab.io.read_array` reads (``tests`` check it against the reader).
INPUT_FORMATS = (
    "NIfTI (.nii, .nii.gz), DICOM (a folder, or a .dcm/.dicom/.ima file of a series), "
    "TIFF (.tif, .tiff), NumPy (.npy), zarr/OME-Zarr (.zarr), pictures (.png, .jpg, .jpeg, .bmp)"
)
#: Outputs :func:`napari_seglab.io.write_array` writes.
OUTPUT_FORMATS = ".tif, .tiff, .npy, .nii, .nii.gz"


def progress_printer(
    command: str, *, quiet: bool = False, step: int = 10
) -> Callable[[Any], None]:
    """A ``run_to_end`` callback printing ``command: NN% message`` every ``step`` percent.

    Events are :class:`~napari_seglab.jobs.ProgressEvent` objects; their
    ``message`` (when they have one) or ``stage`` is printed. ``quiet`` prints
    nothing.
    """
    last = -step

    def show(event: Any) -> None:
        nonlocal last
        if quiet:
            return
        fraction = event.fraction
        percent = 0 if fraction is None else int(100 * fraction)
        if percent >= last + step:
            what = getattr(event, "message", "") or event.stage
            print(f"{command}: {percent:3d}% {what}", file=sys.stderr, flush=True)
            last = percent

    return show


#: Suffixes of model and decoder files (``torch.save``).
MODEL_SUFFIXES = (".pt", ".pth")

OVERWRITE_HELP = "replace output files that exist (an output that is an input is always refused)"


def add_overwrite(parser: Any) -> None:
    """Add ``--overwrite`` to a writing subcommand's parser."""
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


DAMAGED_HELP = (
    "DICOM inputs: files that look like part of the series but cannot be read (empty, cut "
    "short): 'error' refuses naming each one (default); 'warn' reads the other slices and "
    "names the skipped files on stderr"
)


def add_damaged(parser: Any) -> None:
    """Add ``--damaged {error,warn}`` to a subcommand that reads images."""
    parser.add_argument("--damaged", choices=("error", "warn"), default="error", help=DAMAGED_HELP)


def _same_file(a: Path, b: Path) -> bool:
    if a.expanduser().resolve() == b.expanduser().resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_outputs(
    outputs: Sequence[tuple[str, Path | None, Sequence[str] | None]],
    inputs: Sequence[tuple[str, Path | None]] = (),
    *,
    overwrite: bool = False,
) -> None:
    """Refuse outputs that cannot or must not be written, before any work starts.

    Parameters
    ----------
    outputs : sequence of (option, path, suffixes)
        Each output file: the option naming it (for messages, e.g. ``"-o"``), its
        path (``None``: not asked for, skipped) and the suffixes it may end in
        (case-insensitive; ``None``: any).
    inputs : sequence of (role, path)
        The files the command reads (``None`` entries skipped).
    overwrite : bool
        ``--overwrite``: an existing output file may be replaced.

    Raises
    ------
    ValueError
        An output is one of the inputs (same path, or the same file through a
        link; refused even with ``overwrite``), has an unsupported suffix, is a
        folder, is named twice, is in a folder this user cannot write to, or exists and
        ``overwrite`` is False.
    FileNotFoundError
        The folder of an output does not exist.
    """
    seen: list[tuple[str, Path]] = []
    for option, path, suffixes in outputs:
        if path is None:
            continue
        path = Path(path)
        for role, source in inputs:
            if source is not None and _same_file(path, Path(source)):
                raise ValueError(
                    f"refusing to write {option} {str(path)!r}: it is the {role} "
                    f"{str(source)!r}; choose another output name"
                )
        if suffixes and not path.name.lower().endswith(tuple(suffixes)):
            found = repr(path.suffix) if path.suffix else "no suffix"
            raise ValueError(
                f"unsupported output file {str(path)!r} ({option}): expected one of "
                f"{', '.join(suffixes)}, got {found}"
            )
        if path.is_dir():
            raise ValueError(f"{option}: expected a file name, got the folder {str(path)!r}")
        for other, earlier in seen:
            if _same_file(path, earlier):
                raise ValueError(f"{option} and {other} name the same file {str(path)!r}")
        seen.append((option, path))
        folder = path.expanduser().parent
        if not folder.is_dir():
            raise FileNotFoundError(f"output folder not found for {option}: {str(folder)!r}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write {option} {str(path)!r}: the folder is not writable")
        if path.exists() and not overwrite:
            raise ValueError(f"{option} {str(path)!r} exists; add --overwrite to replace it")
