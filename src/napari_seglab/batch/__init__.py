"""Batch runs: many inputs and larger-than-memory volumes on dask.distributed.

A run applies one :class:`~.pipeline.Pipeline` (``predict``, ``sam``,
``embed``, ``evaluate``) to every :class:`~.pipeline.BatchItem` of an input
list, on a ``LocalCluster`` started for the run or on any running scheduler.
Each item's outputs are written to a temporary name and moved into place; a
manifest in the output folder makes a rerun skip finished items whose input
and settings are unchanged.

Importing this package is cheap: dask.distributed, torch and the model
packages are imported by the modules that need them.
"""

import importlib

#: Public name -> submodule that defines it (loaded on first use, PEP 562).
_EXPORTS = {
    "BatchItem": "pipeline",
    "ItemOutcome": "pipeline",
    "Pipeline": "pipeline",
    "collect_items": "inputs",
    "pair_items": "inputs",
    "BatchProgress": "engine",
    "batch_client": "engine",
    "BatchResult": "run",
    "run_batch": "run",
    "run_batch_events": "run",
    "PredictPipeline": "predict",
    "EvaluatePipeline": "evaluate",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "BatchItem",
    "BatchProgress",
    "BatchResult",
    "EvaluatePipeline",
    "ItemOutcome",
    "Pipeline",
    "PredictPipeline",
    "batch_client",
    "collect_items",
    "pair_items",
    "run_batch",
    "run_batch_events",
]
