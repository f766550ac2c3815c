"""SAM decoder fine-tuning dock widget: adapt SAM's mask decoder to your annotations.

A thin shell over :mod:`napari_seglab.sam.finetune`. It gathers (image,
labels) layer pairs, a SAM model (loaded here, taken from the SAM prompting
widget, or set with :meth:`SamFinetuneWidget.set_model`) and the recipe, runs
:func:`~napari_seglab.sam.finetune.finetune_decoder_events` in a worker
thread with a live loss / validation-Dice plot, and keeps the tuned model as
its session object. "Save decoder" writes the small decoder file; "Use in SAM
widget" hands the tuned model to the SAM prompting widget of the same viewer.
Fine-tuning never writes into a layer.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._controls import TrainingPlot, device_choices, float_box, int_box
from ._layers import fill_combo, layers_of_type, notify_error, show_info, spatial_image, start_job

MODEL_CHOICES = ("vit_b", "medsam", "vit_l", "vit_h")
PROMPT_CHOICES = ("mixed", "box", "points")
SAM_WIDGET = "SAM prompting"


def _load_job(model_type: str, checkpoint: str, device: str):
    from ..sam import load_model

    yield "loading"
    return load_model(model_type, checkpoint=checkpoint or None, device=device, progress=False)


def _format_dice(scores: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) or "n/a"


class SamFinetuneWidget(QWidget):
    """Fine-tune SAM's mask decoder on (image, labels) layer pairs.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    model : SamModel or None
        The base model (loaded, taken from the SAM widget, or :meth:`set_model`).
    result : FinetuneResult or None
        The last fine-tuning, with the tuned model in ``result.model``.
    pairs : list of (str, str)
        Names of the (Image, Labels) layer pairs added with "Add pair"; when
        empty, the pair chosen in the two boxes is used.
    saved_path : Path or None
        Where the tuned decoder was last saved.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self.result = None
        self.pairs: list[tuple[str, str]] = []
        self.saved_path: Path | None = None
        self._worker = None
        self._cancel = threading.Event()
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.events.moved.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)

        data_box = QGroupBox("Training data")
        data = QVBoxLayout(data_box)
        row = QHBoxLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer (2D or a 3D stack).")
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(
            "Labels layer of the same shape: instance or semantic, 0 = background. "
            "Only annotated planes of a stack are used."
        )
        row.addWidget(self.image_combo)
        row.addWidget(self.labels_combo)
        data.addLayout(row)
        row = QHBoxLayout()
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button = QPushButton("Remove")
        self.remove_pair_button.clicked.connect(self._remove_selected_pair)
        row.addWidget(self.add_pair_button)
        row.addWidget(self.remove_pair_button)
        data.addLayout(row)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(70)
        self.pair_list.setToolTip("Several images: add each (image, labels) pair.")
        data.addWidget(self.pair_list)
        layout.addWidget(data_box)

        model_box = QGroupBox("Base model")
        form = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.addItems(MODEL_CHOICES)
        self.model_combo.setToolTip("Registered checkpoint, or the architecture of a local file.")
        form.addRow("Model", self.model_combo)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("optional local .pth (default: registered file)")
        form.addRow("Checkpoint", self.checkpoint_edit)
        self.device_combo = QComboBox()
        self.device_combo.addItems(device_choices())
        form.addRow("Device", self.device_combo)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.from_sam_button = QPushButton("From SAM widget")
        self.from_sam_button.setToolTip("Use the model loaded in the SAM prompting widget.")
        self.from_sam_button.clicked.connect(self.model_from_sam_widget)
        row.addWidget(self.load_button)
        row.addWidget(self.from_sam_button)
        form.addRow(row)
        self.model_label = QLabel("No model loaded.")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        layout.addWidget(model_box)

        recipe_box = QGroupBox("Recipe")
        form = QFormLayout(recipe_box)
        self.prompt_combo = QComboBox()
        self.prompt_combo.addItems(PROMPT_CHOICES)
        self.prompt_combo.setToolTip("Prompts drawn from the labels to train and validate with.")
        form.addRow("Prompts", self.prompt_combo)
        self.epochs = int_box(
            30, 0, 10000, "Passes over the training objects (0: no limit).", "no limit"
        )
        form.addRow("Epochs", self.epochs)
        self.time_budget = int_box(
            0, 0, 86400, "Stop after this many seconds (0: no limit).", "no limit"
        )
        self.time_budget.setSuffix(" s")
        form.addRow("Time budget", self.time_budget)
        self.learning_rate = float_box(1e-4, 1e-6, 1e-1, 1e-4, 6, "AdamW learning rate.")
        form.addRow("Learning rate", self.learning_rate)
        self.validation = float_box(
            0.2, 0.0, 0.9, 0.05, 2, "Share of the objects held out for validation Dice."
        )
        form.addRow("Validation", self.validation)
        layout.addWidget(recipe_box)

        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.plot = TrainingPlot()
        layout.addWidget(self.plot)
        self.status = QLabel("Choose data and a model, then Start.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        layout.addWidget(self.result_label)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save decoder…")
        self.save_button.clicked.connect(self._save_dialog)
        self.use_button = QPushButton("Use in SAM widget")
        self.use_button.clicked.connect(self.use_in_sam_widget)
        row.addWidget(self.save_button)
        row.addWidget(self.use_button)
        layout.addLayout(row)
        layout.addStretch(1)
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.load_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.result is not None)
        self.use_button.setEnabled(not busy and self.result is not None)

    # -------------------------------------------------------------- layers
    def _refresh_layers(self, event=None) -> None:
        images = [layer.name for layer in layers_of_type(self.viewer, Image)]
        labels = [layer.name for layer in layers_of_type(self.viewer, Labels)]
        fill_combo(self.image_combo, images)
        fill_combo(self.labels_combo, labels)
        present = {layer.name for layer in self.viewer.layers}
        self.pairs = [p for p in self.pairs if p[0] in present and p[1] in present]
        self._show_pairs()

    def _show_pairs(self) -> None:
        self.pair_list.clear()
        self.pair_list.addItems([f"{image}  ←  {labels}" for image, labels in self.pairs])

    def add_pair(self) -> None:
        """Add the (image, labels) pair chosen in the two boxes to the training data."""
        pair = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(pair):
            notify_error(
                ValueError("Expected an Image and a Labels layer to pair."), "Fine-tuning"
            )
            return
        if pair not in self.pairs:
            self.pairs.append(pair)
        self._show_pairs()

    def _remove_selected_pair(self) -> None:
        row = self.pair_list.currentRow()
        if 0 <= row < len(self.pairs):
            del self.pairs[row]
            self._show_pairs()

    def training_data(self) -> tuple[list, list]:
        """Images and label arrays of the chosen pairs (labels copied: never modified)."""
        pairs = self.pairs or [(self.image_combo.currentText(), self.labels_combo.currentText())]
        images, labels = [], []
        for image_name, labels_name in pairs:
            if image_name not in self.viewer.layers or labels_name not in self.viewer.layers:
                raise ValueError(
                    f"Expected an Image and a Labels layer, got {image_name!r} and "
                    f"{labels_name!r}; add them to the viewer first."
                )
            image_layer = self.viewer.layers[image_name]
            labels_layer = self.viewer.layers[labels_name]
            data, _ = spatial_image(image_layer)
            label_data = labels_layer.data[0] if labels_layer.multiscale else labels_layer.data
            images.append(data)
            labels.append(np.array(label_data, copy=True))
        return images, labels

    # --------------------------------------------------------------- model
    def set_model(self, model) -> None:
        """Use ``model`` (a :class:`~napari_seglab.sam.SamModel`) as the base model."""
        self.model = model
        self.model_label.setText(f"Base model: {model.name} on {model.device}.")

    def load_model(self) -> None:
        """Load the chosen checkpoint in a worker."""
        self.model_label.setText(f"Loading {self.model_combo.currentText()}…")
        self.load_button.setEnabled(False)
        start_job(
            _load_job,
            self.model_combo.currentText(),
            self.checkpoint_edit.text().strip(),
            self.device_combo.currentText(),
            on_returned=self.set_model,
            on_errored=self._failed("Load SAM model"),
            on_finished=lambda: self.load_button.setEnabled(self._worker is None),
        )

    def _sam_widget(self):
        """The SAM prompting widget of this viewer (docked now if it was not)."""
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-seglab", SAM_WIDGET)
        return widget

    def model_from_sam_widget(self) -> None:
        """Take the base model (and embedding cache) of the SAM prompting widget."""
        widget = self._sam_widget()
        if getattr(widget, "model", None) is None:
            notify_error(
                ValueError("The SAM prompting widget has no model loaded yet."), "Fine-tuning"
            )
            return
        self.set_model(widget.model)

    # ---------------------------------------------------------------- train
    def settings(self) -> dict:
        """Keyword arguments for :func:`finetune_decoder_events` from the form."""
        epochs = self.epochs.value() or None
        budget = float(self.time_budget.value()) or None
        if epochs is None and budget is None:
            raise ValueError("Expected a number of epochs or a time budget; both are 0.")
        return {
            "epochs": epochs,
            "time_budget_s": budget,
            "prompt": self.prompt_combo.currentText(),
            "learning_rate": self.learning_rate.value(),
            "validation_fraction": self.validation.value(),
            "device": self.device_combo.currentText(),
        }

    def start(self, **overrides) -> None:
        """Fine-tune in a worker thread; the plot updates after every epoch.

        ``overrides`` replace form settings (e.g. ``steps=5`` from scripts and tests).
        """
        from ..sam.finetune import finetune_decoder_events

        if self._worker is not None:
            show_info("Fine-tuning is already running.")
            return
        try:
            if self.model is None:
                raise ValueError("Expected a base model: load one or take the SAM widget's.")
            settings = {**self.settings(), **overrides}
            images, labels = self.training_data()
        except ValueError as exc:
            notify_error(exc, "Fine-tuning")
            return
        cache = getattr(self._existing_sam_widget(), "cache", None)
        if cache is not None:
            settings.setdefault("cache", cache)  # reuse the SAM widget's embeddings
        self._cancel = threading.Event()
        self.plot.clear()
        self.progress.setValue(0)
        self.result_label.setText("")
        self.status.setText("Embedding annotated planes…")
        self._set_busy(True)
        self._worker = start_job(
            finetune_decoder_events,
            self.model,
            images,
            labels,
            cancel=self._cancel,
            on_yielded=self._on_event,
            on_returned=self._on_returned,
            on_errored=self._failed("Fine-tuning"),
            on_finished=self._on_finished,
            **settings,
        )

    def _existing_sam_widget(self):
        """The SAM prompting widget if it is docked (without docking it)."""
        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", None) or {}
        for name, widget in docks.items():
            if SAM_WIDGET in name:
                return widget
        return None

    def _on_event(self, event) -> None:
        if event.stage == "embedding":
            self.progress.setMaximum(event.total)
            self.progress.setValue(event.done)
            self.status.setText(f"Embedding plane {event.done} of {event.total}…")
        elif event.stage == "epoch":
            if event.epoch > 0:
                self.plot.add(event.epoch, event.loss, event.validation.get("mean"))
            if event.total:
                self.progress.setMaximum(event.total)
                self.progress.setValue(event.epoch)
            loss = "-" if event.loss is None else f"{event.loss:.4f}"
            self.status.setText(
                f"Epoch {event.epoch}, step {event.step}: loss {loss}, validation Dice "
                f"{_format_dice(event.validation)} ({event.elapsed_s:.0f} s)"
            )

    def _on_returned(self, result) -> None:
        if not result.history:
            self.status.setText("Cancelled while embedding; nothing trained.")
            return
        self.result = result
        note = " (cancelled; best epoch kept)" if result.cancelled else ""
        self.status.setText(
            f"Finished{note}: {result.steps} steps, {result.epochs} epochs, best epoch "
            f"{result.best_epoch}."
        )
        self.result_label.setText(
            f"Validation Dice before: {_format_dice(result.before)}\n"
            f"after: {_format_dice(result.after)}"
        )

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)

    def _failed(self, what: str):
        def report(exc: BaseException) -> None:
            notify_error(exc, what)
            self.status.setText(f"{what} failed: {exc}")

        return report

    def cancel(self) -> None:
        """Stop training after the current step; the best decoder so far is kept."""
        self._cancel.set()
        self.status.setText("Cancelling…")

    # -------------------------------------------------------------- results
    def save_decoder(self, path) -> Path:
        """Write the tuned decoder (with its base model's hash and the recipe) to ``path``."""
        from ..sam.finetune import save_decoder

        if self.result is None:
            raise ValueError("Expected a fine-tuned decoder to save: run fine-tuning first.")
        self.saved_path = save_decoder(self.result.model, path, result=self.result)
        self.status.setText(f"Decoder saved to {self.saved_path}.")
        return self.saved_path

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save SAM decoder", "", "Decoder (*.pt)")
        if path:
            try:
                self.save_decoder(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                notify_error(exc, "Save decoder")

    def use_in_sam_widget(self):
        """Hand the tuned model to the SAM prompting widget of this viewer (docking it if needed).

        Returns the SAM widget. Its decoder field shows the saved decoder file,
        so reloading the model there keeps the tuned decoder.
        """
        if self.result is None:
            notify_error(
                ValueError("Expected a fine-tuned decoder: run fine-tuning first."),
                "Use in SAM widget",
            )
            return None
        widget = self._sam_widget()
        widget.set_model(self.result.model)
        if self.saved_path is not None and hasattr(widget, "decoder_edit"):
            widget.decoder_edit.setText(str(self.saved_path))
        self.status.setText("The SAM prompting widget now uses the fine-tuned decoder.")
        return widget
