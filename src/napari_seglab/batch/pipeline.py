"""The contract between the batch engine and a pipeline.

The engine (``engine.py``) knows nothing about models or formats: it hands
each :class:`BatchItem` to :meth:`Pipeline.run_item` on a worker process
and records the :class:`ItemOutcome` in the manifest. A pipeline knows
nothing about dask: it turns one input into its outputs.

Models are loaded once per worker process: the engine calls
:meth:`Pipeline.load` the first time a worker runs an item of this
pipeline (keyed by :meth:`Pipeline.fingerprint`) and passes the object it
returned to every later :meth:`Pipeline.run_item` on that worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["BatchItem", "ItemOutcome", "Pipeline"]


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch run.

    Attributes
    ----------
    name : str
        Unique within the run: the input's stem (``"ct_001"`` for
        ``ct_001.nii.gz``, a DICOM folder's name), used to name its outputs
        and its manifest entry.
    path : Path
        The input file, or folder (a DICOM series, a zarr/OME-Zarr store).
    extra : dict of str to Path
        Other files matched to this input by name (``"truth"`` for the
        ``evaluate`` pipeline), empty otherwise.
    """

    name: str
    path: Path
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class ItemOutcome:
    """What one item produced, as the worker reports it.

    Attributes
    ----------
    outputs : list of str
        Names of the files or folders written, relative to the output folder.
    row : dict
        Report fields for this item (JSON values): ``shape``, ``spacing``,
        ``objects``, metrics where ground truth was given, ... The engine adds
        ``name``, ``status``, ``seconds``, ``worker`` and ``error``.
    """

    outputs: list[str] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Pipeline(Protocol):
    """One kind of batch work (picklable: it is sent to every worker).

    Attributes
    ----------
    name : str
        ``"predict"``, ``"sam"``, ``"embed"`` or ``"evaluate"``.
    """

    name: str

    def settings(self) -> dict[str, Any]:
        """The settings that change the outputs, as JSON values.

        Hashed into the manifest (with the model file's hash): a rerun redoes
        every item whose settings differ.
        """

    def fingerprint(self) -> str:
        """A short hash of :meth:`settings` and the model content."""

    def output_names(self, item: BatchItem) -> list[str]:
        """Names (relative to the output folder) this pipeline writes for ``item``.

        Checked before the run: no output may be an input, and no two items
        may share an output name.
        """

    def load(self) -> Any:
        """Load what every item needs (the model), once per worker process."""

    def run_item(self, item: BatchItem, output_dir: Path, loaded: Any) -> ItemOutcome:
        """Process ``item`` and write its outputs atomically into ``output_dir``.

        Raises any exception on failure: the engine records it for this item
        and goes on with the others. Nothing half-written may be left under an
        output name.
        """
