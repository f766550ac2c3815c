"""U-Net train / predict dock widget: paint labels, train, predict, correct, retrain.

A thin shell over :mod:`napari_seglab.unet`: its magicgui forms
(:mod:`.unet_parts`) map controls to the arguments of the core jobs
(``train_events``, with a live plot of loss and validation Dice;
``predict_and_split_events``; ``suggest_events``), which run in a worker
thread. The trained model is the widget's session object. Cancel and errors
change no layer; a cancelled training keeps its best epoch. Everything but
the progress bar and status line scrolls, and the rarely changed settings sit
in collapsed sections, so the dock fits a 900 px screen.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ._controls import TrainingPlot, scroll_area
from ._dock import DockShell
from ._layers import layer_spacing, notify_error, show_info, spatial_image
from ._sessions import model_slot
from .unet_forms import (
    AdvancedTrainingForm,
    DataForm,
    PredictionForm,
    SuggestForm,
    TrainingForm,
    training_settings,
)
from .unet_parts import (
    SuggestionList,
    add_prediction_layers,
    describe_model,
    group,
    is_lazy,
    prediction_job,
    score_name,
    section,
    train_job,
)
from .unet_region import predict_visible

JOB = "unet"


class UNetWidget(DockShell):
    """Train a MONAI U-Net on layers, predict, and suggest what to annotate next.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    model : SegmentationModel or None
        The session's current model (trained here or loaded).
    data_form, training_form, advanced_form, prediction_form, suggest_form : magicgui Container
        The forms; their widgets are also attributes of the widget (``image_combo``,
        ``epochs``, ``patch_size``, ``overlap``, ``suggest_k``, ...).
    sections : dict of str to QCollapsible
        ``"advanced"``, ``"curves"``, ``"model"``, ``"suggest"``: collapsed at start.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.model = None
        self._worker = None

        self.data_form = data = DataForm(napari_viewer)
        self.image_combo, self.labels_combo = data.image, data.labels_layer
        self.use_ignore, self.ignore_value = data.use_ignore, data.ignore_value
        self.binary = data.binary
        self.training_form = form = TrainingForm()
        self.architecture, self.epochs = form.architecture, form.epochs
        self.time_budget, self.device, self.things = form.time_budget, form.device, form.things
        self.advanced_form = advanced = AdvancedTrainingForm()
        self.patch_size, self.batch_size = advanced.patch_size, advanced.batch_size
        self.learning_rate, self.augment = advanced.learning_rate, advanced.augment
        self.continue_training = advanced.continue_training
        self.prediction_form = pred = PredictionForm()
        self.overlap, self.tta, self.instances = pred.overlap, pred.tta, pred.instances
        self.probability_layer = pred.probability_layer
        self.suggest_form = suggest = SuggestForm()
        self.suggest_k, self.mc_passes = suggest.k, suggest.mc_passes
        self.forms = [data, form, advanced, pred, suggest]

        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.plot = TrainingPlot()
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.model_info = QLabel("No model yet.")
        self.predict_button = QPushButton("Predict")
        self.region_button = QPushButton("Predict visible region")
        self.suggest_button = QPushButton("Suggest slices")
        self.suggestions = SuggestionList(napari_viewer)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        for label in (self.model_info, self.status):
            label.setWordWrap(True)

        self._layout()
        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        self.predict_button.clicked.connect(self.predict)
        self.region_button.clicked.connect(lambda: predict_visible(self))
        self.suggest_button.clicked.connect(self.suggest)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        self.reset_choices()
        self._set_busy(False)

    # ----------------------------------------------------------------- layout
    def _layout(self) -> None:
        self.sections = {
            "advanced": section("Advanced training settings", self.advanced_form),
            "curves": section("Training curves", self.plot),
            "model": section("Model file", (self.save_button, self.load_button)),
            "suggest": section(
                "Annotate next", self.suggest_form, self.suggest_button, self.suggestions
            ),
        }
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(group("Data", self.data_form))
        layout.addWidget(
            group(
                "Training",
                self.training_form,
                (self.train_button, self.cancel_button),
                self.model_info,
                self.sections["advanced"],
                self.sections["curves"],
                self.sections["model"],
            )
        )
        buttons = (self.predict_button, self.region_button)
        layout.addWidget(group("Predict", self.prediction_form, buttons))
        layout.addWidget(self.sections["suggest"])
        layout.addStretch(1)
        self.scroll = scroll_area(content)
        # Only vertical scrolling: the forms take the dock's width.
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # The progress bar and the status line stay in view, below the scrolling part.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll, 1)
        outer.addWidget(self.progress)
        outer.addWidget(self.status)

    def training_settings(self) -> dict:
        """Keyword arguments for :func:`~napari_seglab.unet.train_events` from the forms."""
        settings = training_settings(self.training_form, self.advanced_form)
        return {**settings, "ignore_label": self.data_form.ignore_label()}

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Start training in a worker thread; the plot updates after every epoch."""
        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        try:
            settings = self.training_settings()
            image_layer, image, rgb, labels = self.data_form.training_data(settings["patch_size"])
        except ValueError as exc:
            self._failed("U-Net training")(exc)
            return
        initial = self.model if self.continue_training.value else None
        self.plot.clear()
        self.sections["curves"].expand(animate=False)
        self._start(
            "Training…",
            train_job,
            image,
            labels,
            what="U-Net training",
            binary_hint=self.binary.text,
            binary=self.binary.value,
            rgb=True if rgb else None,
            spacing=layer_spacing(image_layer),
            initial_model=initial,
            on_yielded=self._epoch_done,
            on_returned=self._trained,
            on_cancelled=self._training_cancelled,
            progress={"total": settings["max_epochs"] or 0, "desc": "U-Net training"},
            **settings,
        )

    def _epoch_done(self, event) -> None:
        self.plot.add(event.epoch, event.loss, event.score)
        self._show_progress(event)
        score = "-" if event.score is None else f"{event.score:.3f}"
        name = score_name(self.architecture.value)
        self.status.setText(
            f"Epoch {event.epoch}: loss {event.loss:.4f}, {name} {score}, {event.elapsed:.0f} s"
        )

    def _trained(self, model) -> None:
        self.model = model
        self.status.setText("Training finished.")
        self._describe_model()

    def _training_cancelled(self, exc) -> None:
        if getattr(exc, "partial", None) is not None:
            self.model = exc.partial
            self._describe_model()
            self.status.setText("Training cancelled; the best epoch so far is kept.")
        else:
            self.status.setText("Training cancelled before the first epoch; model unchanged.")

    def cancel(self) -> None:
        """Ask the running job to stop; no layer changes."""
        self.jobs.cancel(JOB)
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
            image_layer = self.data_form.image_layer()
            data, rgb = spatial_image(image_layer)
            image = data if is_lazy(data) else np.asarray(data)
            slicewise = self.model.spatial_dims == 2 and image.ndim - (1 if rgb else 0) == 3
            self.model.check_input(image, slicewise=slicewise)
            if mc_passes:
                from ..unet.uncertainty import require_dropout

                require_dropout(self.model)
        except ValueError as exc:
            self._failed(what)(exc)
            return None
        predict_kwargs = {
            "overlap": self.overlap.value,
            "tta": self.tta.value,
            "device": self.device.value,
            "slicewise": slicewise,
        }
        return image_layer, image, predict_kwargs

    def predict(self) -> None:
        """Predict the image/stack into new layers on its grid (lazy ones block by block)."""
        inputs = self._prediction_inputs("U-Net prediction")
        if inputs is None:
            return
        image_layer, image, predict_kwargs = inputs
        model, probabilities = self.model, self.probability_layer.value
        job, job_kwargs = prediction_job(image, probabilities, model)
        self._start(
            "Predicting…",
            job,
            model,
            image,
            what="U-Net prediction",
            instances=self.instances.value,
            spacing=layer_spacing(image_layer),
            on_returned=lambda result: self._write_prediction(
                result, image_layer, model, probabilities
            ),
            progress={"total": 0, "desc": "U-Net prediction"},
            **predict_kwargs,
            **job_kwargs,
        )

    def suggest(self) -> None:
        """Rank planes (3D) or tiles (2D) by predictive entropy and list them."""
        from ..unet import suggest_events

        inputs = self._prediction_inputs("U-Net suggestions", self.mc_passes.value)
        if inputs is None:
            return
        image_layer, image, predict_kwargs = inputs
        self._start(
            "Predicting…",
            suggest_events,
            self.model,
            np.asarray(image),  # MC dropout over the whole image: loaded
            what="U-Net suggestions",
            k=self.suggest_k.value,
            mc_dropout=self.mc_passes.value,
            on_returned=lambda found: self._show_suggestions(found, image_layer),
            progress={"total": 0, "desc": "U-Net suggestions"},
            **predict_kwargs,
        )

    def _start(
        self, message: str, job, *args, what: str, on_yielded=None, on_cancelled=None, **kwargs
    ) -> None:
        """Run a core job in a worker thread with progress and the Cancel button.

        Errors become notifications and the status line; a cancelled job changes no layer.
        """
        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.status.setText(message)
        self._set_busy(True)
        self._worker = self.jobs.start(
            JOB,
            job,
            *args,
            what=what,
            on_yielded=on_yielded or self._show_progress,
            on_errored=lambda exc: self.status.setText(f"Failed: {exc}"),
            on_cancelled=on_cancelled
            or (lambda exc: self.status.setText("Cancelled; no layer changed.")),
            on_finished=lambda: self._set_busy(False),
            **kwargs,
        )

    def _show_progress(self, event) -> None:
        """Epochs done of the limit, or elapsed of the time budget (shown as seconds)."""
        if event.fraction is None:
            return
        self.progress.setValue(int(100 * event.fraction))
        budget = getattr(event, "budget_s", None)
        if budget and event.total <= 0:
            self.progress.setFormat(f"{event.elapsed:.0f} s of {budget:.0f} s")

    def _write_prediction(self, result, image_layer, model, probabilities: bool) -> None:
        name = add_prediction_layers(self.viewer, result, image_layer, model, probabilities)
        self.status.setText(f"Prediction in new layer {name!r}.")

    def _show_suggestions(self, suggestions, image_layer) -> None:
        self.sections["suggest"].expand(animate=False)
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
            error = ValueError("No model to save: train one or load one first.")
            return self._failed("Save model")(error)
        path, _ = QFileDialog.getSaveFileName(self, "Save U-Net model", "", "Model (*.pt)")
        if path:
            try:
                self.save_model(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                self._failed("Save model")(exc)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load U-Net model", "", "Model (*.pt)")
        if path:
            try:
                self.load_model(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                self._failed("Load model")(exc)

    def _describe_model(self) -> None:
        model_slot(self.viewer).set(self.model)  # the batch panel offers it
        self.model_info.setText(describe_model(self.model))

    # ----------------------------------------------------------------- common
    def _failed(self, what: str):
        def errored(exc: BaseException) -> None:
            self.status.setText(f"Failed: {exc}")
            notify_error(exc, what)

        return errored

    def _set_busy(self, busy: bool) -> None:
        if not busy:
            self._worker = None
        buttons = (self.train_button, self.predict_button, self.region_button)
        for button in (*buttons, self.suggest_button, self.load_button, self.save_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
