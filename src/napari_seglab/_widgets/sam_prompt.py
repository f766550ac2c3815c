"""SAM prompting dock widget: click, see the mask, commit, next object.

A thin shell over :class:`~napari_seglab.sessions.SamPromptSession`, the
session shared by the SAM widgets of one viewer (``_sessions.sam_session``).
The form (image, target labels, model) is built with magicgui; prompts are
clicked into a Points layer (click: positive, Shift+click: negative) and
drawn as rectangles in a Shapes layer (``sam_prompt_layers``). Prompts are
computed by one long-lived worker thread; embeddings of neighbouring planes
are computed in the background and the plane the user clicks on goes first.

Shortcuts (while the "SAM points" layer is selected): Enter commits, Escape
clears the prompts, N shows the next proposal, Ctrl+Z takes back the last
commit (every write goes through the layer's undo history).

The layer boxes are magicgui ComboBoxes whose choices come from this
widget's own viewer, leaving out the widget's helper layers (napari's layer
annotations find the viewer by walking up Qt parents and would offer the
preview layer as a target); napari calls :meth:`reset_choices` whenever
layers are added, removed, moved or renamed.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial

import numpy as np
from app_model.types import KeyCode, KeyMod
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit
from napari.layers import Image, Labels
from qtpy.QtWidgets import QLabel, QPushButton

from ..sessions import PredictionResult
from ._controls import device_choices, path_text
from ._dock import DockShell
from ._jobs import PromptServer, load_sam_job
from ._layers import (
    current_plane,
    layer_geometry,
    notify_error,
    show_info,
    show_warning,
    spatial_image,
)
from ._layers import write_labels as _write_labels
from ._sessions import sam_session
from .sam_models import model_choices
from .sam_objects import ObjectsPanel
from .sam_prompt_choices import NEW_LABELS, LayerChoices
from .sam_prompt_layers import PromptLayers
from .sam_prompt_stack import StackPrompting
from .sam_tools import SamToolsPanel

__all__ = ["NEW_LABELS", "SamPromptWidget"]
HELP = (
    "Click: positive point · Shift+click: negative point · rectangle in 'SAM box': box prompt.<br>"
    "Keys (with 'SAM points' selected): <b>Enter</b> commit · <b>Esc</b> clear · "
    "<b>N</b> next proposal · <b>Ctrl+Z</b> undo the last commit."
)


class SamPromptWidget(LayerChoices, StackPrompting, DockShell):
    """Interactive SAM segmentation into a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    session : SamPromptSession
        Shared with the other SAM widgets of this viewer.
    form : magicgui Container
        ``image``, ``target`` (Labels; None: a new layer), ``model``, ``checkpoint``,
        ``decoder``, ``device``, ``overwrite``, ``neighbours``.
    prompt_layers : PromptLayers or None
        The points, box and preview layers while prompting.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.session = sam_session(napari_viewer)
        self.server: PromptServer | None = None
        self.prompt_layers: PromptLayers | None = None
        self.image: Image | None = None
        self._restart_neighbours = False
        self._build_ui()
        self._connections = [
            (self.session.model_changed, self._on_model),
            (self.session.prediction_changed, self._on_prediction),
            (self.session.prompts_changed, self._on_session_prompts),
            (self.session.status, self._set_status),
            (self.viewer.dims.events.current_step, self._on_plane_changed),
            (self.viewer.layers.events.removed, self._on_layer_removed),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        if self.session.model is not None:
            self._on_model(self.session.model)

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.form = Container(
            widgets=[
                ComboBox(name="image", label="Image", choices=self._image_choices),
                ComboBox(name="target", label="Labels", choices=self._labels_choices),
                ComboBox(name="model", label="Model", choices=model_choices()),
                FileEdit(name="checkpoint", label="Checkpoint", filter="*.pth *.pt", value=""),
                FileEdit(name="decoder", label="Decoder", filter="*.pt *.pth", value=""),
                ComboBox(name="device", label="Device", choices=device_choices()),
                CheckBox(name="overwrite", label="Overwrite existing labels", value=False),
                CheckBox(name="neighbours", label="Embed neighbouring planes", value=True),
            ]
        )
        self.form.checkpoint.line_edit.native.setPlaceholderText("registry file (downloaded once)")
        self.form.decoder.line_edit.native.setPlaceholderText("optional fine-tuned decoder .pt")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.model_label = QLabel("No model loaded.")
        self.warning_label = QLabel("")
        self.warning_label.setStyleSheet("color: #e0a000")
        self.warning_label.setVisible(False)
        self.start_button = QPushButton("Start prompting")
        self.start_button.clicked.connect(self.start)
        self.help_label = QLabel(HELP)
        self.scores_label = QLabel("No prediction yet.")
        self.next_button = QPushButton("Next proposal (N)")
        self.next_button.clicked.connect(self.next_proposal)
        self.commit_button = QPushButton("Commit (Enter)")
        self.commit_button.clicked.connect(self.commit)
        self.clear_button = QPushButton("Clear (Esc)")
        self.clear_button.clicked.connect(self.clear_prompts)
        self.propagate_button = QPushButton("Propagate through stack")
        self.propagate_button.clicked.connect(self.propagate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self.jobs.cancel("propagate"))
        self.status_label = QLabel("Load a model to start.")
        self.objects_panel = ObjectsPanel(self)  # several objects, classes, saved sessions
        self.tools_panel = SamToolsPanel(self)  # refine labels, segment everything
        self.forms = [self.form]
        self.set_rows(
            [
                [self.form],
                [self.load_button],
                [self.model_label],
                [self.warning_label],
                [self.start_button],
                [self.help_label],
                [self.scores_label],
                [self.next_button, self.commit_button, self.clear_button],
                [self.propagate_button, self.cancel_button],
                [self.objects_panel],
                [self.tools_panel],
                [self.status_label],
            ]
        )

    def _set_status(self, text: str) -> None:
        if not self.jobs.closed:
            with suppress(RuntimeError):  # the Qt object went away before the session spoke
                self.status_label.setText(text)

    # -- model -----------------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the chosen model in a worker (downloads and verifies on first use)."""
        name = self.form.model.value
        checkpoint, decoder = path_text(self.form.checkpoint), path_text(self.form.decoder)
        self._set_status(f"Loading {name}…")
        self.load_button.setEnabled(False)
        self.jobs.start(
            "load",
            load_sam_job,
            name,
            checkpoint,
            decoder,
            self.form.device.value,
            what="SAM model",
            cancellable=False,
            on_returned=lambda model: self.session.set_model(model, source=decoder or name),
            on_errored=lambda exc: self._set_status(f"Model not loaded: {exc}"),
            on_finished=lambda: self.load_button.setEnabled(True),
        )

    def set_model(self, model, source: str = "") -> None:
        """Prompt with ``model`` (a :class:`~napari_seglab.sam.SamModel`) in every SAM widget."""
        self.session.set_model(model, source=source)

    @property
    def model(self):
        return self.session.model

    def _on_model(self, model) -> None:
        if self.jobs.closed:
            return
        self.jobs.cancel("neighbours")
        large_on_cpu = model.is_large_encoder and model.device.type == "cpu"
        message = (
            f"{model.name} runs its large encoder on the CPU: each new plane takes tens of "
            "seconds to embed. vit_b is much faster."
        )
        self.warning_label.setText(message if large_on_cpu else "")
        self.warning_label.setVisible(large_on_cpu)
        if large_on_cpu:
            show_warning(message)
        source = self.session.model_source
        self.model_label.setText(f"Model: {model.name} on {model.device} ({source}).")
        decoder = getattr(self.session, "model_decoder", "")
        if decoder:
            self.form.decoder.value = decoder
        if self.prompt_layers is not None:
            self._precompute_neighbours()
            self._on_prompts()
        else:
            self._set_status(f"Model {model.name} on {model.device}. Press 'Start prompting'.")

    # -- prompting -------------------------------------------------------------------------
    def start(self) -> None:
        """Create (or reset) the prompt and preview layers over the chosen image."""
        try:
            if self.session.model is None:
                raise RuntimeError("Load a model first.")
            image = self.form.image.value
            if image is None or image not in self.viewer.layers:
                raise ValueError("Choose an image layer to segment.")
        except (ValueError, RuntimeError) as exc:
            notify_error(exc, "SAM prompting")
            return
        data, rgb = spatial_image(image)
        self.jobs.cancel("neighbours")
        self.session.set_image(data, rgb=rgb)
        self.image = image
        shape = self.session.labels_shape
        ndim = len(shape)
        geometry = layer_geometry(image)  # the image's grid, its affine (oblique scans) included
        if ndim != image.ndim:
            geometry = {"scale": image.scale[:ndim], "translate": image.translate[:ndim]}
        if self.prompt_layers is not None:
            self.prompt_layers.remove()
        keys = {
            "Enter": self.commit,
            "Escape": self.clear_prompts,
            "n": self.next_proposal,
            KeyMod.CtrlCmd | KeyCode.KeyZ: self.undo_commit,
        }
        self.prompt_layers = PromptLayers(self.viewer, shape, geometry, self._on_prompts, keys)
        self.objects_panel.started(image)
        self.reset_choices()
        self._set_status("Click on the object.")
        self._precompute_neighbours()

    def plane(self) -> int | None:
        """The plane of the image the viewer shows (None on a 2D image)."""
        if self.image is None or not self.session.is_stack:
            return None
        return current_plane(self.viewer, self.image)

    def _on_prompts(self) -> None:
        """The user changed a point or a box: update the session and predict."""
        if self.prompt_layers is None or self.jobs.closed or self.session.model is None:
            return
        plane = self.plane()
        self.session.set_prompts(plane, **self.prompt_layers.prompts(plane))
        if not self.session.prompts(plane).empty:
            self.request_prediction(plane)
        elif self.session.prediction_plane == plane:  # its last prompt removed: no proposal
            self.session.accept(PredictionResult(plane, None, self.session.generation))

    def request_prediction(self, plane: int | None) -> None:
        """Prompt ``plane`` on the prompt thread; it goes before neighbour embeddings."""
        if self.server is None:
            self.server = PromptServer(self.session, self._on_predicted, self._on_predict_error)
            self.jobs.on_close(self.server.stop)
        if self.session.is_stack and not self.session.is_embedded(plane):
            self._restart_neighbours = self.jobs.running("neighbours")
            self.jobs.cancel("neighbours")  # the plane the user looks at goes first
        self._set_status("Segmenting…")
        self.server.request(plane)

    @property
    def busy(self) -> bool:
        """True while a prompt is waiting or being computed."""
        return self.server is not None and self.server.busy

    def _on_predicted(self, result) -> None:
        if self.jobs.closed:
            return
        self.session.accept(result)
        if self._restart_neighbours:
            self._restart_neighbours = False
            self._precompute_neighbours()

    def _on_predict_error(self, exc: BaseException) -> None:
        if not self.jobs.closed:
            notify_error(exc, "SAM prompting")
            self._set_status(f"Prompt failed: {exc}")

    def _on_prediction(self) -> None:
        if self.jobs.closed or self.prompt_layers is None:
            return
        prediction = self.session.prediction
        with suppress(RuntimeError):
            if prediction is None:
                self.prompt_layers.show(None, None)
                self.scores_label.setText("No prediction yet.")
                return
            self.prompt_layers.show(self.session.mask(), self.session.prediction_plane)
            scores = "  ".join(
                f"{'▶' if k == self.session.proposal else ''}{k + 1}: {s:.2f}"
                for k, s in enumerate(prediction.scores)
            )
            self.scores_label.setText(f"Proposals  {scores}")

    def _on_session_prompts(self) -> None:
        """Prompts cleared in the session (commit, Esc, a script): clear the layers too."""
        if self.jobs.closed or self.prompt_layers is None:
            return
        if not self.session.has_prompts:
            self.prompt_layers.clear()

    def next_proposal(self) -> None:
        """Show the next of the proposals."""
        self.session.next_proposal()

    def clear_prompts(self) -> None:
        """Remove all points and boxes and the preview (the next object starts fresh)."""
        self.session.clear_prompts()
        self.scores_label.setText("No prediction yet.")

    # -- commit ----------------------------------------------------------------------------
    def target_labels(self) -> Labels:
        """The chosen Labels layer, or a new one (image shape and geometry) when none is chosen."""
        layer = self.form.target.value
        if layer is not None and layer in self.viewer.layers:
            return layer
        preview = self.prompt_layers.preview
        layer = Labels(
            np.zeros(preview.data.shape, dtype=np.int32),
            name="SAM labels",
            **layer_geometry(preview),
        )
        self.prompt_layers.add_below(layer)
        self.reset_choices()
        self.form.target.value = layer
        return layer

    def _write(self, labels: Labels, action) -> int:
        """Run a session write into ``labels`` through its undo history; keep prompting on top."""
        try:
            value = action(
                labels.data,
                overwrite=self.form.overwrite.value,
                writer=partial(_write_labels, labels),
                handle=labels,
            )
        except ValueError as exc:
            notify_error(exc, "SAM commit")
            return 0
        if self.prompt_layers is not None and self.prompt_layers.alive():
            self.prompt_layers.activate()
        return value

    def commit(self) -> list[int]:
        """Write every pending object's proposal as new objects, one undo step; returns the ids."""
        ready = any(obj.prediction is not None for obj in self.session.objects)
        if not ready or self.prompt_layers is None:
            show_info("Nothing to commit: click on an object first.")
            return []
        return self._write(self.target_labels(), self.session.commit_all) or []

    def undo_commit(self) -> None:
        """Take back the last write into the target labels (Ctrl+Z while prompting)."""
        last = self.session.last_object
        if last is not None and last[0] in self.viewer.layers:
            last[0].undo()
            self.objects_panel.save_after_undo(last[0])

    # -- closing ---------------------------------------------------------------------------
    def _on_layer_removed(self, event=None) -> None:
        if self.prompt_layers is not None and not self.prompt_layers.alive():
            self.jobs.cancel("neighbours")
            self.prompt_layers.remove()
            self.prompt_layers = None

    def teardown(self) -> None:
        """Cancel this widget's jobs, stop its prompt thread and remove its helper layers."""
        if self.jobs.closed:
            return
        self.jobs.close()
        for signal, slot in self._connections:
            with suppress(Exception):
                signal.disconnect(slot)
        self.tools_panel.remove_preview()
        if self.prompt_layers is not None:
            self.prompt_layers.remove()
            self.prompt_layers = None
