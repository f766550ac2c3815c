"""What the subcommands share: the file formats for help texts, job progress on stderr.

Nothing heavy is imported here: ``seglab --help`` builds every parser.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
