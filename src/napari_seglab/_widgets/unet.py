"""U-Net train / predict dock widget: paint labels, train, predict, correct, retrain.

A thin shell over :mod:`napari_seglab.unet`: its forms (:mod:`.unet_parts`) map
controls to the arguments of the core jobs (``train_events``, with a live plot
of loss and validation Dice; ``predict_and_split_events``; ``suggest_events``),
which run in a worker thread. The trained model is the widget's session object.
Cancel and errors change no layer; a cancelled training keeps its best epoch.
"""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..jobs import JobCancelled
from ._controls import TrainingPlot, int_box
from ._layers import layer_spacing, notify_error, show_info, spatial_image, start_job
from .unet_parts import (
    DataForm,
    PredictionForm,
    SuggestionList,
    TrainingForm,
    add_prediction_layers,
)


class UNetWidget(QWidget):
    """Train a MONAI U-Net on layers, predict, and suggest what to annotate next.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    model : SegmentationModel or None
        The session's current model (trained here or loaded).
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self._worker = None
        self._cancel = threading.Event()

        # The forms own their controls; the widget keeps their names for scripts and tests.
        self.data_form = data = DataForm()
        self.image_combo, self.labels_combo = data.image_combo, data.labels_combo
        self.use_ignore, self.ignore_value = data.use_ignore, data.ignore_value
        self.binary = data.binary
        self.training_form = form = TrainingForm()
        self.architecture, self.patch_size = form.architecture, form.patch_size
        self.epochs, self.time_budget = form.epochs, form.time_budget
        self.batch_size, self.learning_rate = form.batch_size, form.learning_rate
        self.augment, self.device = form.augment, form.device
        self.continue_training = form.continue_training
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.plot = TrainingPlot()
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.model_info = QLabel("No model yet.")
        self.model_info.setWordWrap(True)
        self.prediction_form = pred = PredictionForm()
        self.overlap, self.tta, self.instances = pred.overlap, pred.tta, pred.instances
        self.probability_layer, self.predict_button = pred.probability_layer, pred.predict_button
        self.suggest_k = int_box(5, 1, 1000, "Number of planes / tiles to suggest.")
        self.mc_passes = int_box(0, 0, 100, "Monte-Carlo dropout passes (0: off).", "off")
        self.suggest_button = QPushButton("Suggest slices")
        self.suggestions = SuggestionList(napari_viewer)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self._layout()
        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        self.predict_button.clicked.connect(self.predict)
        self.suggest_button.clicked.connect(self.suggest)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._set_busy(False)

    def _layout(self) -> None:
        train_box = QVBoxLayout()
        train_box.addWidget(self.training_form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        train_box.addLayout(buttons)
        train_box.addWidget(self.plot)

        model_row = QHBoxLayout()
        model_row.addWidget(self.save_button)
        model_row.addWidget(self.load_button)
        model_box = QVBoxLayout()
        model_box.addLayout(model_row)
        model_box.addWidget(self.model_info)

        suggest_form = QFormLayout()
        suggest_form.addRow("How many", self.suggest_k)
        suggest_form.addRow("MC dropout", self.mc_passes)
        suggest_form.addRow(self.suggest_button)
        suggest_form.addRow(self.suggestions)

        layout = QVBoxLayout(self)
        for title, inner in (
            ("Data", self.data_form),
            ("Training", train_box),
            ("Model", model_box),
            ("Predict", self.prediction_form),
            ("Annotate next", suggest_form),
        ):
            group = QGroupBox(title)
            if isinstance(inner, QWidget):
                group.setLayout(QVBoxLayout())
                group.layout().addWidget(inner)
            else:
                group.setLayout(inner)
            layout.addWidget(group)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _refresh_layers(self, event=None) -> None:
        self.data_form.refresh(self.viewer)

    def training_settings(self) -> dict:
        """Keyword arguments for :func:`~napari_seglab.unet.train_events` from the form."""
        return {**self.training_form.settings(), "ignore_label": self.data_form.ignore_label()}

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Start training in a worker thread; the plot updates after every epoch."""
        from ..unet import train_events

        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        try:
            settings = self.training_settings()
            image_layer, image, rgb, labels = self.data_form.training_data(self.viewer)
        except ValueError as exc:
            notify_error(exc, "U-Net training")
            return
        initial = self.model if self.continue_training.isChecked() else None
        self.plot.clear()
        self._start(
            "Training…",
            train_events,
            image,
            labels,
            rgb=True if rgb else None,
            spacing=layer_spacing(image_layer),
            initial_model=initial,
            on_yielded=self._epoch_done,
            on_returned=self._trained,
            on_errored=self._training_failed,
            progress={"total": settings["max_epochs"] or 0, "desc": "U-Net training"},
            **settings,
        )

    def _epoch_done(self, event) -> None:
        self.plot.add(event.epoch, event.loss, event.score)
        if event.fraction is not None:  # epochs done, or elapsed of the time budget
            self.progress.setValue(int(100 * event.fraction))
        dice = "-" if event.score is None else f"{event.score:.3f}"
        self.status.setText(
            f"Epoch {event.epoch}: loss {event.loss:.4f}, val Dice {dice}, {event.elapsed:.0f} s"
        )

    def _trained(self, model) -> None:
        self.model = model
        self.status.setText("Training finished.")
        self._describe_model()

    def _training_failed(self, exc: BaseException) -> None:
        from ..unet.data import TooManyClasses

        if isinstance(exc, JobCancelled) and exc.partial is not None:
            self.model = exc.partial
            self._describe_model()
            self.status.setText("Training cancelled; the best epoch so far is kept.")
        elif isinstance(exc, JobCancelled):
            self.status.setText("Training cancelled before the first epoch; model unchanged.")
        elif isinstance(exc, TooManyClasses):
            self._failed("U-Net training")(
                ValueError(f"{exc} Tick '{self.binary.text()}' under Data to do so.")
            )
        else:
            self._failed("U-Net training")(exc)

    def cancel(self) -> None:
        """Ask the running job to stop; no layer changes."""
        self._cancel.set()
        self.status.setText("Cancelling…")

    # ---------------------------------------------------------------- predict
    def _prediction_inputs(self, what: str, mc_passes: int = 0):
        """The image layer, its data and predict arguments checked against the model.

        None (after a notification) when there is no model, no image, the image
        does not fit, or ``mc_passes`` are asked of a model without dropout.
        """
        try:
            if self.model is None:
                raise ValueError("Expected a model: train one or load one first.")
            image_layer = self.data_form.image_layer(self.viewer)
            data, rgb = spatial_image(image_layer)
            image = np.asarray(data)
            slicewise = self.model.spatial_dims == 2 and image.ndim - (1 if rgb else 0) == 3
            self.model.check_input(image, slicewise=slicewise)
            if mc_passes:
                from ..unet.uncertainty import require_dropout

                require_dropout(self.model)
        except ValueError as exc:
            notify_error(exc, what)
            self.status.setText(f"Failed: {exc}")
            return None
        predict_kwargs = {
            "overlap": self.overlap.value(),
            "tta": self.tta.isChecked(),
            "device": self.device.currentText(),
            "slicewise": slicewise,
        }
        return image_layer, image, predict_kwargs

    def predict(self) -> None:
        """Predict the whole image/stack into a new Labels layer (worker thread)."""
        from ..unet import predict_and_split_events

        inputs = self._prediction_inputs("U-Net prediction")
        if inputs is None:
            return
        image_layer, image, predict_kwargs = inputs
        self._start(
            "Predicting…",
            predict_and_split_events,
            self.model,
            image,
            instances=self.instances.currentText(),
            spacing=layer_spacing(image_layer),
            on_returned=lambda result: self._write_prediction(result, image_layer),
            on_errored=self._prediction_failed("U-Net prediction"),
            progress={"total": 0, "desc": "U-Net prediction"},
            **predict_kwargs,
        )

    def suggest(self) -> None:
        """Rank planes (3D) or tiles (2D) by predictive entropy and list them."""
        from ..unet import suggest_events

        inputs = self._prediction_inputs("U-Net suggestions", self.mc_passes.value())
        if inputs is None:
            return
        image_layer, image, predict_kwargs = inputs
        self._start(
            "Predicting…",
            suggest_events,
            self.model,
            image,
            k=self.suggest_k.value(),
            mc_dropout=self.mc_passes.value(),
            on_returned=lambda found: self._show_suggestions(found, image_layer),
            on_errored=self._prediction_failed("U-Net suggestions"),
            progress={"total": 0, "desc": "U-Net suggestions"},
            **predict_kwargs,
        )

    def _prediction_failed(self, what: str):
        report = self._failed(what)

        def errored(exc: BaseException) -> None:
            if isinstance(exc, JobCancelled):
                self.status.setText("Cancelled; no layer changed.")
            else:
                report(exc)

        return errored

    def _start(self, message: str, job, *args, on_yielded=None, **kwargs) -> None:
        """Run a core job in a worker thread with progress and the Cancel button."""
        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        self._cancel = threading.Event()
        self.progress.setValue(0)
        self.status.setText(message)
        self._set_busy(True)
        self._worker = start_job(
            job,
            *args,
            cancel=self._cancel,
            on_yielded=on_yielded or self._show_progress,
            on_finished=lambda: self._set_busy(False),
            **kwargs,
        )

    def _show_progress(self, event) -> None:
        if event.fraction is not None:
            self.progress.setValue(int(100 * event.fraction))

    def _write_prediction(self, result, image_layer) -> None:
        checked = self.probability_layer.isChecked()
        name = add_prediction_layers(self.viewer, result, image_layer, self.model.classes, checked)
        self.status.setText(f"Prediction in new layer {name!r}.")

    def _show_suggestions(self, suggestions, image_layer) -> None:
        self.suggestions.show_suggestions(suggestions, image_layer)
        self.status.setText(f"{len(suggestions)} suggestions: click one to go there.")

    # ------------------------------------------------------------------ model
    def save_model(self, path) -> None:
        """Write the current model to ``path``."""
        if self.model is None:
            raise ValueError("Expected a model to save: train one or load one first.")
        self.model.save(path)
        self.status.setText(f"Model saved to {path}.")

    def load_model(self, path) -> None:
        """Read a model from ``path`` and make it current."""
        from ..unet import SegmentationModel

        self.model = SegmentationModel.load(path)
        self._describe_model()
        self.status.setText(f"Model loaded from {path}.")

    def _save_dialog(self) -> None:
        if self.model is None:  # say so before asking for a file name
            self._failed("Save model")(
                ValueError("No model to save: train one or load one first.")
            )
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save U-Net model", "", "Model (*.pt)")
        if path:
            try:
                self.save_model(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                notify_error(exc, "Save model")

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load U-Net model", "", "Model (*.pt)")
        if path:
            try:
                self.load_model(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                notify_error(exc, "Load model")

    def _describe_model(self) -> None:
        m = self.model
        if m is None:
            self.model_info.setText("No model yet.")
            return
        best = "" if m.best_dice is None else f", best val Dice {m.best_dice:.3f}"
        self.model_info.setText(
            f"{m.architecture}, {m.describe_input()}, classes {list(m.classes)}, "
            f"patch {list(m.patch_size)}, {len(m.history)} epochs{best}"
        )

    # ----------------------------------------------------------------- common
    def _failed(self, what: str):
        def errored(exc: BaseException) -> None:
            self.status.setText(f"Failed: {exc}")
            notify_error(exc, what)

        return errored

    def _set_busy(self, busy: bool) -> None:
        if not busy:
            self._worker = None
        for button in (self.train_button, self.predict_button, self.suggest_button):
            button.setEnabled(not busy)
        self.load_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
