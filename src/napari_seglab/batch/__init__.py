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
