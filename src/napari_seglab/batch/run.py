"""A batch run as one job: checks, manifest, engine, report.

:func:`run_batch_events` is the job (:mod:`napari_seglab.jobs`) that the
``seglab batch`` command, the batch panel and scripts run; :func:`run_batch`
drives it to the end::

    from napari_seglab.batch import collect_items, run_batch
    from napari_seglab.batch.predict import PredictPipeline

    result = run_batch(PredictPipeline("model.pt"), collect_items(["scans/"]), "out/")
    result.counts        # {"done": 11, "failed": 1, "skipped": 0}

Before any work it checks that the output folder can be created and
written, that no output is an input and that no two items share an output.
Items the manifest records as done (same input content, same pipeline
fingerprint, outputs present) are skipped, unless ``overwrite``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import CancelCheck, JobCancelled, Stopwatch, run_to_end
from .engine import BatchProgress, ItemResult, batch_client, dashboard_link, run_items
from .manifest import MANIFEST_NAME, Manifest
from .pipeline import BatchItem, Pipeline
from .report import REPORT_CSV, REPORT_FIGURE, REPORT_JSON, write_report

__all__ = ["BatchResult", "check_run", "run_batch", "run_batch_events"]

#: Names in the output folder that belong to the run itself.
RESERVED_NAMES = (MANIFEST_NAME, REPORT_CSV, REPORT_JSON, REPORT_FIGURE)
#: Seconds between manifest saves while results arrive (always saved at the end).
SAVE_EVERY_S = 1.0


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    pipeline : str
    output_dir : Path
    rows : list of dict
        One report row per item, in input order (``name``, ``status`` in
        ``{"done", "failed", "skipped"}``, ``seconds``, the pipeline's fields,
        ``error``).
    counts : dict of str to int
        Items per status (``done``, ``failed``, ``skipped``: every key present;
        ``pending`` for items a cancelled run did not finish).
    manifest_path : Path
    report_paths : list of Path
        ``report.csv``, ``report.json`` and ``report.png``.
    dashboard : str
        The dask dashboard address of the run ("" when none).
    """

    pipeline: str
    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    manifest_path: Path | None = None
    report_paths: list[Path] = field(default_factory=list)
    dashboard: str = ""

    @property
    def ok(self) -> bool:
        """True when no item failed."""
        return self.counts.get("failed", 0) == 0

    def summary_line(self) -> str:
        """E.g. ``"batch predict: 11 done, 1 failed, 3 skipped (done before) of 15 items"``."""
        c = self.counts
        pending = f", {c['pending']} not run" if c.get("pending") else ""
        return (
            f"batch {self.pipeline}: {c.get('done', 0)} done, {c.get('failed', 0)} failed, "
            f"{c.get('skipped', 0)} skipped (done before){pending} of {len(self.rows)} items"
        )


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_run(
    pipeline: Pipeline, items: Sequence[BatchItem], output_dir: str | os.PathLike
) -> dict[str, list[str]]:
    """Check a run before any work; returns each item's output names.

    Creates ``output_dir`` (with its parents) when missing.

    Raises
    ------
    ValueError
        No items, two items with one name, an output folder that cannot be
        created or written, an output that is an input (or inside an input
        store), two items with the same output, or an output named like the
        run's own files (``manifest.json``, ``report.*``).
    """
    if not items:
        raise ValueError("expected at least one input item, got none")
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"item names must be unique, got {', '.join(twice[:5])} twice")
    output_dir = Path(output_dir).expanduser()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {str(output_dir)!r}: {exc}") from None
    if not output_dir.is_dir() or not os.access(output_dir, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into the output folder {str(output_dir)!r}")
    inputs = [Path(p) for item in items for p in (item.path, *item.extra.values())]
    real_inputs = {os.path.realpath(p): p for p in inputs}
    outputs: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for item in items:
        names = [str(n) for n in pipeline.output_names(item)]
        for name in names:
            if name in RESERVED_NAMES:
                raise ValueError(f"item {item.name!r}: output name {name!r} is the run's own file")
            target = output_dir / name
            real = os.path.realpath(target)
            source = real_inputs.get(real)
            if source is None:
                source = next((p for p in inputs if _same(target, p)), None)
            if source is None:
                source = next(
                    (p for r, p in real_inputs.items() if real.startswith(r + os.sep)), None
                )
            if source is not None:
                raise ValueError(
                    f"refusing to write {str(target)!r} for item {item.name!r}: it is (inside) "
                    f"the input {str(source)!r}; choose another output folder"
                )
            if real in owner:
                raise ValueError(
                    f"items {owner[real]!r} and {item.name!r} would both write {str(target)!r}"
                )
            owner[real] = item.name
        outputs[item.name] = names
    return outputs


def run_batch_events(
    pipeline: Pipeline,
    items: Sequence[BatchItem],
    output_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    cancel: Any = None,
    retries: int = 0,
) -> Generator[BatchProgress, None, BatchResult]:
    """Run ``pipeline`` over ``items`` into ``output_dir``, as a job.

    Parameters
    ----------
    pipeline : Pipeline
        What to do per item (``PredictPipeline``, ``EvaluatePipeline``, ...).
    items : sequence of BatchItem
        From :func:`~.inputs.collect_items` (and :func:`~.inputs.pair_items`).
    output_dir : path-like
        Created when missing; gets the outputs, ``manifest.json`` and the report.
    workers : int, optional
        Worker processes of the local cluster (see :func:`~.engine.default_workers`).
    scheduler : str, optional
        Address of a running dask scheduler to use instead of a local cluster.
    overwrite : bool
        Redo every item, ignoring the manifest, and replace existing outputs
        the manifest does not know (otherwise those are refused).
    cancel : threading.Event or callable, optional
        Checked while waiting for results; when set, unfinished items are
        cancelled, finished ones are recorded and :class:`JobCancelled` is
        raised with the partial :class:`BatchResult` as ``partial``.
    retries : int
        Extra attempts of a task that failed outside the pipeline (see
        :func:`~.engine.run_items`).

    Yields
    ------
    BatchProgress
        ``"skipped"`` (when items were done before), ``"starting"`` (with the
        dashboard address), ``"loading"`` (the model on each worker, see
        :mod:`.warmup`), ``"running"`` per finished item, ``"done"``.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Before any work, see :func:`check_run`; or existing outputs that the
        manifest does not know, without ``overwrite``.
    JobCancelled
        When ``cancel`` was set.
    """
    check = CancelCheck(cancel)
    clock = Stopwatch()
    output_dir = Path(output_dir).expanduser()
    items = list(items)
    manifest = Manifest.load(output_dir)
    _refuse_earlier_outputs(manifest, items)
    outputs = check_run(pipeline, items, output_dir)
    todo, skipped = [], []
    for item in items:
        if not overwrite and manifest.is_done(item, pipeline, outputs[item.name]):
            skipped.append(item)
        else:
            todo.append(item)
    if not overwrite:
        foreign = [
            str(output_dir / name)
            for item in todo
            for name in outputs[item.name]
            if (output_dir / name).exists() and not manifest.owns(item, name)
        ]
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ValueError(
                f"output files exist that no earlier run of this folder wrote: "
                f"{', '.join(foreign[:3])}{more}; add --overwrite (overwrite=True) to replace them"
            )
    hashes = {}
    for item in todo:
        known = manifest.known_hash(item)
        if known:
            hashes[item.name] = known
        manifest.mark_pending(item, pipeline, outputs[item.name])
    manifest.run = {
        "pipeline": pipeline.name,
        "fingerprint": pipeline.fingerprint(),
        "settings": pipeline.settings(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "items": [item.name for item in items],
    }
    manifest.save()
    total = len(items)
    result = BatchResult(pipeline.name, output_dir, manifest_path=manifest.path)
    if skipped:
        yield BatchProgress("skipped", len(skipped), total, clock.elapsed, status="skipped")
    try:
        if todo:
            check.raise_if_set("The batch run")
            with batch_client(workers=workers, n_items=len(todo), scheduler=scheduler) as client:
                result.dashboard = dashboard_link(client)
                yield BatchProgress(
                    "starting", len(skipped), total, clock.elapsed, dashboard=result.dashboard
                )
                last_save = time.monotonic()
                by_name = {item.name: item for item in todo}
                for event in run_items(
                    client,
                    pipeline,
                    todo,
                    output_dir,
                    hashes=hashes,
                    cancel=check,
                    done_before=len(skipped),
                    total=total,
                    clock=clock,
                ):
                    if event.stage == "running":
                        _record(manifest, by_name[event.item], event.result)
                    if time.monotonic() - last_save > SAVE_EVERY_S:
                        manifest.save()
                        last_save = time.monotonic()
                    yield event
    except JobCancelled as exc:
        _finish(result, manifest, pipeline, items, skipped)
        raise JobCancelled(str(exc), partial=result) from None
    except BaseException:
        manifest.save()  # keep what finished (Ctrl+C, a lost scheduler)
        raise
    _finish(result, manifest, pipeline, items, skipped)
    yield BatchProgress("done", total, total, clock.elapsed, dashboard=result.dashboard)
    return result


def _refuse_earlier_outputs(manifest: Manifest, items: Sequence[BatchItem]) -> None:
    """Refuse inputs an earlier run wrote into this output folder (``-o`` was the input folder)."""
    written = {
        os.path.realpath(manifest.output_dir / name): owner
        for owner, record in manifest.items.items()
        for name in record.get("outputs", [])
    }
    for item in items:
        owner = written.get(os.path.realpath(item.path))
        if owner is not None:
            raise ValueError(
                f"the input {str(item.path)!r} is an output of item {owner!r} of an earlier run "
                "into this output folder; leave it out or choose another output folder"
            )


def _record(manifest: Manifest, item: BatchItem, result: ItemResult | None) -> None:
    if result is None:
        return
    fields: dict[str, Any] = {
        "status": result.status,
        "seconds": result.seconds,
        "worker": result.worker,
        "error": result.error or None,
        "row": result.row,
    }
    if result.input_hash:
        fields["input_hash"] = result.input_hash
    if result.input_stat:
        fields["input_stat"] = result.input_stat
    if result.status == "done" and result.outputs:
        fields["outputs"] = result.outputs
    manifest.record(item, **fields)


def _finish(
    result: BatchResult,
    manifest: Manifest,
    pipeline: Pipeline,
    items: Sequence[BatchItem],
    skipped: Sequence[BatchItem],
) -> None:
    """Save the manifest, build the rows and write the report into ``result``."""
    manifest.save()
    skipped_names = {item.name for item in skipped}
    rows = []
    for item in items:
        record = manifest.items.get(item.name, {})
        status = record.get("status", "pending")
        if item.name in skipped_names:
            status = "skipped"
        row = {
            "name": item.name,
            "status": status,
            "seconds": record.get("seconds"),
            **dict(record.get("row") or {}),
            "input": str(item.path),
            "worker": record.get("worker") or "",
            "error": record.get("error") or "",
        }
        rows.append(row)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    result.rows = rows
    result.counts = counts
    result.report_paths = write_report(
        rows,
        result.output_dir,
        pipeline=pipeline.name,
        settings=pipeline.settings(),
        fingerprint=pipeline.fingerprint(),
    )


def run_batch(
    pipeline: Pipeline,
    items: Sequence[BatchItem],
    output_dir: str | os.PathLike,
    *,
    callback: Any = None,
    **options: Any,
) -> BatchResult:
    """:func:`run_batch_events` run to the end (``callback`` gets every event)."""
    return run_to_end(run_batch_events(pipeline, items, output_dir, **options), callback)
