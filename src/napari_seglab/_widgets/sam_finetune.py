"""SAM decoder fine-tuning dock widget: adapt SAM's mask decoder to your annotations.

A thin shell over :func:`napari_seglab.sam.finetune_decoder_events`. The
forms (training pairs, base model, recipe) are magicgui containers. The base
model is loaded here, or taken from the SAM prompting session this viewer's
SAM widgets share (``_sessions.sam_session``). Training runs in a worker
thread with a live loss / validation-Dice plot. "Save decoder" writes the
small decoder file; "Use in SAM widget" sets the tuned model on the shared
session (it works before saving: the decoder is then kept in the cache
folder, so the SAM widget's Decoder field can reload it). Fine-tuning never
writes into a layer.
"""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFileDialog, QLabel, QListWidget, QProgressBar, QPushButton

from ._controls import TrainingPlot, device_choices, path_text
from ._dock import DockShell
from ._jobs import load_sam_job
from ._layers import notify_error, show_info, spatial_image
from ._sessions import sam_session

MODEL_CHOICES = ("vit_b", "medsam", "vit_l", "vit_h")
PROMPT_CHOICES = ("mixed", "box", "points")


def _format_dice(scores: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) or "n/a"


class SamFinetuneWidget(DockShell):
    """Fine-tune SAM's mask decoder on (image, labels) layer pairs.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    session : SamPromptSession
        Shared with the SAM prompting widget of this viewer.
    data, base, recipe : magicgui Container
        ``image``/``annotations``; ``model``/``checkpoint``/``device``;
        ``prompt``/``epochs``/``time_budget``/``learning_rate``/``validation``.
    model : SamModel or None
        The base model (loaded, the session's, or :meth:`set_model`).
    result : FinetuneResult or None
        The last fine-tuning, with the tuned model in ``result.model``.
    pairs : list of (str, str)
        Names of the (Image, Labels) pairs added with "Add pair"; when empty,
        the pair chosen in the two boxes is used.
    saved_path : Path or None
        Where the tuned decoder was last saved.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.session = sam_session(napari_viewer)
        self.model = None
        self.result = None
        self.pairs: list[tuple[str, str]] = []
        self.saved_path: Path | None = None
        self._build_ui()
        self.viewer.layers.events.removed.connect(self._forget_missing_pairs)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.data = Container(
            widgets=[
                ComboBox(name="image", label="Image", choices=self._choices(Image)),
                ComboBox(name="annotations", label="Labels", choices=self._choices(Labels)),
            ]
        )
        self.data.image.tooltip = "Image layer (2D or a 3D stack)."
        self.data.annotations.tooltip = (
            "Labels layer of the same shape: instance or semantic, 0 = background. "
            "Only annotated planes of a stack are used."
        )
        self.base = Container(
            widgets=[
                ComboBox(name="model", label="Model", choices=MODEL_CHOICES),
                FileEdit(name="checkpoint", label="Checkpoint", filter="*.pth *.pt", value=""),
                ComboBox(name="device", label="Device", choices=device_choices()),
            ]
        )
        self.recipe = Container(
            widgets=[
                ComboBox(name="prompt", label="Prompts", choices=PROMPT_CHOICES),
                SpinBox(name="epochs", label="Epochs (0: no limit)", value=30, max=10000),
                SpinBox(name="time_budget", label="Time budget s (0: none)", value=0, max=86400),
                FloatSpinBox(name="learning_rate", label="Learning rate", value=1e-4, step=1e-4),
                FloatSpinBox(
                    name="validation", label="Validation share", value=0.2, max=0.9, step=0.05
                ),
            ]
        )
        self.add_pair_button = QPushButton("Add pair")
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button = QPushButton("Remove")
        self.remove_pair_button.clicked.connect(self._remove_selected_pair)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(70)
        self.pair_list.setToolTip("Several images: add each (image, labels) pair.")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.from_sam_button = QPushButton("From SAM widget")
        self.from_sam_button.setToolTip("Use the model of this viewer's SAM prompting session.")
        self.from_sam_button.clicked.connect(self.model_from_session)
        self.model_label = QLabel("No model loaded.")
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.plot = TrainingPlot()
        self.status = QLabel("Choose data and a model, then Start.")
        self.result_label = QLabel("")
        self.save_button = QPushButton("Save decoder…")
        self.save_button.clicked.connect(self._save_dialog)
        self.use_button = QPushButton("Use in SAM widget")
        self.use_button.clicked.connect(self.use_in_sam_widget)
        self.forms = [self.data]
        self.set_rows(
            [
                [QLabel("<b>Training data</b>")],
                [self.data],
                [self.add_pair_button, self.remove_pair_button],
                [self.pair_list],
                [QLabel("<b>Base model</b>")],
                [self.base],
                [self.load_button, self.from_sam_button],
                [self.model_label],
                [QLabel("<b>Recipe</b>")],
                [self.recipe],
                [self.start_button, self.cancel_button],
                [self.progress],
                [self.plot],
                [self.status],
                [self.result_label],
                [self.save_button, self.use_button],
            ]
        )
        self._set_busy(False)

    def _choices(self, kind):
        def choices(widget=None) -> list:
            return [x.name for x in self.viewer.layers if isinstance(x, kind)]

        return choices

    def _set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.load_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.result is not None)
        self.use_button.setEnabled(not busy and self.result is not None)

    # -------------------------------------------------------------- layers
    def _forget_missing_pairs(self, event=None) -> None:
        present = {layer.name for layer in self.viewer.layers}
        self.pairs = [p for p in self.pairs if p[0] in present and p[1] in present]
        self._show_pairs()

    def _show_pairs(self) -> None:
        with suppress(RuntimeError):
            self.pair_list.clear()
            self.pair_list.addItems([f"{image}  ←  {labels}" for image, labels in self.pairs])

    def add_pair(self) -> None:
        """Add the (image, labels) pair chosen in the two boxes to the training data."""
        pair = (self.data.image.value, self.data.annotations.value)
        if not all(pair):
            notify_error(ValueError("Expected an Image and a Labels layer to pair."), "Pairs")
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
        pairs = self.pairs or [(self.data.image.value, self.data.annotations.value)]
        images, labels = [], []
        for image_name, labels_name in pairs:
            if image_name not in self.viewer.layers or labels_name not in self.viewer.layers:
                raise ValueError(
                    f"Expected an Image and a Labels layer, got {image_name!r} and "
                    f"{labels_name!r}; add them to the viewer first."
                )
            data, _ = spatial_image(self.viewer.layers[image_name])
            layer = self.viewer.layers[labels_name]
            annotation = layer.data[0] if layer.multiscale else layer.data
            data, annotation = _annotated_planes(data, annotation)
            images.append(data)
            labels.append(np.array(annotation, copy=True))
        return images, labels

    # --------------------------------------------------------------- model
    def set_model(self, model) -> None:
        """Use ``model`` (a :class:`~napari_seglab.sam.SamModel`) as the base model."""
        self.model = model
        self.model_label.setText(f"Base model: {model.name} on {model.device}.")

    def load_model(self) -> None:
        """Load the chosen checkpoint in a worker."""
        self.model_label.setText(f"Loading {self.base.model.value}…")
        self.load_button.setEnabled(False)
        self.jobs.start(
            "load",
            load_sam_job,
            self.base.model.value,
            path_text(self.base.checkpoint),
            "",
            self.base.device.value,
            what="Load SAM model",
            cancellable=False,
            on_returned=self.set_model,
            on_errored=lambda exc: self.model_label.setText(f"Model not loaded: {exc}"),
            on_finished=lambda: self._set_busy(self.jobs.running("train")),
        )

    def model_from_session(self) -> None:
        """Take the model of this viewer's SAM prompting session as the base model."""
        if self.session.model is None:
            notify_error(ValueError("The SAM prompting widget has no model loaded yet."), "Model")
            return
        self.set_model(self.session.model)

    # ---------------------------------------------------------------- train
    def settings(self) -> dict:
        """Keyword arguments for :func:`finetune_decoder_events` from the forms."""
        epochs = self.recipe.epochs.value or None
        budget = float(self.recipe.time_budget.value) or None
        if epochs is None and budget is None:
            raise ValueError("Expected a number of epochs or a time budget; both are 0.")
        return {
            "epochs": epochs,
            "time_budget_s": budget,
            "prompt": self.recipe.prompt.value,
            "learning_rate": self.recipe.learning_rate.value,
            "validation_fraction": self.recipe.validation.value,
            "device": self.base.device.value,
        }

    def start(self, **overrides) -> None:
        """Fine-tune in a worker thread; the plot updates after every epoch.

        ``overrides`` replace form settings (e.g. ``steps=5`` from scripts and tests).
        """
        from ..sam import finetune_decoder_events

        if self.jobs.running("train"):
            show_info("Fine-tuning is already running.")
            return
        try:
            if self.model is None:
                raise ValueError("Expected a base model: load one or take the SAM widget's.")
            settings = {"cache": self.session.cache, **self.settings(), **overrides}
            images, labels = self.training_data()
        except ValueError as exc:
            notify_error(exc, "Fine-tuning")
            return
        self.plot.clear()
        self.progress.setValue(0)
        self.result_label.setText("")
        self.status.setText("Embedding annotated planes…")
        self._set_busy(True)
        self.jobs.start(
            "train",
            finetune_decoder_events,
            self.model,
            images,
            labels,
            what="Fine-tuning",
            on_yielded=self._on_event,
            on_returned=self._on_returned,
            on_errored=lambda exc: self.status.setText(f"Fine-tuning failed: {exc}"),
            on_cancelled=self._on_cancelled,
            on_finished=lambda: self._set_busy(False),
            **settings,
        )

    @property
    def busy(self) -> bool:
        """True while fine-tuning runs."""
        return self.jobs.running("train")

    def _on_event(self, event) -> None:
        if event.stage == "embedding":
            self.progress.setMaximum(event.total)
            self.progress.setValue(event.done)
            self.status.setText(f"Embedding plane {event.done} of {event.total}…")
        elif event.stage == "epoch":
            if event.epoch > 0:
                self.plot.add(event.epoch, event.loss, event.validation.get("mean"))
            if event.fraction is not None:  # epochs of the limit, or seconds of the budget
                self.progress.setMaximum(1000)
                self.progress.setValue(round(1000 * event.fraction))
            loss = "-" if event.loss is None else f"{event.loss:.4f}"
            self.status.setText(
                f"Epoch {event.epoch}, step {event.step}: loss {loss}, validation Dice "
                f"{_format_dice(event.validation)} ({event.elapsed:.0f} s)"
            )

    def _on_cancelled(self, exc) -> None:
        if getattr(exc, "partial", None) is None:
            self.status.setText("Cancelled while embedding; nothing trained.")
        else:
            self._on_returned(exc.partial)

    def _on_returned(self, result) -> None:
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

    def cancel(self) -> None:
        """Stop training after the current step; the best decoder so far is kept."""
        self.jobs.cancel("train")
        self.status.setText("Cancelling…")

    # -------------------------------------------------------------- results
    def save_decoder(self, path) -> Path:
        """Write the tuned decoder (with its base model's hash and the recipe) to ``path``."""
        from ..sam import save_decoder

        if self.result is None:
            raise ValueError("Expected a fine-tuned decoder to save: run fine-tuning first.")
        self.saved_path = Path(save_decoder(self.result.model, path, result=self.result))
        self.status.setText(f"Decoder saved to {self.saved_path}.")
        return self.saved_path

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save SAM decoder", "", "Decoder (*.pt)")
        if path:
            try:
                self.save_decoder(path)
            except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
                notify_error(exc, "Save decoder")

    def use_in_sam_widget(self) -> bool:
        """Set the tuned model on this viewer's SAM session (the SAM widget prompts with it).

        Not saved yet: the decoder is first saved into the cache folder, so the
        SAM widget's Decoder field names a file that reloads it.
        """
        from ..cache import cache_dir

        if self.result is None:
            notify_error(
                ValueError("Expected a fine-tuned decoder: run fine-tuning first."), "SAM"
            )
            return False
        if self.saved_path is None:
            name = f"decoder-{time.strftime('%Y%m%d-%H%M%S')}.pt"
            self.save_decoder(cache_dir("sam-decoders") / name)
        self.session.set_model(self.result.model, source="fine-tuned", decoder=self.saved_path)
        self.status.setText("The SAM prompting widget now uses the fine-tuned decoder.")
        return True


def _annotated_planes(image, labels):
    """Only the planes holding objects of a stack backed by dask/zarr (whole planes kept).

    Fine-tuning embeds whole planes and learns from planes with objects, so a
    large lazy stack is read from its first to its last plane with objects.
    """
    from ..batch.stores import is_lazy

    if labels.ndim != 3 or not (is_lazy(labels) or is_lazy(image)):
        return image, labels
    from ..unet.annotated import annotated_box

    try:
        planes = annotated_box(labels, 0, (0, 0, 0))[0]
    except ValueError:
        raise ValueError("The labels hold no objects: annotate some first.") from None
    return image[planes], labels[planes]
