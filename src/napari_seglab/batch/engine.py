"""The batch engine: a dask.distributed client, items as tasks, results as they finish.

:func:`batch_client` gives a ``distributed.Client``: by default on a
``LocalCluster`` started for the run (worker processes with one thread each,
one per CPU core but no more than there are items, or one per CUDA GPU) and
closed with it; with ``scheduler="tcp://host:8786"`` on a running cluster
(a SLURM allocation through dask-jobqueue, a cloud cluster), which is never
closed. :func:`run_items` ships the pipeline to every worker once
(``scatter(broadcast=True)``), submits one task per item and yields a
:class:`BatchProgress` as each finishes.

On a worker, :func:`run_on_worker` loads the pipeline's model once per worker
process: the loaded object is kept on the ``distributed.Worker`` object
(attribute :data:`WORKER_CACHE`, keyed by the pipeline's name and
fingerprint), never in a module global, and reused by every later item.

Failures: an exception in an item is caught on the worker and reported as a
``failed`` result (one line: type and message); the run goes on. A worker
process that dies mid-item (killed, out of memory) loses its task to the
scheduler, which runs it again on another worker, up to
``distributed.scheduler.allowed-failures`` deaths per item (at least
:data:`MIN_ALLOWED_FAILURES` on clusters this module starts; a remote
scheduler keeps its own setting); after that the item is recorded as failed
(``KilledWorker``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..jobs import CancelCheck, JobCancelled, Stopwatch
from .events import POLL_S, WORKER_CACHE, BatchProgress, ItemResult, error_line, loaded_on
from .pipeline import BatchItem, ItemOutcome, Pipeline
from .warmup import warm_workers_events

__all__ = [
    "MIN_ALLOWED_FAILURES",
    "WORKER_CACHE",
    "BatchProgress",
    "ItemResult",
    "batch_client",
    "dashboard_link",
    "default_workers",
    "error_line",
    "run_items",
    "run_on_worker",
    "worker_device",
]

#: Worker deaths an item survives on a cluster started by :func:`batch_client`.
MIN_ALLOWED_FAILURES = 3

#: glibc's trim threshold in the workers of a local cluster (bytes freed and kept).
MALLOC_TRIM_BYTES = 256 * 2**20
#: glibc's mmap threshold there (the ceiling its adaptive threshold reaches by itself).
MALLOC_MMAP_BYTES = 32 * 2**20


# --------------------------------------------------------------------- cluster
def _cpu_count() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def gpu_count() -> int:
    """CUDA GPUs visible to this process (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except RuntimeError:
        return 0


def default_workers(n_items: int | None = None, workers: int | None = None) -> int:
    """Worker processes for a local cluster.

    ``workers`` when given; else one per CUDA GPU when there are GPUs; else
    one per CPU core, but no more than ``n_items``.

    Raises
    ------
    ValueError
        ``workers`` is below 1.
    """
    if workers is not None:
        if int(workers) < 1:
            raise ValueError(f"workers: expected at least 1, got {workers}")
        return int(workers)
    gpus = gpu_count()
    if gpus:
        return gpus
    count = _cpu_count()
    if n_items is not None:
        count = min(count, max(int(n_items), 1))
    return count


def dashboard_link(client: Any) -> str:
    """The client's dashboard address, or "" when the cluster serves none."""
    try:
        link = client.dashboard_link
    except Exception:  # no dashboard (bokeh missing) or no scheduler info yet
        return ""
    return str(link or "")


@contextlib.contextmanager
def batch_client(
    *,
    workers: int | None = None,
    n_items: int | None = None,
    scheduler: str | None = None,
    dashboard_address: str | None = ":0",
) -> Iterator[Any]:
    """A ``distributed.Client`` for a batch run.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster (see :func:`default_workers`).
        Ignored with ``scheduler``.
    n_items : int, optional
        Items of the run (a local cluster has no more workers than items).
    scheduler : str, optional
        Address of a running scheduler (``"tcp://10.0.0.5:8786"``): connect to
        it instead of starting a cluster; the cluster is left running.
    dashboard_address : str or None
        Where a local cluster serves its dashboard (``":0"``: any free port;
        None: no dashboard).

    Yields
    ------
    distributed.Client
        Closed (with the local cluster) when the ``with`` block ends.

    Raises
    ------
    RuntimeError
        The scheduler cannot be reached (its address named).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(
                f"could not connect to the dask scheduler {scheduler!r}: {error_line(exc)}"
            ) from None
        try:
            yield client
        finally:
            client.close()  # the cluster belongs to whoever started it
        return
    n = default_workers(n_items, workers)
    failures = max(
        int(dask.config.get("distributed.scheduler.allowed-failures")), MIN_ALLOWED_FAILURES
    )
    settings = {
        "distributed.scheduler.allowed-failures": failures,
        # dask sets glibc's trim threshold to 64 KiB, and setting it at all turns
        # off glibc's adaptive mmap threshold: every array over 128 KiB is then
        # mapped and unmapped anew, and items ran 1.6x slower than in a plain
        # process (bench_batch.py). Keep freed memory and restore the mmap
        # threshold's adaptive ceiling instead.
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": MALLOC_TRIM_BYTES,
        "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": MALLOC_MMAP_BYTES,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


# ---------------------------------------------------------------------- worker
def worker_device(device: str = "auto") -> str:
    """The torch device for this worker: one GPU per worker where there are several.

    With ``device`` ``"auto"`` or ``"cuda"`` and more than one CUDA GPU, a
    worker of a local cluster (named 0, 1, ...) takes ``cuda:<name mod GPUs>``;
    otherwise ``device`` unchanged.
    """
    if device not in ("auto", "cuda"):
        return device
    count = gpu_count()
    if count < 2:
        return device
    try:
        from distributed import get_worker

        index = int(get_worker().name)
    except (ValueError, TypeError):
        return device
    return f"cuda:{index % count}"


def run_on_worker(
    pipeline: Pipeline, item: BatchItem, output_dir: str, hash_input: bool = True
) -> ItemResult:
    """The task of one item (runs on a worker): load once, run, report; never raises.

    The input's signature and content hash are measured first (when
    ``hash_input``), so the manifest records the content that was processed.
    """
    from distributed import get_worker

    from .manifest import item_hash, item_signature

    clock = Stopwatch()
    try:
        worker = get_worker()
        address = str(worker.address)
    except ValueError:  # called outside a worker (tests, a plain loop)
        worker, address = None, ""
    result = ItemResult(status="failed", worker=address)
    try:
        if hash_input:
            result.input_stat = item_signature(item)
            result.input_hash = item_hash(item)
        loaded = pipeline.load() if worker is None else loaded_on(worker, pipeline)
        outcome = pipeline.run_item(item, Path(output_dir), loaded)
        if not isinstance(outcome, ItemOutcome):
            raise TypeError(f"run_item returned {type(outcome).__name__}, not ItemOutcome")
        result.status = "done"
        result.outputs = [str(name) for name in outcome.outputs]
        result.row = dict(outcome.row)
    except Exception as exc:  # recorded for this item; the run goes on
        result.error = error_line(exc)
    result.seconds = clock.elapsed
    return result


# ------------------------------------------------------------------------- run
def run_items(
    client: Any,
    pipeline: Pipeline,
    items: Sequence[BatchItem],
    output_dir: str | os.PathLike,
    *,
    hashes: dict[str, str] | None = None,
    retries: int = 0,
    cancel: Any = None,
    done_before: int = 0,
    total: int | None = None,
    clock: Stopwatch | None = None,
) -> Generator[BatchProgress, None, None]:
    """Run ``items`` on ``client``'s cluster; yield a ``"running"`` event as each ends.

    Parameters
    ----------
    client : distributed.Client
    pipeline : Pipeline
        Sent to every worker once (broadcast).
    items : sequence of BatchItem
    output_dir : path-like
        Where workers write (a folder they all see).
    hashes : dict of str to str, optional
        Known input hashes by item name; those inputs are not hashed again.
    retries : int
        Extra attempts of a task that raised on the worker (not the item's own
        errors, which are results); worker deaths are counted separately
        (``allowed-failures``).
    cancel : threading.Event or callable, optional
        Checked between results; when set, the items not finished are
        cancelled and :class:`~napari_seglab.jobs.JobCancelled` is raised
        (every result yielded before stays valid).
    done_before, total : int
        Offsets for the events' ``done`` and ``total`` (items skipped earlier).
    clock : Stopwatch, optional
        Gives the events' ``elapsed`` (default: started here).

    Yields
    ------
    BatchProgress
        ``stage="loading"`` as each worker has loaded the model (see
        :mod:`.warmup`), then ``stage="running"`` with ``item``, ``status``
        and ``result`` set as each item ends.
    """
    from distributed import as_completed

    check = CancelCheck(cancel)
    clock = clock or Stopwatch()
    hashes = hashes or {}
    total = len(items) + done_before if total is None else total
    if not items:
        return
    _wait_for_a_worker(client, check)
    [shipped] = client.scatter([pipeline], broadcast=True, hash=False)
    yield from warm_workers_events(
        client, shipped, cancel=check, clock=clock, done=done_before, total=total
    )
    futures = {}
    for item in items:
        future = client.submit(
            run_on_worker,
            shipped,
            item,
            str(output_dir),
            item.name not in hashes,
            pure=False,
            retries=retries,
            key=f"seglab-{pipeline.name}-{item.name}-{os.urandom(4).hex()}",
        )
        futures[future.key] = (future, item)
    pending = as_completed([future for future, _ in futures.values()])
    done = done_before
    try:
        while not pending.is_empty():
            if check.is_set():
                client.cancel([future for future, _ in futures.values() if not future.done()])
                raise JobCancelled("The batch run was cancelled.")
            if not pending.has_ready():
                time.sleep(POLL_S)
                continue
            for future in pending.next_batch(block=False):
                _, item = futures[future.key]
                result = _result_of(future)
                if result.input_hash is None and item.name in hashes:
                    result.input_hash = hashes[item.name]
                done += 1
                yield BatchProgress(
                    "running",
                    done,
                    total,
                    clock.elapsed,
                    item=item.name,
                    status=result.status,
                    result=result,
                )
                future.release()
    finally:
        leftover = [future for future, _ in futures.values() if not future.done()]
        if leftover:
            client.cancel(leftover)
        shipped.release()


def _wait_for_a_worker(client: Any, check: CancelCheck) -> None:
    """Wait until the cluster has a worker (a SLURM job may still be queued); cancellable."""
    while True:
        check.raise_if_set("The batch run")
        try:
            client.wait_for_workers(1, timeout=1.0)
            return
        except TimeoutError:
            continue


def _result_of(future: Any) -> ItemResult:
    """The :class:`ItemResult` of a finished future (a failed one for errors)."""
    if future.status == "finished":
        try:
            return future.result()
        except Exception as exc:  # result lost with its worker between finish and fetch
            return ItemResult(status="failed", error=error_line(exc))
    if future.status == "cancelled":
        return ItemResult(status="failed", error="CancelledError: the task was cancelled")
    try:
        exc = future.exception()
    except Exception as other:  # the error itself could not be fetched
        exc = other
    return ItemResult(status="failed", error=error_line(exc))
