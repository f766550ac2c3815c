"""``seglab batch <pipeline>``: one pipeline over many inputs, on dask.distributed.

Each pipeline is a subcommand under ``seglab batch`` (nested subparsers)::

    seglab batch predict MODEL INPUT... -o OUTPUT_DIR [--crf] [--instances {connected,watershed}]
    seglab batch evaluate PRED... --truth TRUTH_DIR_OR_FILES -o OUTPUT_DIR

with the options every pipeline shares (added here, never by a pipeline module):
``-o/--output-dir OUTPUT_DIR`` (required; ``args.output_dir``), ``--workers N``
(``args.workers``; default: one per CPU core, at most one per item, or one per
GPU), ``--scheduler ADDRESS`` (``args.scheduler``; a running dask scheduler,
e.g. ``tcp://10.0.0.5:8786``, instead of a LocalCluster started for the run),
``--overwrite`` (``args.overwrite``; redo every item, ignoring the manifest, and
replace output files the manifest does not know) and ``--quiet`` (no progress bar).

Adding a pipeline subcommand
----------------------------
A pipeline ``NAME`` plugs in with a module ``napari_seglab._commands.batch_NAME``
for ``NAME`` in :data:`PIPELINE_MODULES`; a missing module is skipped (as
``seglab`` skips missing command modules). The module defines:

``HELP : str``
    One line for ``seglab batch --help``. ``DESCRIPTION : str`` (optional) is the
    subcommand's longer description.
``add_arguments(parser) -> None``
    Adds the pipeline's own arguments, positionals included, to the
    subcommand's ``argparse`` parser. Unless the module defines ``make_items``,
    it must add the positional ``inputs`` (``nargs="+"``, ``type=str``,
    ``metavar="INPUT"``): files, folders, globs or list files (``.txt``).
    Import nothing heavy at module level: ``seglab --help`` builds every parser.
``make_pipeline(args) -> Pipeline``
    The :class:`napari_seglab.batch.pipeline.Pipeline` to run, from the parsed
    arguments (raise ``ValueError``/``FileNotFoundError`` naming the bad option).
``make_items(args) -> list[BatchItem]`` (optional)
    The items to run; default
    ``napari_seglab.batch.inputs.collect_items(args.inputs)``.

This module then runs :func:`napari_seglab.batch.run.run_batch_events` with a
tqdm progress bar on stderr, prints the dashboard address, a one-line summary
and where the manifest and report are. Exit code: 0 when every item succeeded
(or was already done), 1 when some failed; errors before any work (bad inputs,
an output that is an input) give 2 as for every ``seglab`` command, a cancel 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

#: Pipelines ``seglab batch`` offers, in help order: module ``batch_<name>`` each.
PIPELINE_MODULES = ("predict", "evaluate", "sam", "embed")


def pipeline_modules() -> dict[str, ModuleType]:
    """The pipeline command modules present in this build, by pipeline name."""
    found = {}
    for name in PIPELINE_MODULES:
        full = f"napari_seglab._commands.batch_{name}"
        try:
            found[name] = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:
                continue  # pipeline not in this build
            raise
    return found


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every ``seglab batch`` pipeline takes (see the module docstring)."""
    group = parser.add_argument_group("batch run")
    group.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        required=True,
        metavar="OUTPUT_DIR",
        help="folder for the outputs, manifest.json and the report (created if missing)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default: one per CPU core, at most one "
        "per item; one per GPU where there are GPUs)",
    )
    group.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running dask scheduler (e.g. tcp://host:8786) to use instead of "
        "a local cluster",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every item (ignore the manifest) and replace output files it does not know",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    """Add ``seglab batch`` with one nested subcommand per pipeline module found."""
    batch = subparsers.add_parser(
        "batch",
        help="run a pipeline over many inputs (dask.distributed), resumable",
        description=(
            "Apply one pipeline to many inputs on a local dask cluster or a running "
            "scheduler. OUTPUT_DIR gets one output per input (named after the input), "
            "manifest.json (a rerun skips finished items) and report.csv/json/png."
        ),
    )
    pipelines = batch.add_subparsers(dest="pipeline", metavar="PIPELINE")
    for name, module in pipeline_modules().items():
        parser = pipelines.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(parser)
        add_common_options(parser)
        parser.set_defaults(func=_run, batch_module=module)
    batch.set_defaults(func=_help_of(batch))


def _help_of(parser: argparse.ArgumentParser):
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    return show


def _run(args: argparse.Namespace) -> int:
    from ..batch.inputs import collect_items
    from ..batch.run import run_batch_events
    from ..jobs import run_to_end

    module = args.batch_module
    make_items = getattr(module, "make_items", None)
    items = make_items(args) if make_items is not None else collect_items(args.inputs)
    pipeline = module.make_pipeline(args)
    bar = _ProgressBar(f"batch {pipeline.name}", quiet=args.quiet)
    try:
        result = run_to_end(
            run_batch_events(
                pipeline,
                items,
                args.output_dir,
                workers=args.workers,
                scheduler=args.scheduler,
                overwrite=args.overwrite,
            ),
            callback=bar,
        )
    finally:
        bar.close()
    print(result.summary_line())
    print(f"manifest: {result.manifest_path}")
    for path in result.report_paths:
        print(f"report: {path}")
    for row in result.rows:
        if row.get("status") == "failed":
            print(f"failed: {row['name']}: {row.get('error', '')}", file=sys.stderr)
    return 0 if result.ok else 1


class _ProgressBar:
    """A tqdm bar on stderr fed with :class:`~napari_seglab.batch.engine.BatchProgress` events."""

    def __init__(self, what: str, *, quiet: bool = False):
        self.what = what
        self.quiet = quiet
        self.bar = None
        self.dashboard_shown = False

    def __call__(self, event) -> None:
        dashboard = getattr(event, "dashboard", "")
        if dashboard and not self.dashboard_shown:
            print(f"dashboard: {dashboard}", flush=True)
            self.dashboard_shown = True
        if self.quiet or event.total <= 0:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, desc=self.what, unit="item", file=sys.stderr)
        self.bar.n = event.done
        item, status = getattr(event, "item", ""), getattr(event, "status", "")
        if item or status:
            self.bar.set_postfix_str(f"{item} {status}".strip(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
