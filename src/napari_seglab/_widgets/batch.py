"""Batch dock widget: apply a U-Net to a folder of images on dask.distributed.

A thin shell over :func:`napari_seglab.batch.run.run_batch_events`, the same
job ``seglab batch predict`` runs. The model is the one trained or loaded in
this viewer's U-Net widget (shared through :func:`._sessions.model_slot`) or a
model file. The run happens in a worker thread, on a local cluster of worker
processes or on a scheduler address, so the viewer never blocks; Cancel
stops it, keeping the items that finished (a rerun skips them). Finished
outputs are listed and open as layers on a double click or "Open selected";
nothing in the viewer changes otherwise.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton

from ._dock import DockShell
from ._layers import notify_error
from ._sessions import model_slot
from .batch_form import BatchForm

__all__ = ["BatchWidget", "open_output"]

JOB = "batch"
LABEL_KINDS = ("labels", "instances")


class BatchWidget(DockShell):
    """Predict a folder of images with a U-Net and open the results.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    form : BatchForm
    results : QListWidget
        One entry per output written (its path in ``Qt.UserRole``) or failed item.
    result : BatchResult or None
        The last finished (or cancelled) run.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.result = None
        self.slot = model_slot(napari_viewer)
        self.form = BatchForm()
        self.model_info = QLabel("")
        self.run_button = QPushButton("Run batch")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.results = QListWidget()
        self.results.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.results.itemDoubleClicked.connect(lambda item: self.open_items([item]))
        self.open_button = QPushButton("Open selected")
        self.open_button.clicked.connect(lambda: self.open_items(self.results.selectedItems()))
        self.set_rows(
            [
                [self.form],
                [self.model_info],
                [self.run_button, self.cancel_button],
                [self.progress],
                [self.status],
                [self.results],
                [self.open_button],
            ]
        )
        self.slot.changed.connect(self._show_model)
        self._show_model(self.slot.model)

    def teardown(self) -> None:
        """Cancel a running batch and stop listening to the viewer's model."""
        self.slot.changed.disconnect(self._show_model)
        super().teardown()

    def _show_model(self, model) -> None:
        if model is None:
            self.model_info.setText("No model in this viewer yet (train or load one).")
        else:
            self.model_info.setText(
                f"Viewer model: {model.architecture}, classes {list(model.classes)}"
            )

    # -------------------------------------------------------------------- run
    def run(self) -> None:
        """Check the form, then run the batch in the background."""
        from ..batch.run import run_batch_events

        if self.jobs.running(JOB):
            return
        try:
            pipeline = self.form.pipeline(self.slot.model)
            items = self.form.items()
            output_dir = self.form.output_dir()
        except (ValueError, FileNotFoundError) as exc:
            notify_error(exc, "Batch run")
            self.status.setText(f"Not started: {exc}")
            return
        self.results.clear()
        self._busy(True)
        self.status.setText(f"Starting a batch of {len(items)} item(s)…")
        self.jobs.start(
            JOB,
            run_batch_events,
            pipeline,
            items,
            output_dir,
            **self.form.cluster(),
            what="Batch run",
            on_yielded=self._progress,
            on_returned=self._finished,
            on_cancelled=self._cancelled,
            on_errored=lambda exc: self.status.setText(f"Failed: {exc}"),
            on_finished=lambda: self._busy(False),
        )

    def cancel(self) -> None:
        """Stop the run; finished items stay done (a rerun skips them)."""
        if self.jobs.running(JOB):
            self.jobs.cancel(JOB)
            self.status.setText("Cancelling…")

    def _busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _progress(self, event) -> None:
        if event.total:
            self.progress.setValue(int(100 * event.done / event.total))
        if event.stage == "starting":
            where = f" (dashboard {event.dashboard})" if event.dashboard else ""
            self.status.setText(f"Running{where}…")
        elif event.stage == "loading":
            self.status.setText(f"Running: {event.status}…")
        elif event.stage == "skipped":
            self.status.setText(f"{event.done} item(s) already done: skipped.")
        elif event.stage == "running" and event.result is not None:
            self._add_result(event.item, event.result)
            self.status.setText(f"{event.done} of {event.total} done: {event.item} {event.status}")

    def _add_result(self, name: str, result) -> None:
        output_dir = Path(self.form.output.value).expanduser()
        if result.status != "done":
            entry = QListWidgetItem(f"{name}: {result.status}: {result.error}")
            entry.setFlags(entry.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            self.results.addItem(entry)
            return
        for output in result.outputs:
            entry = QListWidgetItem(output)
            entry.setData(Qt.ItemDataRole.UserRole, str(output_dir / output))
            self.results.addItem(entry)

    def _finished(self, result) -> None:
        self.result = result
        self.progress.setValue(100)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()) if n)
        report = next((p for p in result.report_paths if p.suffix == ".csv"), None)
        where = f"; report {report}" if report else ""
        self.status.setText(f"Batch finished: {counts}{where}.")

    def _cancelled(self, exc) -> None:
        self.result = getattr(exc, "partial", None)
        self.status.setText("Batch cancelled; finished items are kept and a rerun skips them.")

    # ------------------------------------------------------------------- open
    def open_items(self, entries) -> None:
        """Open the outputs of ``entries`` (list items) as layers."""
        for entry in entries:
            path = entry.data(Qt.ItemDataRole.UserRole)
            if not path:
                continue
            try:
                open_output(self.viewer, Path(path))
            except (ValueError, OSError) as exc:
                notify_error(exc, f"Opening {Path(path).name}")


def open_output(viewer, path: Path) -> list:
    """Add the batch output ``path`` to ``viewer`` as a layer, lazily where it can.

    Label outputs (``*_labels``, ``*_instances``) become Labels layers, the
    rest Image layers; NIfTI and DICOM keep their geometry (the plugin's
    reader), OME-Zarr and TIFF are opened without loading them whole.

    Returns
    -------
    list of napari layers
        The layers added.
    """
    from ..io.reader import read_array

    stem = path.name.split(".")[0]
    is_labels = stem.rsplit("_", 1)[-1] in LABEL_KINDS
    if path.name.lower().endswith((".nii", ".nii.gz", ".zarr")):
        from .._io_plugin import read_nifti_layers
        from ..batch.omezarr import is_ome_zarr, ome_zarr_layers

        if path.name.lower().endswith(".zarr") and is_ome_zarr(path):
            layers = ome_zarr_layers(path)  # multiscale, lazy
        elif not path.name.lower().endswith(".zarr"):
            layers = read_nifti_layers(str(path))
        else:
            layers = []
        if layers:
            return [viewer.add_layer(_layer(data, kwargs, kind)) for data, kwargs, kind in layers]
    source = read_array(path, lazy=True, what="batch output")
    kwargs = {"name": stem}
    if source.spacing is not None:
        kwargs["scale"] = source.spacing
    if source.origin is not None:
        kwargs["translate"] = source.origin
    if is_labels:
        return [viewer.add_labels(source.data, **kwargs)]
    return [viewer.add_image(source.data, **kwargs)]


def _layer(data, kwargs, kind):
    from napari.layers import Layer

    return Layer.create(data, kwargs, kind)
