"""Pieces of the U-Net dock widget: data, training and prediction forms, suggestions.

Each maps its controls to arguments of a core function and back; the widget
(:mod:`napari_seglab._widgets.unet`) only composes them and runs the core jobs.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from ..unet.architectures import ARCHITECTURE_NAMES
from ..unet.postprocess import INSTANCE_METHODS
from ._controls import device_choices, float_box, int_box
from ._layers import fill_combo, layers_of_type, spatial_image


class DataForm(QWidget):
    """Which layers to train on and how to read the labels (sparse, instance)."""

    def __init__(self) -> None:
        super().__init__()
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

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        ignore_row = QHBoxLayout()
        ignore_row.addWidget(self.use_ignore)
        ignore_row.addWidget(self.ignore_value)
        form.addRow(ignore_row)
        form.addRow(self.binary)

    def refresh(self, viewer) -> None:
        """Offer the viewer's Image and Labels layers."""
        fill_combo(self.image_combo, [x.name for x in layers_of_type(viewer, Image)])
        fill_combo(self.labels_combo, [x.name for x in layers_of_type(viewer, Labels)])

    def image_layer(self, viewer):
        """The chosen Image layer; ``ValueError`` when there is none."""
        return _chosen(viewer, self.image_combo, "Image")

    def ignore_label(self) -> int | None:
        """Label value of unannotated pixels, or None."""
        return self.ignore_value.value() if self.use_ignore.isChecked() else None

    def training_data(self, viewer):
        """``(image_layer, image, rgb, labels)``; labels are ``labels > 0`` when binary."""
        image_layer = self.image_layer(viewer)
        labels_layer = _chosen(viewer, self.labels_combo, "Labels")
        data, rgb = spatial_image(image_layer)
        labels = np.asarray(labels_layer.data[0] if labels_layer.multiscale else labels_layer.data)
        if self.binary.isChecked():
            labels = (labels > 0).astype(np.uint8)
        return image_layer, np.asarray(data), rgb, labels


def _chosen(viewer, combo: QComboBox, kind: str):
    name = combo.currentText()
    if not name or name not in viewer.layers:
        raise ValueError(f"Expected an {kind} layer; add one to the viewer first.")
    return viewer.layers[name]


class TrainingForm(QWidget):
    """Training settings: network, window, limits, optimiser, device.

    :meth:`settings` turns them into keyword arguments of
    :func:`~napari_seglab.unet.train_events`.
    """

    def __init__(self) -> None:
        super().__init__()
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

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Architecture", self.architecture)
        form.addRow("Patch size", self.patch_size)
        form.addRow("Epochs", self.epochs)
        form.addRow("Time budget (s)", self.time_budget)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Device", self.device)
        form.addRow(self.augment)
        form.addRow(self.continue_training)

    def settings(self) -> dict:
        """Keyword arguments for :func:`~napari_seglab.unet.train_events`.

        Raises
        ------
        ValueError
            For a patch size that is not integers, or neither epochs nor a time budget.
        """
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
        }


class PredictionForm(QWidget):
    """Prediction settings: window overlap, flip TTA, instance split, probability layers."""

    def __init__(self) -> None:
        super().__init__()
        self.overlap = float_box(0.5, 0.0, 0.95, 0.05, 2, "Window overlap (Gaussian blending).")
        self.tta = QCheckBox("Flip TTA")
        self.tta.setToolTip("Average predictions over flips (slower, smoother).")
        self.probability_layer = QCheckBox("Probability layer")
        self.probability_layer.setToolTip("Also add the class probabilities as Image layers.")
        self.instances = QComboBox()
        self.instances.addItems(INSTANCE_METHODS)
        self.instances.setToolTip("Split the prediction into objects (one label per object).")
        self.predict_button = QPushButton("Predict")

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Overlap", self.overlap)
        form.addRow("Instances", self.instances)
        form.addRow(self.tta)
        form.addRow(self.probability_layer)
        form.addRow(self.predict_button)


def add_prediction_layers(viewer, result, image_layer, classes, probabilities: bool) -> str:
    """Add a :class:`~napari_seglab.unet.Prediction` as new layers on ``image_layer``'s grid.

    Labels as ``"<image> U-Net"``, objects as ``"... objects"``, and with
    ``probabilities`` one hidden Image layer per foreground class. Returns the
    labels layer's name.
    """
    scale = image_layer.scale[-result.labels.ndim :]
    translate = image_layer.translate[-result.labels.ndim :]
    name = f"{image_layer.name} U-Net"
    viewer.add_labels(result.labels, name=name, scale=scale, translate=translate)
    if result.instances is not None:
        viewer.add_labels(
            result.instances, name=f"{name} objects", scale=scale, translate=translate
        )
    if probabilities:
        for channel, value in enumerate(classes):
            if channel == 0:
                continue  # background probability is 1 - the rest
            viewer.add_image(
                result.probabilities[channel],
                name=f"{name} P(label {value})",
                scale=scale,
                translate=translate,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=False,
            )
    return name


class SuggestionList(QListWidget):
    """Suggestions of :func:`~napari_seglab.unet.suggest_events`; a click moves the viewer there.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.layer = None
        self.setToolTip("Click to jump to the plane or tile.")
        self.setMaximumHeight(110)
        self.itemClicked.connect(self.jump)

    def show_suggestions(self, suggestions, layer) -> None:
        """List ``suggestions`` (computed on ``layer``'s data), most uncertain first."""
        self.clear()
        self.layer = layer
        for suggestion in suggestions:
            item = QListWidgetItem(suggestion.describe())
            item.setData(Qt.ItemDataRole.UserRole, suggestion)
            self.addItem(item)

    def jump(self, item: QListWidgetItem) -> None:
        """Show the suggestion's plane (3D) or centre the camera on its tile (2D)."""
        suggestion = item.data(Qt.ItemDataRole.UserRole)
        layer = self.layer
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
