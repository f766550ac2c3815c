"""CRF refinement dock widget: snap a probability map or a label layer to image edges.

A thin shell over :mod:`napari_seglab.crf`: it gathers an Image layer, the
input (a probability Image layer ``(C, [Z,] Y, X)`` or ``([Z,] Y, X)``, or a
Labels layer) and the parameters, runs ``refine_steps`` /
``refine_labels_steps`` in a worker thread, and writes the result into a new
Labels layer or back into the input Labels layer as one undoable step.
"""

from __future__ import annotations

import threading

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import crf
from ..jobs import JobCancelled
from ._controls import float_box
from ._layers import (
    current_plane,
    fill_combo,
    layer_spacing,
    layers_of_type,
    notify_error,
    replace_labels,
    show_info,
    spatial_image,
    start_job,
)

NEW_LAYER = "New Labels layer"
REPLACE_INPUT = "Replace input labels (Ctrl+Z undoes)"
PREVIEW_NAME = "CRF preview"


class CrfWidget(QWidget):
    """Dense CRF refinement of a probability map or a label layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None
        self._cancel = threading.Event()
        defaults = crf.CrfParameters()

        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image whose edges the result should follow.")
        self.input_combo = QComboBox()
        self.input_combo.setToolTip(
            "What to refine: a Labels layer (e.g. from SAM) or a probability Image layer "
            "(classes first, (C, [Z,] Y, X), or one foreground map shaped like the image)."
        )
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["instance", "semantic"])
        self.mode_combo.setToolTip(
            "Labels only. instance: refine each object inside its bounding box (objects never "
            "merge, keep their numbers). semantic: one CRF over all classes jointly."
        )
        self.confidence = float_box(
            crf.DEFAULT_CONFIDENCE,
            0.51,
            0.99,
            0.05,
            2,
            "Labels only: probability that a given label is right. Lower lets the image move "
            "boundaries further.",
        )
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 50)
        self.iterations.setValue(defaults.iterations)
        self.iterations.setToolTip("Mean-field iterations (results change little after 5).")
        self.spatial_sigma = float_box(
            0.0,
            0.0,
            1000.0,
            0.5,
            2,
            "Width of the edge-following (bilateral) kernel in the layer's physical units "
            "(scale). auto: 5 x the finest voxel size.",
        )
        self.spatial_sigma.setSpecialValueText("auto")
        self.intensity_sigma = float_box(
            defaults.intensity_sigma,
            0.01,
            1.0,
            0.01,
            3,
            "How different two intensities may be and still pull towards the same label, on "
            "the image scaled to [0, 1] between its 1st and 99.8th percentile.",
        )
        self.bilateral_weight = float_box(
            defaults.bilateral_weight,
            0.0,
            200.0,
            1.0,
            1,
            "Strength of the edge-following kernel; 0 turns it off.",
        )
        self.smoothness_sigma = float_box(
            0.0,
            0.0,
            1000.0,
            0.5,
            2,
            "Width of the smoothness kernel in physical units. auto: 1 x the finest voxel size.",
        )
        self.smoothness_sigma.setSpecialValueText("auto")
        self.smoothness_weight = float_box(
            defaults.smoothness_weight,
            0.0,
            200.0,
            1.0,
            1,
            "Strength of the smoothness kernel (removes isolated pixels); 0 turns it off.",
        )
        self.output_combo = QComboBox()
        self.output_combo.setToolTip(
            "Where 'Apply to all' writes: a new Labels layer, or back into the input Labels "
            "layer as one step that Ctrl+Z undoes."
        )

        self.preview_button = QPushButton("Preview on current plane")
        self.preview_button.setToolTip(
            f"Refine only the plane on screen and show it in a '{PREVIEW_NAME}' layer."
        )
        self.apply_button = QPushButton("Apply to all")
        self.apply_button.setToolTip("Refine the whole image or stack.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Refine", self.input_combo)
        form.addRow("Labels mode", self.mode_combo)
        form.addRow("Confidence", self.confidence)
        form.addRow("Iterations", self.iterations)
        form.addRow("Edge kernel width", self.spatial_sigma)
        form.addRow("Intensity width", self.intensity_sigma)
        form.addRow("Edge kernel weight", self.bilateral_weight)
        form.addRow("Smoothness width", self.smoothness_sigma)
        form.addRow("Smoothness weight", self.smoothness_weight)
        form.addRow("Output", self.output_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.preview_button.clicked.connect(self.preview)
        self.apply_button.clicked.connect(self.apply)
        self.cancel_button.clicked.connect(self.cancel)
        self.input_combo.currentTextChanged.connect(self._input_changed)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ----------------------------------------------------------------- layers
    def _refresh_layers(self, event=None) -> None:
        images = [
            layer.name
            for layer in layers_of_type(self.viewer, Image)
            if layer.name != PREVIEW_NAME
        ]
        inputs = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, (Image, Labels)) and layer.name != PREVIEW_NAME
        ]
        labels = [n for n in inputs if isinstance(self.viewer.layers[n], Labels)]
        fill_combo(self.image_combo, images)
        fill_combo(self.input_combo, inputs, default=labels[-1] if labels else None)
        self._input_changed()

    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("Expected an Image layer and a layer to refine; add them first.")
        return self.viewer.layers[name]

    def _input_changed(self, *args) -> None:
        name = self.input_combo.currentText()
        is_labels = name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels)
        self.mode_combo.setEnabled(is_labels)
        self.confidence.setEnabled(is_labels)
        current = self.output_combo.currentText()
        self.output_combo.clear()
        self.output_combo.addItems([NEW_LAYER, REPLACE_INPUT] if is_labels else [NEW_LAYER])
        if current and self.output_combo.findText(current) >= 0:
            self.output_combo.setCurrentText(current)

    # ------------------------------------------------------------- parameters
    def parameters(self) -> dict:
        """Keyword arguments for ``crf.refine`` from the form (``None`` means auto)."""
        return {
            "iterations": self.iterations.value(),
            "spatial_sigma": self.spatial_sigma.value() or None,
            "intensity_sigma": self.intensity_sigma.value(),
            "bilateral_weight": self.bilateral_weight.value(),
            "smoothness_sigma": self.smoothness_sigma.value() or None,
            "smoothness_weight": self.smoothness_weight.value(),
        }

    def _inputs(self, plane: int | None):
        """Arrays for the core: (image, given, spacing, is_labels), one plane or all."""
        image_layer, given_layer = self._layer(self.image_combo), self._layer(self.input_combo)
        data, rgb = spatial_image(image_layer)
        image = np.asarray(data if plane is None else data[plane])
        spatial = image.shape[:-1] if rgb else image.shape
        spacing = layer_spacing(image_layer)
        if plane is not None:
            spacing = spacing[1:]
        is_labels = isinstance(given_layer, Labels)
        given = given_layer.data[0] if given_layer.multiscale else given_layer.data
        if is_labels:
            given = np.asarray(given if plane is None else given[plane])
        else:
            full = (image_layer.data[0] if image_layer.multiscale else image_layer.data).shape
            full_spatial = full[:-1] if rgb else full
            if given.shape == full_spatial:
                given = np.asarray(given if plane is None else given[plane])[np.newaxis]
            elif given.shape[1:] == full_spatial:
                given = np.asarray(given if plane is None else given[:, plane])
            else:
                raise ValueError(
                    f"Expected probabilities of shape {full_spatial} or (C, *{full_spatial}) "
                    f"to match image {image_layer.name!r}, got {given.shape} in layer "
                    f"{given_layer.name!r}."
                )
        if is_labels and given.shape != spatial:
            raise ValueError(
                f"Expected labels of shape {spatial} to match image {image_layer.name!r}, "
                f"got {given.shape} in layer {given_layer.name!r}."
            )
        return image, given, spacing, is_labels

    # ------------------------------------------------------------------- jobs
    def preview(self) -> None:
        """Refine the plane on screen into the preview layer."""
        try:
            image_layer = self._layer(self.image_combo)
            plane = current_plane(self.viewer, image_layer)
            inputs = self._inputs(plane)
        except ValueError as exc:
            notify_error(exc, "CRF refinement")
            return
        self._start(inputs, lambda result: self._show_preview(result, image_layer, plane))

    def apply(self) -> None:
        """Refine the whole image or stack and write the result."""
        try:
            image_layer, target = self._layer(self.image_combo), self._layer(self.input_combo)
            inputs = self._inputs(None)
        except ValueError as exc:
            notify_error(exc, "CRF refinement")
            return
        replace = self.output_combo.currentText() == REPLACE_INPUT
        self._start(inputs, lambda result: self._write(result, image_layer, target, replace))

    def cancel(self) -> None:
        """Ask the running job to stop; no layer changes."""
        self._cancel.set()
        self.status.setText("Cancelling…")

    def _start(self, inputs, on_result) -> None:
        if self._worker is not None:
            show_info("CRF refinement is already running.")
            return
        image, given, spacing, is_labels = inputs
        self._cancel = threading.Event()
        kwargs = dict(self.parameters(), spacing=spacing, cancel=self._cancel)
        if is_labels:
            function = crf.refine_labels_steps
            kwargs.update(confidence=self.confidence.value(), mode=self.mode_combo.currentText())
        else:
            function = crf.refine_steps
        self._set_busy(True)
        self.progress.setValue(0)
        self.status.setText("Refining…")

        def errored(exc: BaseException) -> None:
            if isinstance(exc, JobCancelled):
                self.status.setText("Cancelled; no layer changed.")
                return
            self.status.setText(f"Failed: {exc}")
            notify_error(exc, "CRF refinement")

        self._worker = start_job(
            function,
            image,
            given,
            on_yielded=self._progress,
            on_returned=on_result,
            on_errored=errored,
            on_finished=lambda: self._set_busy(False),
            **kwargs,
        )

    def _progress(self, event) -> None:
        self.progress.setValue(int(100 * event.done / max(event.total, 1)))
        self.status.setText(event.message)

    def _set_busy(self, busy: bool) -> None:
        if not busy:
            self._worker = None
        self.preview_button.setEnabled(not busy)
        self.apply_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # ---------------------------------------------------------------- results
    def _show_preview(self, result: np.ndarray, image_layer, plane: int | None) -> None:
        if plane is None:
            full = result
        else:
            full = np.zeros((image_layer.data.shape[0], *result.shape), dtype=result.dtype)
            full[plane] = result
        if PREVIEW_NAME in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_NAME]
            if layer.data.shape == full.shape and layer.data.dtype == full.dtype:
                layer.data = full
                self.status.setText("Preview updated.")
                return
            self.viewer.layers.remove(layer)
        self.viewer.add_labels(
            full,
            name=PREVIEW_NAME,
            scale=image_layer.scale,
            translate=image_layer.translate,
            opacity=0.6,
        )
        self.status.setText("Preview ready.")

    def _write(self, result: np.ndarray, image_layer, target, replace: bool) -> None:
        if replace and isinstance(target, Labels):
            changed = replace_labels(target, result.astype(target.data.dtype, copy=False))
            self.status.setText(f"Refined {target.name!r}: {changed} voxels changed (Ctrl+Z).")
            return
        name = f"{target.name} CRF"
        self.viewer.add_labels(
            result, name=name, scale=image_layer.scale, translate=image_layer.translate
        )
        self.status.setText(f"Result in new layer {name!r}.")
