"""Load a pipeline's model on every worker before the first item is handed out.

Starting a worker process costs its imports (torch, MONAI) and loading the
model; done inside the first item, that cost would be billed to the item
(its ``seconds`` in the report) and items would wait behind it unevenly.
:func:`warm_workers_events` runs one loading task pinned to each worker
present and reports each as it ends, so a progress bar can say "loading the
model on 2 workers" and item times measure the items. Workers that join
later (an adaptive or SLURM cluster) load on their first item, as before.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from ..jobs import CancelCheck, Stopwatch
from .events import POLL_S, BatchProgress, error_line, loaded_on

__all__ = ["warm_workers_events"]


def _warm(pipeline: Any) -> str:
    """Task on one worker: load the pipeline's model there; '' or the error's line."""
    from distributed import get_worker

    try:
        loaded_on(get_worker(), pipeline)
    except Exception as exc:  # the items will fail with it, recorded one by one
        return error_line(exc)
    return ""


def warm_workers_events(
    client: Any,
    shipped: Any,
    *,
    cancel: Any = None,
    clock: Stopwatch | None = None,
    done: int = 0,
    total: int = 0,
) -> Generator[BatchProgress, None, dict[str, str]]:
    """Load ``shipped`` (a scattered pipeline) once on every current worker.

    Parameters
    ----------
    client : distributed.Client
    shipped : distributed.Future
        The pipeline, scattered to the workers.
    cancel : threading.Event or callable, optional
        Checked while waiting; when set the loading tasks are cancelled and
        :class:`~napari_seglab.jobs.JobCancelled` is raised.
    clock : Stopwatch, optional
    done, total : int
        Items of the run finished and in all, passed on in the events (the bar
        of a run stays a bar of items).

    Yields
    ------
    BatchProgress
        ``stage="loading"``, with ``status`` ``"model loaded on k of n workers"``.

    Returns
    -------
    dict of str to str
        Worker address to the loading error ('' when it loaded). A worker that
        died while loading is left out: its items go elsewhere.
    """
    check = CancelCheck(cancel)
    clock = clock or Stopwatch()
    workers = list(client.scheduler_info().get("workers", {}))
    futures = {
        client.submit(
            _warm, shipped, workers=[address], allow_other_workers=False, pure=False
        ): address
        for address in workers
    }
    errors: dict[str, str] = {}
    try:
        while len(errors) < len(futures):
            check.raise_if_set("The batch run")
            finished = [f for f in futures if f.done() and futures[f] not in errors]
            if not finished:
                time.sleep(POLL_S)
                continue
            for future in finished:
                try:
                    errors[futures[future]] = (
                        future.result() if future.status == "finished" else ""
                    )
                except Exception as exc:  # a worker that died while loading
                    errors[futures[future]] = error_line(exc)
                status = f"model loaded on {len(errors)} of {len(futures)} workers"
                yield BatchProgress("loading", done, total, clock.elapsed, status=status)
    finally:
        client.cancel([f for f in futures if not f.done()])
    return errors
