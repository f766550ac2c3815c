"""What a batch run reports, and the per-worker model cache (no dask imports).

:class:`BatchProgress` events and :class:`ItemResult` records are shared by
the engine (:mod:`.engine`), the warm-up (:mod:`.warmup`) and the run
(:mod:`.run`); :func:`loaded_on` keeps a pipeline's loaded model on the
``distributed.Worker`` object, so it is loaded once per worker process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..jobs import ProgressEvent
from .pipeline import Pipeline

__all__ = ["POLL_S", "WORKER_CACHE", "BatchProgress", "ItemResult", "error_line", "loaded_on"]

#: Attribute of ``distributed.Worker`` holding the loaded pipelines of that worker process.
WORKER_CACHE = "_seglab_batch_cache"
#: Seconds between checks of the cancel flag while waiting for results.
POLL_S = 0.05


@dataclass
class ItemResult:
    """How one item ended, as reported by its worker (or the scheduler).

    Attributes
    ----------
    status : {"done", "failed"}
    seconds : float or None
        Time on the worker (None when the worker died).
    worker : str
        Address of the worker that ran it ("" when unknown).
    error : str
        One line, ``"Type: message"``; "" when done.
    outputs : list of str
        Output names relative to the output folder.
    row : dict
        The pipeline's report fields.
    input_hash, input_stat : str or None
        Content hash and signature of the input, measured on the worker before
        the item ran (see :mod:`.manifest`).
    """

    status: str
    seconds: float | None = None
    worker: str = ""
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)
    input_hash: str | None = None
    input_stat: str | None = None


@dataclass(frozen=True)
class BatchProgress(ProgressEvent):
    """Progress of a batch run: one event as the run starts and one per item.

    Attributes
    ----------
    stage : {"starting", "skipped", "loading", "running", "done"}
        ``"starting"``: the cluster is up (``dashboard`` set); ``"skipped"``:
        items already done (``done`` counts them); ``"loading"``: the model
        is loaded on one more worker (``status`` says how many);
        ``"running"``: ``item`` finished with ``status``; ``"done"``: the run
        ended (report written).
    done, total : int
        Items finished (skipped ones included) and items of the run.
    item : str
        Name of the item this event is about ("" for run events).
    status : str
        ``"done"``, ``"failed"`` or ``"skipped"`` for item events.
    dashboard : str
        The dask dashboard address ("" when there is none).
    result : ItemResult or None
        The finished item's result (``"running"`` events).
    """

    item: str = ""
    status: str = ""
    dashboard: str = ""
    result: ItemResult | None = None


def error_line(exc: BaseException) -> str:
    """``"Type: message"`` on one line (whitespace collapsed)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def loaded_on(worker: Any, pipeline: Pipeline) -> Any:
    """``pipeline.load()`` once per worker process (kept on the worker object)."""
    # setdefault is atomic: workers with several threads create one cache
    cache = vars(worker).setdefault(
        WORKER_CACHE, {"loaded": {}, "loads": 0, "lock": threading.Lock()}
    )
    key = f"{pipeline.name}:{pipeline.fingerprint()}"
    with cache["lock"]:
        if key not in cache["loaded"]:
            cache["loaded"].clear()  # one pipeline at a time: free the previous model
            cache["loaded"][key] = pipeline.load()
            cache["loads"] += 1
        return cache["loaded"][key]
