"""Progress of a core job (:mod:`napari_seglab.jobs`) on stderr, for the subcommands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


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
