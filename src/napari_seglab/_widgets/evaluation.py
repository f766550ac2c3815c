"""Evaluation dock widget: Dice / IoU / surface / instance / panoptic scores of Labels layers.

A thin shell over :mod:`napari_seglab.metrics`. The parameter form is a
magicgui container: a prediction and a ground-truth Labels layer (choices
follow the viewer), the mode, foreground vs background or a class mapping,
and thresholds. :func:`~napari_seglab.metrics.evaluation_steps` runs in a
worker thread with the ground truth's ``scale`` as spacing; the result goes
to :class:`~.evaluation_results.ResultsView` (table, CSV, plots), warnings
about a misleading comparison (instance-like ground truth, no class in
common) to a warning line, and optional false-positive / false-negative
Labels layers placed exactly on the prediction (its scale, translate,
rotate, shear and affine). Panoptic mode adds object layers and the thing
and stuff classes (:mod:`.evaluation_panoptic`).

Defaults: Ground truth is the most recent Labels layer named like one
(:func:`looks_like_ground_truth`), else empty so the user chooses; Prediction
is the most recent other Labels layer.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Optional

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, create_widget
from napari.layers import Labels
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from .. import metrics
from ._dock import DockShell
from ._layers import error_text, layer_geometry, layer_spacing, notify_error, show_info
from .evaluation_panoptic import (
    PANOPTIC,
    panoptic_form,
    panoptic_inputs,
    panoptic_job,
    panoptic_summary,
)
from .evaluation_results import ResultsView

SEMANTIC = "semantic"
INSTANCE = "instance"
FP_SUFFIX = "false positives"
FN_SUFFIX = "false negatives"

_GROUND_TRUTH = re.compile(
    r"ground[\s_-]*truth|groundtruth|(?<![a-z])(gt|truth|reference|ref|annotations?|manual)"
    r"(?![a-z])|_labels?$",
    re.IGNORECASE,
)


def looks_like_ground_truth(name: str) -> bool:
    """Whether a layer name says ground truth: "ground truth", "gt", "reference", "*_labels"…

    Names that say prediction ("pred…") never do.
    """
    return bool(_GROUND_TRUTH.search(name)) and "pred" not in name.lower()


def _labels_data(layer: Labels):
    """Full-resolution data of a Labels layer (lazy arrays stay lazy)."""
    return layer.data[0] if layer.multiscale else layer.data


class EvaluationWidget(DockShell):
    """Score a prediction Labels layer against a ground-truth Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    form : magicgui Container
        ``pred``, ``gt`` (Labels or None), ``mode``, ``foreground``, ``class_map``
        (text ``"1:1,2:1"``), ``iou_threshold``, ``tolerance``, ``error_layers``.
    panoptic : magicgui Container
        Panoptic mode: ``pred_objects``, ``gt_objects``, ``things``, ``stuff``, ``per_plane``.
    results : ResultsView
        Table, CSV export and plots of the last result.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self._busy = False
        self._defaulting = False
        self._auto = {"pred": True, "gt": True}
        self._evaluated: tuple[Labels, Labels] | None = None
        self._build_ui()
        self.reset_choices()
        self._form_changed()

    def _build_ui(self) -> None:
        def layer_box(name: str, label: str, tip: str):
            box = create_widget(
                annotation=Optional[Labels],  # noqa: UP045 (magicgui reads the annotation)
                name=name,
                label=label,
                options={"choices": self._label_choices, "tooltip": tip},
            )
            box.changed.connect(lambda *_: self._chosen(name))
            return box

        self.form = Container(
            widgets=[
                layer_box("pred", "Prediction", "Labels layer to score (e.g. a model's output)."),
                layer_box(
                    "gt",
                    "Ground truth",
                    "Reference Labels layer. Its scale is used as voxel spacing for distances.",
                ),
                ComboBox(
                    name="mode",
                    label="Mode",
                    choices=[SEMANTIC, INSTANCE, PANOPTIC],
                    tooltip="semantic: ids are classes (Dice, IoU, HD95, ASSD, surface Dice per "
                    "class).\ninstance: ids are objects, matched one-to-one by IoU (F1, PQ).\n"
                    "panoptic: classes and objects (PQ, SQ, RQ per class, things and stuff).",
                ),
                CheckBox(
                    name="foreground",
                    label="Foreground vs background",
                    tooltip="Semantic: every id > 0 is class 1 on both sides.",
                ),
                LineEdit(
                    name="class_map",
                    label="Map classes",
                    tooltip="Semantic: prediction class : ground-truth class, e.g. 1:1,2:1 "
                    "merges prediction classes 1 and 2 into class 1. Empty: ids as they are.",
                ),
                FloatSpinBox(
                    name="iou_threshold",
                    label="IoU threshold",
                    value=0.5,
                    min=0.05,
                    max=1.0,
                    step=0.05,
                    tooltip="Instance and panoptic modes: IoU a pair needs to count as a match "
                    "(panoptic: above it, at least 0.5).",
                ),
                FloatSpinBox(
                    name="tolerance",
                    label="Surface tolerance",
                    value=1.0,
                    min=0.0,
                    max=1e6,
                    step=0.5,
                    tooltip="Semantic mode: surface Dice tolerance, in the ground truth's units.",
                ),
                CheckBox(name="error_layers", label="Add error layers (FP / FN)"),
            ]
        )
        self.form.class_map.native.setPlaceholderText("e.g. 1:1,2:1")
        self.form.changed.connect(self._form_changed)
        self.panoptic = panoptic_form(self._label_choices)
        self.panoptic.changed.connect(self._form_changed)
        self.forms = [self.form, self.panoptic]
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the evaluation; no layer and no result change.")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.warning_label = QLabel("")
        self.warning_label.setStyleSheet("color: #e0a000")
        self.warning_label.setVisible(False)
        self.results = ResultsView()
        self.set_rows(
            [
                [self.form],
                [self.panoptic],
                [self.evaluate_button, self.cancel_button],
                [self.progress],
                [self.status],
                [self.warning_label],
                [self.results],
            ]
        )

    # ----------------------------------------------------------------- layers
    def _label_choices(self, widget=None) -> list:
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not layer.name.endswith((FP_SUFFIX, FN_SUFFIX))
        ]

    @contextmanager
    def _setting(self):
        self._defaulting = True
        try:
            yield
        finally:
            self._defaulting = False

    def _chosen(self, name: str) -> None:
        if not self._defaulting:
            self._auto[name] = False

    def reset_choices(self, event=None) -> None:
        """Refresh the layer choices, then fill empty or automatic choices with defaults."""
        before = (self.form.pred.value, self.form.gt.value)
        with self._setting():
            super().reset_choices()
            self._apply_defaults()
        if (self.form.pred.value, self.form.gt.value) != before:
            self._form_changed()

    def _apply_defaults(self) -> None:
        layers = [layer for _, layer in self._label_choices()]
        pred, gt = self.form.pred, self.form.gt
        if self._auto["gt"] or gt.value is None:
            self._auto["gt"] = True
            named = [x for x in layers if looks_like_ground_truth(x.name) and x is not pred.value]
            gt.value = named[-1] if named else None
        if self._auto["pred"] or pred.value is None:
            self._auto["pred"] = True
            others = [x for x in layers if x is not gt.value]
            plain = [x for x in others if not looks_like_ground_truth(x.name)]
            pred.value = plain[-1] if plain else None

    def _form_changed(self, *_) -> None:
        """A new choice: enable what applies, and let no text describe an older run."""
        mode = self.form.mode.value
        self.form.iou_threshold.enabled = mode != SEMANTIC
        for name in ("tolerance", "foreground", "class_map"):
            self.form[name].enabled = mode == SEMANTIC
        self.form.error_layers.enabled = mode != PANOPTIC
        self.panoptic.visible = mode == PANOPTIC
        self._update_buttons()
        if self._busy:
            return
        self.warning_label.setVisible(False)
        pred, gt = self.form.pred.value, self.form.gt.value
        if pred is None:
            self.status.setText("Choose the prediction Labels layer.")
        elif gt is None:
            self.status.setText(
                f"Choose the ground-truth Labels layer to score {pred.name!r} against "
                "(no layer is named like ground truth)."
            )
        else:
            self.status.setText(f"Ready: Evaluate scores {pred.name!r} against {gt.name!r}.")

    def _update_buttons(self) -> None:
        self.evaluate_button.setEnabled(not self._busy)
        self.cancel_button.setEnabled(self._busy)

    # ------------------------------------------------------------------- run
    def evaluate(self) -> None:
        """Start the evaluation of the chosen layers in a worker thread."""
        if self._busy:
            return
        form = self.form
        try:  # bad input fails here, in the GUI thread, before any job starts
            pred_layer, gt_layer = form.pred.value, form.gt.value
            if pred_layer is None or gt_layer is None:
                raise ValueError("choose a prediction and a ground-truth Labels layer")
            mode = form.mode.value
            if mode == PANOPTIC:
                inputs = panoptic_inputs(self.panoptic, pred_layer, gt_layer, _labels_data)
            pred_data, gt_data = _labels_data(pred_layer), _labels_data(gt_layer)
            metrics.check_label_pair(pred_data, gt_data)
            text = form.class_map.value.strip() if mode == SEMANTIC else ""
            class_map = metrics.parse_class_map(text) if text else None
        except ValueError as exc:
            self._fail(exc)
            return
        spacing = layer_spacing(gt_layer)
        if not np.allclose(layer_spacing(pred_layer), spacing):
            show_info(
                f"Evaluation: the layers' scales differ; using the ground truth's {spacing}."
            )
        self._evaluated = (pred_layer, gt_layer)
        self._set_busy(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Evaluating {pred_layer.name!r} against {gt_layer.name!r}…")
        self.warning_label.setVisible(False)
        handlers = {
            "on_yielded": self._on_progress,
            "on_returned": self._on_result,
            "on_errored": lambda exc: self.status.setText(f"Failed: {error_text(exc)}"),
            "on_cancelled": lambda exc: self._on_cancelled(),
            "on_finished": lambda: self._set_busy(False),
        }
        if mode == PANOPTIC:
            threshold = float(form.iou_threshold.value)
            self.jobs.start(
                "evaluate",
                panoptic_job,
                what="Evaluation",
                iou_threshold=threshold,
                **inputs,
                **handlers,
            )
            return
        self.jobs.start(
            "evaluate",
            metrics.evaluation_steps,
            pred_data,
            gt_data,
            what="Evaluation",
            mode=mode,
            spacing=spacing,
            iou_threshold=float(form.iou_threshold.value),
            tolerance=float(form.tolerance.value),
            error_images=form.error_layers.value,
            foreground=mode == SEMANTIC and form.foreground.value,
            class_map=class_map,
            **handlers,
        )

    @property
    def busy(self) -> bool:
        """True from Evaluate until the job (finished, failed or cancelled) has ended."""
        return self._busy

    def cancel(self) -> None:
        """Ask the running evaluation to stop; the previous results and all layers stay."""
        if self._busy:
            self.jobs.cancel("evaluate")
            self.status.setText("Cancelling…")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.progress.setVisible(busy)
        self._update_buttons()

    def _fail(self, exc: BaseException) -> None:
        self.status.setText(f"Failed: {error_text(exc)}")
        notify_error(exc, "Evaluation")

    def _on_progress(self, event: metrics.EvaluationProgress) -> None:
        self.progress.setRange(0, int(event.total))
        self.progress.setValue(int(event.done))
        self.status.setText(f"Evaluating: {event.message}…")

    def _on_cancelled(self) -> None:
        shown = self.results.evaluation is not None
        self.status.setText(
            "Cancelled; no layer changed."
            + (" The table below is from the previous run." if shown else "")
        )

    def _on_result(self, evaluation: metrics.Evaluation) -> None:
        pred_layer, gt_layer = self._evaluated
        self.results.show_evaluation(evaluation, f"{pred_layer.name!r} vs {gt_layer.name!r}:")
        if evaluation.false_positives is not None:
            self._add_error_layers(evaluation, pred_layer, gt_layer)
        self.status.setText(self._summary(evaluation))
        self.warning_label.setText("\n".join(f"⚠ {w}" for w in evaluation.warnings))
        self.warning_label.setVisible(bool(evaluation.warnings))

    @property
    def evaluation(self) -> metrics.Evaluation | None:
        """The evaluation shown in the results (None before the first result)."""
        return self.results.evaluation

    @staticmethod
    def _summary(evaluation: metrics.Evaluation) -> str:
        result = evaluation.result
        if evaluation.mode == PANOPTIC:
            return panoptic_summary(result)
        if evaluation.mode == INSTANCE:
            return (
                f"{result['n_gt']} ground-truth objects, {result['n_pred']} predicted; at IoU ≥ "
                f"{result['iou_threshold']:g}: TP {result['tp']}, FP {result['fp']}, "
                f"FN {result['fn']}, F1 {metrics.format_value(result['f1'])}"
            )
        dice = [scores["dice"] for scores in result.values()]
        mean = np.nanmean(dice) if np.any(np.isfinite(dice)) else float("nan")
        return f"{len(result)} classes, mean Dice {metrics.format_value(mean)}"

    def _add_error_layers(self, evaluation: metrics.Evaluation, pred_layer, gt_layer) -> None:
        """FP/FN Labels layers on the prediction's grid: its scale, translate and affine."""
        geometry = layer_geometry(pred_layer)
        for data, name in (
            (evaluation.false_positives, f"{pred_layer.name} {FP_SUFFIX}"),
            (evaluation.false_negatives, f"{gt_layer.name} {FN_SUFFIX}"),
        ):
            if name not in self.viewer.layers:
                self.viewer.add_labels(data, name=name, **geometry)
                continue
            layer = self.viewer.layers[name]
            layer.data = data
            for key, value in geometry.items():
                setattr(layer, key, value)
