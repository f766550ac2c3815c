"""U-Net train / predict dock widget: paint labels, train, predict, correct, retrain.

A thin shell over :mod:`napari_seglab.unet`. It gathers an Image layer, a
Labels layer (optionally with an ignore value for sparse annotation) and the
training settings, runs :func:`~napari_seglab.unet.train_events` in a worker
thread while a live plot shows the loss and validation Dice per epoch, and
keeps the trained :class:`~napari_seglab.unet.SegmentationModel` as its
session object. Predict writes a new Labels layer (and optionally
probability Image layers, and an instance split); "Suggest" ranks planes or
tiles by predictive entropy and jumps there on click. Cancel and errors
change no layer.
"""

from __future__ import annotations

import threading

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..unet.architectures import ARCHITECTURE_NAMES
from ._controls import TrainingPlot, device_choices, float_box, int_box
from ._layers import (
    fill_combo,
    layer_spacing,
    layers_of_type,
    notify_error,
    show_info,
    spatial_image,
    start_job,
)

INSTANCE_CHOICES = ("none", "connected", "watershed")


def _prediction_job(model, image, *, instances, spacing, mc_passes=0, suggest_k=0, **kwargs):
    """Worker generator: predict (with progress), then post-process off the GUI thread.

    Returns a dict with ``probabilities``, ``labels`` and optionally
    ``instances`` or ``suggestions``; None when cancelled.
    """
    from ..unet import predict_events, probabilities_to_labels, suggest_slices, to_instances

    if mc_passes:
        total = None
        for _ in range(mc_passes):
            probs = yield from predict_events(model, image, mc_dropout=True, **kwargs)
            if probs is None:
                return None
            total = probs if total is None else total + probs
        probabilities = total / float(mc_passes)
    else:
        probabilities = yield from predict_events(model, image, **kwargs)
        if probabilities is None:
            return None
    result = {"probabilities": probabilities}
    if suggest_k:
        result["suggestions"] = suggest_slices(
            model, image, k=suggest_k, probabilities=probabilities
        )
        return result
    labels = probabilities_to_labels(probabilities, model.classes)
    result["labels"] = labels
    if instances != "none":
        result["instances"] = to_instances(
            labels, method=instances, background=model.classes[0], spacing=spacing
        )
    return result


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
        self._suggest_layer = None

        # ------------------------------------------------------------- data
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to train on and to predict.")
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Labels layer: each value is a class (0 = background).")
        self.use_ignore = QCheckBox("Ignore value")
        self.use_ignore.setToolTip(
            "Sparse annotation: pixels with this value are not annotated and are skipped by "
            "the loss. With ignore value 0, paint background as 1 and objects as 2, 3..."
        )
        self.ignore_value = int_box(0, -(2**31), 2**31 - 1, "Label value of unannotated pixels.")
        self.ignore_value.setEnabled(False)
        self.use_ignore.toggled.connect(self.ignore_value.setEnabled)
        self.binary = QCheckBox("Foreground vs background (labels > 0)")
        self.binary.setToolTip("Treat every non-zero label as one class (for instance labels).")

        # --------------------------------------------------------- training
        self.architecture = QComboBox()
        self.architecture.addItems(ARCHITECTURE_NAMES)
        self.architecture.setToolTip("MONAI network (small defaults for CPUs).")
        self.patch_size = QLineEdit()
        self.patch_size.setPlaceholderText("auto")
        self.patch_size.setToolTip("Window size, e.g. '128 128' or '16 64 64'; empty = auto.")
        self.epochs = int_box(30, 0, 100_000, "Maximum epochs (0: only the time budget).")
        self.time_budget = int_box(0, 0, 10**7, "Maximum seconds (0: no limit).", "no limit")
        self.batch_size = int_box(0, 0, 4096, "Patches per step (0: auto).", "auto")
        self.learning_rate = float_box(1e-3, 1e-6, 1.0, 1e-4, 6, "AdamW learning rate.")
        self.augment = QCheckBox("Augmentation")
        self.augment.setChecked(True)
        self.augment.setToolTip("Flips, rotations, affine/elastic deformation, intensity, noise.")
        self.device = QComboBox()
        self.device.addItems(device_choices())
        self.device.setToolTip("Where the network runs; auto: CUDA > MPS > CPU.")
        self.continue_training = QCheckBox("Continue from current model")
        self.continue_training.setToolTip("Start from the current model's weights (retrain).")
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.plot = TrainingPlot()

        # ------------------------------------------------------------ model
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.model_info = QLabel("No model yet.")
        self.model_info.setWordWrap(True)

        # ---------------------------------------------------------- predict
        self.overlap = float_box(0.5, 0.0, 0.95, 0.05, 2, "Window overlap (Gaussian blending).")
        self.tta = QCheckBox("Flip TTA")
        self.tta.setToolTip("Average predictions over flips (slower, smoother).")
        self.probability_layer = QCheckBox("Probability layer")
        self.probability_layer.setToolTip("Also add the class probabilities as Image layers.")
        self.instances = QComboBox()
        self.instances.addItems(INSTANCE_CHOICES)
        self.instances.setToolTip("Split the prediction into objects (one label per object).")
        self.predict_button = QPushButton("Predict")

        # ---------------------------------------------------------- suggest
        self.suggest_k = int_box(5, 1, 1000, "Number of planes / tiles to suggest.")
        self.mc_passes = int_box(0, 0, 100, "Monte-Carlo dropout passes (0: off).", "off")
        self.suggest_button = QPushButton("Suggest slices")
        self.suggestions = QListWidget()
        self.suggestions.setToolTip("Click to jump to the plane or tile.")
        self.suggestions.itemClicked.connect(self._jump)
        self.suggestions.setMaximumHeight(110)

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
        data_form = QFormLayout()
        data_form.addRow("Image", self.image_combo)
        data_form.addRow("Labels", self.labels_combo)
        ignore_row = QHBoxLayout()
        ignore_row.addWidget(self.use_ignore)
        ignore_row.addWidget(self.ignore_value)
        data_form.addRow(ignore_row)
        data_form.addRow(self.binary)

        train_form = QFormLayout()
        train_form.addRow("Architecture", self.architecture)
        train_form.addRow("Patch size", self.patch_size)
        train_form.addRow("Epochs", self.epochs)
        train_form.addRow("Time budget (s)", self.time_budget)
        train_form.addRow("Batch size", self.batch_size)
        train_form.addRow("Learning rate", self.learning_rate)
        train_form.addRow("Device", self.device)
        train_form.addRow(self.augment)
        train_form.addRow(self.continue_training)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        train_form.addRow(buttons)
        train_form.addRow(self.plot)

        model_row = QHBoxLayout()
        model_row.addWidget(self.save_button)
        model_row.addWidget(self.load_button)
        model_box = QVBoxLayout()
        model_box.addLayout(model_row)
        model_box.addWidget(self.model_info)

        predict_form = QFormLayout()
        predict_form.addRow("Overlap", self.overlap)
        predict_form.addRow("Instances", self.instances)
        predict_form.addRow(self.tta)
        predict_form.addRow(self.probability_layer)
        predict_form.addRow(self.predict_button)

        suggest_form = QFormLayout()
        suggest_form.addRow("How many", self.suggest_k)
        suggest_form.addRow("MC dropout", self.mc_passes)
        suggest_form.addRow(self.suggest_button)
        suggest_form.addRow(self.suggestions)

        layout = QVBoxLayout(self)
        for title, inner in (
            ("Data", data_form),
            ("Training", train_form),
            ("Model", model_box),
            ("Predict", predict_form),
            ("Annotate next", suggest_form),
        ):
            group = QGroupBox(title)
            group.setLayout(inner)
            layout.addWidget(group)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ----------------------------------------------------------------- layers
    def _refresh_layers(self, event=None) -> None:
        images = [layer.name for layer in layers_of_type(self.viewer, Image)]
        labels = [layer.name for layer in layers_of_type(self.viewer, Labels)]
        fill_combo(self.image_combo, images)
        fill_combo(self.labels_combo, labels)

    def _layer(self, combo: QComboBox, kind: str):
        name = combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError(f"Expected an {kind} layer; add one to the viewer first.")
        return self.viewer.layers[name]

    # ------------------------------------------------------------- settings
    def training_settings(self) -> dict:
        """Keyword arguments for :func:`~napari_seglab.unet.train_events` from the form."""
        text = self.patch_size.text().replace(",", " ").split()
        try:
            patch = tuple(int(t) for t in text) or None
        except ValueError:
            raise ValueError(
                "Expected the patch size as integers like '128 128', "
                f"got {self.patch_size.text()!r}."
            ) from None
        epochs = self.epochs.value() or None
        budget = float(self.time_budget.value()) or None
        if epochs is None and budget is None:
            raise ValueError("Expected a number of epochs or a time budget; both are 0.")
        return {
            "architecture": self.architecture.currentText(),
            "patch_size": patch,
            "max_epochs": epochs,
            "time_budget_s": budget,
            "batch_size": self.batch_size.value() or None,
            "learning_rate": self.learning_rate.value(),
            "augment": self.augment.isChecked(),
            "device": self.device.currentText(),
            "ignore_label": self.ignore_value.value() if self.use_ignore.isChecked() else None,
        }

    def _image_and_labels(self):
        image_layer = self._layer(self.image_combo, "Image")
        labels_layer = self._layer(self.labels_combo, "Labels")
        data, rgb = spatial_image(image_layer)
        labels = np.asarray(labels_layer.data[0] if labels_layer.multiscale else labels_layer.data)
        if self.binary.isChecked():
            labels = (labels > 0).astype(np.uint8)
        return image_layer, np.asarray(data), rgb, labels

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Start training in a worker thread; the plot updates after every epoch."""
        from ..unet import train_events

        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        try:
            settings = self.training_settings()
            image_layer, image, rgb, labels = self._image_and_labels()
        except ValueError as exc:
            notify_error(exc, "U-Net training")
            return
        spacing = layer_spacing(image_layer)
        initial = self.model if self.continue_training.isChecked() else None
        self._cancel = threading.Event()
        self.plot.clear()
        self.progress.setValue(0)
        self.status.setText("Training…")
        self._set_busy(True)
        epochs = settings["max_epochs"]

        def on_epoch(event) -> None:
            self.plot.add(event.epoch, event.loss, event.val_dice)
            if epochs:
                self.progress.setValue(int(100 * event.epoch / epochs))
            dice = "-" if event.val_dice is None else f"{event.val_dice:.3f}"
            self.status.setText(
                f"Epoch {event.epoch}: loss {event.loss:.4f}, val Dice {dice}, "
                f"{event.seconds:.0f} s"
            )

        def on_returned(model) -> None:
            if model is None:
                self.status.setText("Training cancelled before the first epoch; model unchanged.")
                return
            self.model = model
            note = " (cancelled; best epoch kept)" if self._cancel.is_set() else ""
            self.status.setText(f"Training finished{note}.")
            self._describe_model()

        self._worker = start_job(
            train_events,
            image,
            labels,
            rgb=True if rgb else None,
            spacing=spacing,
            initial_model=initial,
            cancel=self._cancel,
            on_yielded=on_epoch,
            on_returned=on_returned,
            on_errored=self._failed("U-Net training"),
            on_finished=lambda: self._set_busy(False),
            progress={"total": epochs or 0, "desc": "U-Net training"},
            **settings,
        )

    def cancel(self) -> None:
        """Ask the running job to stop; no layer changes."""
        self._cancel.set()
        self.status.setText("Cancelling…")

    # ---------------------------------------------------------------- predict
    def _prediction_inputs(self):
        if self.model is None:
            raise ValueError("Expected a model: train one or load one first.")
        image_layer = self._layer(self.image_combo, "Image")
        data, rgb = spatial_image(image_layer)
        image = np.asarray(data)
        spatial_ndim = image.ndim - (1 if rgb else 0)
        slicewise = self.model.spatial_dims == 2 and spatial_ndim == 3
        return image_layer, image, slicewise

    def predict(self) -> None:
        """Predict the whole image/stack into a new Labels layer (worker thread)."""
        try:
            image_layer, image, slicewise = self._prediction_inputs()
            self.model.check_input(image, slicewise=slicewise)
        except ValueError as exc:
            notify_error(exc, "U-Net prediction")
            return
        self._start_prediction(
            image_layer,
            image,
            slicewise,
            lambda result: self._write_prediction(result, image_layer),
            instances=self.instances.currentText(),
        )

    def suggest(self) -> None:
        """Rank planes (3D) or tiles (2D) by predictive entropy and list them."""
        try:
            image_layer, image, slicewise = self._prediction_inputs()
            self.model.check_input(image, slicewise=slicewise)
        except ValueError as exc:
            notify_error(exc, "U-Net suggestions")
            return
        self._start_prediction(
            image_layer,
            image,
            slicewise,
            lambda result: self._show_suggestions(result["suggestions"], image_layer),
            instances="none",
            mc_passes=self.mc_passes.value(),
            suggest_k=self.suggest_k.value(),
        )

    def _start_prediction(self, image_layer, image, slicewise, on_result, **job) -> None:
        if self._worker is not None:
            show_info("A U-Net job is already running.")
            return
        self._cancel = threading.Event()
        self.progress.setValue(0)
        self.status.setText("Predicting…")
        self._set_busy(True)

        def on_progress(event) -> None:
            self.progress.setValue(int(100 * event.fraction))

        def on_returned(result) -> None:
            if result is None:
                self.status.setText("Cancelled; no layer changed.")
                return
            on_result(result)

        self._worker = start_job(
            _prediction_job,
            self.model,
            image,
            spacing=layer_spacing(image_layer)[-(image.ndim - (1 if image_layer.rgb else 0)) :],
            overlap=self.overlap.value(),
            tta=self.tta.isChecked(),
            device=self.device.currentText(),
            slicewise=slicewise,
            cancel=self._cancel,
            on_yielded=on_progress,
            on_returned=on_returned,
            on_errored=self._failed("U-Net prediction"),
            on_finished=lambda: self._set_busy(False),
            progress={"total": 0, "desc": "U-Net prediction"},
            **job,
        )

    def _write_prediction(self, result: dict, image_layer) -> None:
        scale = image_layer.scale[-result["labels"].ndim :]
        translate = image_layer.translate[-result["labels"].ndim :]
        name = f"{image_layer.name} U-Net"
        self.viewer.add_labels(result["labels"], name=name, scale=scale, translate=translate)
        if "instances" in result:
            self.viewer.add_labels(
                result["instances"], name=f"{name} objects", scale=scale, translate=translate
            )
        if self.probability_layer.isChecked():
            probs = result["probabilities"]
            for channel, value in enumerate(self.model.classes):
                if channel == 0:
                    continue  # background probability is 1 - the rest
                self.viewer.add_image(
                    probs[channel],
                    name=f"{name} P(label {value})",
                    scale=scale,
                    translate=translate,
                    colormap="magma",
                    contrast_limits=(0.0, 1.0),
                    blending="additive",
                    visible=False,
                )
        self.status.setText(f"Prediction in new layer {name!r}.")

    # ---------------------------------------------------------------- suggest
    def _show_suggestions(self, suggestions, image_layer) -> None:
        self.suggestions.clear()
        self._suggest_layer = image_layer
        for suggestion in suggestions:
            item = QListWidgetItem(suggestion.describe())
            item.setData(Qt.ItemDataRole.UserRole, suggestion)
            self.suggestions.addItem(item)
        self.status.setText(f"{len(suggestions)} suggestions: click one to go there.")

    def _jump(self, item: QListWidgetItem) -> None:
        suggestion = item.data(Qt.ItemDataRole.UserRole)
        layer = self._suggest_layer
        if suggestion is None or layer is None or layer not in self.viewer.layers:
            return
        spatial = 2 if suggestion.box is not None else 3
        first = layer.ndim - spatial  # the layer's spatial axes are its last ones
        data_point = np.zeros(layer.ndim)
        if suggestion.box is None:
            data_point[first + suggestion.axis] = suggestion.plane
            world = layer.data_to_world(data_point)
            world_axis = self.viewer.dims.ndim - layer.ndim + first + suggestion.axis
            self.viewer.dims.set_point(world_axis, world[first + suggestion.axis])
        else:
            data_point[first:] = suggestion.center
            world = layer.data_to_world(data_point)
            self.viewer.camera.center = tuple(world[first:])

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
        best = ""
        dices = [h["val_dice"] for h in m.history if h.get("val_dice") is not None]
        if dices:
            best = f", best val Dice {max(dices):.3f}"
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
