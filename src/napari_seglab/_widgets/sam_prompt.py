"""SAM prompting dock widget: click, see the mask, commit, next object.

A thin shell over :mod:`napari_seglab.sam`: it gathers prompts from a Points
layer (click = positive, Shift+click = negative) and a Shapes layer
(rectangle = box), runs the prompt in a worker thread, shows the proposal in a
preview Labels layer and commits it into the target Labels layer through
napari's undo history. On a stack, prompting works on the plane the viewer
shows; neighbouring planes are embedded in the background, and "Propagate"
extends the object through the stack.

Shortcuts (while the "SAM points" layer is selected): Enter commits, Escape
clears the prompts, N shows the next proposal.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from functools import partial
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..sam import EmbeddingCache, PromptSegmenter, SamInput, precompute_embeddings
from ..sam.propagate import propagate_steps
from ._controls import device_choices
from ._layers import (
    commit_object,
    current_plane,
    fill_combo,
    layers_of_type,
    notify_error,
    show_info,
    show_warning,
    spatial_image,
    start_job,
    write_labels,
)

NEW_LABELS = "<new labels layer>"
POSITIVE_COLOUR = np.array([0.1, 0.9, 0.2, 1.0])
NEGATIVE_COLOUR = np.array([1.0, 0.1, 0.6, 1.0])
NEGATIVE_MODIFIER = "Shift"
NEIGHBOURS = 4  # planes on each side embedded in the background
HELP = (
    "Click: positive point · Shift+click: negative point · rectangle in 'SAM box': box prompt.<br>"
    "Keys (with 'SAM points' selected): <b>Enter</b> commit · <b>Esc</b> clear · "
    "<b>N</b> next proposal."
)


def _cancel_all(events: list[threading.Event]) -> None:
    """Stop background jobs when the widget is deleted (holds no reference to it)."""
    for event in events:
        event.set()


def _prompt_for_plane(
    points: Points | None, shapes: Shapes | None, plane: int | None
) -> dict[str, Any]:
    """Prompt arguments for :meth:`PromptSegmenter.predict` from the prompt layers.

    Points and boxes lie in the image's data coordinates (the prompt layers share
    its scale and translate); on a stack only those on ``plane`` count.
    """
    prompt: dict[str, Any] = {}
    if points is not None and len(points.data):
        coords = np.asarray(points.data, dtype=float)
        positive = np.asarray(points.features.get("positive", np.ones(len(coords), bool)))
        if plane is not None:
            keep = np.round(coords[:, 0]) == plane
            coords, positive = coords[keep, 1:], positive[keep]
        if len(coords):
            prompt["points"] = coords[:, -2:]
            prompt["labels"] = positive.astype(int)
    if shapes is not None and len(shapes.data):
        for vertices, kind in zip(reversed(shapes.data), reversed(shapes.shape_type)):
            vertices = np.asarray(vertices, dtype=float)
            if kind != "rectangle":
                continue
            if plane is not None and not np.all(np.round(vertices[:, 0]) == plane):
                continue
            rc = vertices[:, -2:]
            prompt["box"] = (*rc.min(axis=0), *rc.max(axis=0))
            break
    return prompt


def _predict_job(segmenter: PromptSegmenter, source: SamInput, plane: int | None, prompt: dict):
    """Worker body: embed (cached) and prompt; returns ``(plane, prediction)``."""
    yield "embedding"
    segmenter.set_image(source, plane)
    prediction = segmenter.predict(**prompt)
    _ = prediction.mask  # upsample the shown proposal off the GUI thread
    return plane, prediction


def _load_job(model_type: str, checkpoint: str, decoder: str, device: str):
    from ..sam import load_model

    yield "loading"
    return load_model(
        model_type,
        checkpoint=checkpoint or None,
        device=device,
        decoder_checkpoint=decoder or None,
        progress=False,
    )


class SamPromptWidget(QWidget):
    """Interactive SAM segmentation into a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    model : SamModel or None
        Set by "Load model" or programmatically with :meth:`set_model`.
    prediction : Prediction or None
        The proposals for the current prompts.
    proposal : int
        Index of the proposal shown in the preview.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.cache = EmbeddingCache(max_items=32)
        self.model = None
        self.segmenter: PromptSegmenter | None = None
        self.prediction = None
        self.proposal = 0
        self.points_layer: Points | None = None
        self.box_layer: Shapes | None = None
        self.preview_layer: Labels | None = None
        self._source: SamInput | None = None
        self._source_layer: Image | None = None
        self._prediction_plane: int | None = None
        self._last_object: tuple[Labels, int] | None = None
        self._worker = None
        self._pending = False
        self._generation = 0
        self._precompute_worker = None
        self._precompute_cancel = threading.Event()
        self._cancel_events: list[threading.Event] = []
        self.destroyed.connect(partial(_cancel_all, self._cancel_events))
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._on_plane_changed)
        self._refresh_layer_choices()

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        self.model_combo = QComboBox()
        self.model_combo.addItems(["vit_b", "vit_l", "vit_h", "medsam"])
        form.addRow("Model", self.model_combo)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("registry file (downloaded once)")
        form.addRow("Checkpoint", self.checkpoint_edit)
        self.decoder_edit = QLineEdit()
        self.decoder_edit.setPlaceholderText("optional fine-tuned decoder .pth")
        form.addRow("Decoder", self.decoder_edit)
        self.device_combo = QComboBox()
        self.device_combo.addItems(device_choices())
        form.addRow("Device", self.device_combo)
        layout.addLayout(form)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        layout.addWidget(self.load_button)
        self.warning_label = QLabel("")
        self.warning_label.setStyleSheet("color: #e0a000")
        self.warning_label.setWordWrap(True)
        self.warning_label.setVisible(False)
        layout.addWidget(self.warning_label)
        self.start_button = QPushButton("Start prompting")
        self.start_button.clicked.connect(self.start)
        layout.addWidget(self.start_button)
        self.help_label = QLabel(HELP)
        self.help_label.setWordWrap(True)
        layout.addWidget(self.help_label)
        self.scores_label = QLabel("No prediction yet.")
        layout.addWidget(self.scores_label)
        row = QHBoxLayout()
        self.next_button = QPushButton("Next proposal (N)")
        self.next_button.clicked.connect(self.next_proposal)
        self.commit_button = QPushButton("Commit (Enter)")
        self.commit_button.clicked.connect(self.commit)
        self.clear_button = QPushButton("Clear (Esc)")
        self.clear_button.clicked.connect(self.clear_prompts)
        for button in (self.next_button, self.commit_button, self.clear_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.overwrite_check = QCheckBox("Overwrite existing labels")
        layout.addWidget(self.overwrite_check)
        self.precompute_check = QCheckBox(f"Embed ±{NEIGHBOURS} neighbouring planes in background")
        self.precompute_check.setChecked(True)
        layout.addWidget(self.precompute_check)
        self.propagate_button = QPushButton("Propagate through stack")
        self.propagate_button.clicked.connect(self.propagate)
        layout.addWidget(self.propagate_button)
        self.status_label = QLabel("Load a model to start.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

    def _refresh_layer_choices(self, event=None) -> None:
        own = {self.points_layer, self.box_layer, self.preview_layer}
        for combo, kind, extra in (
            (self.image_combo, Image, []),
            (self.labels_combo, Labels, [NEW_LABELS]),
        ):
            names = [layer.name for layer in layers_of_type(self.viewer, kind) if layer not in own]
            fill_combo(combo, names + extra)

    def _set_status(self, text: str) -> None:
        with suppress(RuntimeError):  # a worker reported after the viewer closed the widget
            self.status_label.setText(text)

    # -- model -----------------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the chosen model in a worker (downloads and verifies on first use)."""
        self._set_status(f"Loading {self.model_combo.currentText()}…")
        self.load_button.setEnabled(False)
        start_job(
            _load_job,
            self.model_combo.currentText(),
            self.checkpoint_edit.text().strip(),
            self.decoder_edit.text().strip(),
            self.device_combo.currentText(),
            on_returned=self.set_model,
            on_errored=self._on_load_error,
            on_finished=lambda: self.load_button.setEnabled(True),
        )

    def _on_load_error(self, exc: BaseException) -> None:
        notify_error(exc, "SAM model")
        self._set_status(f"Model not loaded: {exc}")

    def set_model(self, model) -> None:
        """Use ``model`` (a :class:`~napari_seglab.sam.SamModel`) for prompting."""
        self._stop_precompute()
        self.model = model
        self.segmenter = PromptSegmenter(model, self.cache)
        large_on_cpu = model.is_large_encoder and model.device.type == "cpu"
        message = (
            f"{model.name} runs its large encoder on the CPU: each new plane takes tens of "
            "seconds to embed. vit_b is much faster."
        )
        self.warning_label.setText(message if large_on_cpu else "")
        self.warning_label.setVisible(large_on_cpu)
        if large_on_cpu:
            show_warning(message)
        self._set_status(f"Model {model.name} on {model.device}. Press 'Start prompting'.")

    # -- prompt layers -----------------------------------------------------------------------
    def image_layer(self) -> Image:
        """The chosen image layer (raises ValueError when there is none)."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("Choose an image layer to segment.")
        return self.viewer.layers[name]

    def start(self) -> None:
        """Create (or reset) the prompt and preview layers over the chosen image."""
        try:
            if self.segmenter is None:
                raise RuntimeError("Load a model first.")
            image = self.image_layer()
        except (ValueError, RuntimeError) as exc:
            notify_error(exc, "SAM prompting")
            return
        data, rgb = spatial_image(image)
        self._source = SamInput(data, rgb=rgb)
        self._source_layer = image
        ndim = 3 if self._source.is_stack else 2
        geometry = {"scale": image.scale[:ndim], "translate": image.translate[:ndim]}
        for layer in (self.points_layer, self.box_layer, self.preview_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        shape = (
            (self._source.n_planes, *self._source.plane_shape)
            if self._source.is_stack
            else self._source.plane_shape
        )
        self.preview_layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint8), name="SAM preview", opacity=0.5, **geometry
        )
        self.box_layer = self.viewer.add_shapes(
            ndim=ndim, name="SAM box", face_color="transparent", edge_color="yellow", **geometry
        )
        self.points_layer = self.viewer.add_points(
            ndim=ndim,
            name="SAM points",
            size=max(3.0, min(self._source.plane_shape) / 60),
            features={"positive": np.zeros(0, dtype=bool)},
            feature_defaults={"positive": True},
            **geometry,
        )
        self.points_layer.mode = "add"
        self.points_layer.mouse_drag_callbacks.append(self._remember_modifier)
        self.points_layer.events.data.connect(self._on_prompt_changed)
        self.box_layer.events.data.connect(self._on_prompt_changed)
        self.points_layer.bind_key("Enter", lambda layer: self.commit(), overwrite=True)
        self.points_layer.bind_key("Escape", lambda layer: self.clear_prompts(), overwrite=True)
        self.points_layer.bind_key("n", lambda layer: self.next_proposal(), overwrite=True)
        self.viewer.layers.selection.active = self.points_layer
        self._refresh_layer_choices()
        self._set_status("Click on the object.")
        self._precompute_neighbours()

    def _remember_modifier(self, layer: Points, event) -> None:
        """Mouse press: the next added point is negative when Shift is held."""
        negative = NEGATIVE_MODIFIER in {str(m) for m in event.modifiers}
        layer.feature_defaults = {"positive": not negative}

    def _colour_points(self) -> None:
        layer = self.points_layer
        if layer is None or not len(layer.data):
            return
        positive = np.asarray(layer.features["positive"], dtype=bool)
        colours = np.where(positive[:, None], POSITIVE_COLOUR, NEGATIVE_COLOUR)
        if not np.array_equal(np.asarray(layer.face_color), colours):
            layer.face_color = colours

    def _on_prompt_changed(self, event=None) -> None:
        self._colour_points()
        self.request_prediction()

    def _plane(self) -> int | None:
        if self._source is None or not self._source.is_stack:
            return None
        return current_plane(self.viewer, self._source_layer)

    # -- prediction --------------------------------------------------------------------------
    def request_prediction(self) -> None:
        """Predict for the current prompts in a worker (coalescing rapid clicks)."""
        if self.segmenter is None or self._source is None:
            return
        if self._worker is not None:
            self._pending = True
            return
        plane = self._plane()
        prompt = _prompt_for_plane(self.points_layer, self.box_layer, plane)
        if not prompt:
            self._show(None, plane)
            return
        self._pending = False
        if len(prompt.get("points", ())) > 1 or "box" in prompt:
            prompt["multimask"] = len(prompt.get("points", ())) <= 1 and "box" not in prompt
        self._set_status("Segmenting…")
        self._worker = start_job(
            _predict_job,
            self.segmenter,
            self._source,
            plane,
            prompt,
            on_returned=partial(self._on_predicted, self._generation),
            on_errored=self._on_predict_error,
            on_finished=self._on_predict_finished,
        )

    def _on_predicted(self, generation: int, result) -> None:
        if generation != self._generation:
            return  # the prompts were cleared or committed meanwhile
        plane, prediction = result
        self.prediction = prediction
        self.proposal = prediction.best
        self._show(prediction, plane)

    def _on_predict_error(self, exc: BaseException) -> None:
        notify_error(exc, "SAM prompting")
        self._set_status(f"Prompt failed: {exc}")

    def _on_predict_finished(self) -> None:
        self._worker = None
        if self._pending:
            self.request_prediction()

    def _show(self, prediction, plane: int | None) -> None:
        """Write the chosen proposal into the preview layer and list the scores."""
        preview = self.preview_layer
        if preview is None:
            return
        if self._prediction_plane is None:
            preview.data[...] = 0
        else:
            preview.data[self._prediction_plane] = 0
        if prediction is None:
            self.prediction = None
            self.scores_label.setText("No prediction yet.")
            self._prediction_plane = None
            preview.refresh()
            return
        mask = prediction.mask_at(self.proposal)
        if plane is None:
            preview.data[...] = mask
        else:
            preview.data[plane] = mask
        self._prediction_plane = plane
        preview.refresh()
        scores = "  ".join(
            f"{'▶' if k == self.proposal else ''}{k + 1}: {s:.2f}"
            for k, s in enumerate(prediction.scores)
        )
        self.scores_label.setText(f"Proposals  {scores}")
        self._set_status(f"{int(mask.sum())} pixels. Enter commits, N next proposal.")

    def next_proposal(self) -> None:
        """Show the next of the proposals."""
        if self.prediction is None:
            return
        self.proposal = (self.proposal + 1) % len(self.prediction.scores)
        self._show(self.prediction, self._prediction_plane)

    # -- commit ------------------------------------------------------------------------------
    def target_labels(self) -> Labels:
        """The chosen Labels layer, created (same shape and geometry as the image) if needed."""
        name = self.labels_combo.currentText()
        if name and name != NEW_LABELS and name in self.viewer.layers:
            return self.viewer.layers[name]
        shape = self.preview_layer.data.shape
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.int32),
            name="SAM labels",
            scale=self.preview_layer.scale,
            translate=self.preview_layer.translate,
        )
        self._refresh_layer_choices()
        self.labels_combo.setCurrentText(layer.name)
        return layer

    def commit(self) -> int:
        """Write the previewed mask as a new object (id = max + 1); returns the id (0: none)."""
        if self.prediction is None:
            show_info("Nothing to commit: click on an object first.")
            return 0
        mask = self.prediction.mask_at(self.proposal)
        plane = self._prediction_plane
        labels = self.target_labels()
        if labels.data.shape != self.preview_layer.data.shape:
            notify_error(
                ValueError(
                    f"Labels layer {labels.name!r} has shape {labels.data.shape}, expected "
                    f"{self.preview_layer.data.shape} like the image."
                ),
                "SAM commit",
            )
            return 0
        overwrite = self.overwrite_check.isChecked()
        if plane is None:
            new_id = commit_object(labels, mask, overwrite=overwrite)
        else:
            new_id = commit_object(labels, mask[None], offset=(plane, 0, 0), overwrite=overwrite)
        if new_id:
            self._last_object = (labels, new_id)
        self.clear_prompts()
        self._set_status(f"Committed object {new_id}." if new_id else "Nothing new to commit.")
        return new_id

    def clear_prompts(self) -> None:
        """Remove all points and boxes and the preview (the next object starts fresh)."""
        self._generation += 1
        self._pending = False
        self.prediction = None
        for layer in (self.points_layer, self.box_layer):
            if layer is not None and len(layer.data):
                with layer.events.data.blocker():
                    layer.data = []
        if self.points_layer is not None:
            self.points_layer.feature_defaults = {"positive": True}
        self._show(None, None)

    # -- 3D ------------------------------------------------------------------------------
    def _on_plane_changed(self, event=None) -> None:
        if self._source is None or not self._source.is_stack:
            return
        self._precompute_neighbours()

    def _stop_precompute(self) -> None:
        if self._precompute_worker is not None:
            self._precompute_cancel.set()
            self._precompute_worker.quit()
            self._precompute_worker = None

    def _precompute_neighbours(self) -> None:
        """Embed the image (stack: the visible plane, then its neighbours) in the background.

        Started with prompting, so the first click finds the embedding ready or
        under way (a click waits for it rather than computing it twice).
        """
        if self.model is None or self._source is None:
            return
        if self._source.is_stack and not self.precompute_check.isChecked():
            return
        self._stop_precompute()
        plane = self._plane() or 0
        order = [plane]
        for step in range(1, NEIGHBOURS + 1 if self._source.is_stack else 1):
            order += [p for p in (plane + step, plane - step) if 0 <= p < self._source.n_planes]
        self._precompute_cancel = threading.Event()
        self._cancel_events[:] = [self._precompute_cancel]
        self._precompute_worker = start_job(
            precompute_embeddings,
            self.model,
            self._source,
            self.cache,
            planes=order,
            cancel=self._precompute_cancel,
            progress={"total": len(order), "desc": "SAM embeddings"},
            on_yielded=lambda e: self._set_status(
                f"Embedded plane {e.plane} ({e.done}/{e.total})"
            ),
            on_errored=lambda exc: notify_error(exc, "SAM embedding"),
        )

    def propagate(self) -> None:
        """Extend the previewed (or last committed) object through the stack in a worker."""
        if self._source is None or not self._source.is_stack or self.segmenter is None:
            show_info("Propagation needs a 3D stack and a model: press 'Start prompting'.")
            return
        if self.prediction is not None and self._prediction_plane is not None:
            plane = self._prediction_plane
            seed = self.prediction.mask_at(self.proposal)
            extend = None
        elif self._last_object is not None:
            labels, object_id = self._last_object
            plane = self._plane() or 0
            seed = np.asarray(labels.data[plane]) == object_id
            extend = self._last_object
        else:
            show_info("Prompt or commit an object first.")
            return
        if not seed.any():
            show_info("The object is not on the current plane.")
            return
        self._set_status("Propagating…")
        start_job(
            propagate_steps,
            self._source,
            plane,
            seed,
            segmenter=PromptSegmenter(self.model, self.cache),
            on_yielded=lambda s: self._set_status(f"Propagating: plane {s.plane} ({s.done})"),
            on_returned=lambda volume: self._on_propagated(volume, extend),
            on_errored=lambda exc: notify_error(exc, "SAM propagation"),
        )

    def _on_propagated(self, volume: np.ndarray, extend) -> None:
        overwrite = self.overwrite_check.isChecked()
        if extend is None:
            labels = self.target_labels()
            new_id = commit_object(labels, volume, overwrite=overwrite)
            self._last_object = (labels, new_id) if new_id else None
            self.clear_prompts()
        else:
            labels, new_id = extend
            grow = volume & (np.asarray(labels.data) != new_id)
            if not overwrite:
                grow &= np.asarray(labels.data) == 0
            write_labels(labels, np.nonzero(grow), new_id)
        planes = np.flatnonzero(volume.any(axis=(1, 2)))
        self._set_status(
            f"Object {new_id} spans planes {planes.min()}–{planes.max()}." if new_id else "Done."
        )
