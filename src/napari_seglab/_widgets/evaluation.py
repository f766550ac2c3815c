"""Evaluation dock widget: Dice / IoU / surface / instance scores of two Labels layers.

A thin shell over :mod:`napari_seglab.metrics`: it gathers a prediction and
a ground-truth Labels layer (spacing from the ground truth's ``scale``), the
mode and thresholds, runs :func:`~napari_seglab.metrics.evaluation_steps` in
a worker thread and shows the result: a copyable table (the same rows as the
CSV export and ``seglab evaluate``), a per-slice Dice plot, a per-object IoU
histogram (instance mode) or per-class Dice bars (semantic mode), and
optionally false-positive / false-negative Labels layers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QShortcut,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import metrics
from ..jobs import JobCancelled
from ._layers import fill_combo, layer_spacing, layers_of_type, notify_error, show_info, start_job

SEMANTIC = "semantic"
INSTANCE = "instance"
FP_SUFFIX = "false positives"
FN_SUFFIX = "false negatives"


def _labels_data(layer: Labels):
    """Full-resolution data of a Labels layer (lazy arrays stay lazy)."""
    return layer.data[0] if layer.multiscale else layer.data


class EvaluationWidget(QWidget):
    """Score a prediction Labels layer against a ground-truth Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None
        self._cancel = threading.Event()
        self.evaluation: metrics.Evaluation | None = None
        self._evaluated_layers: tuple[str, str] | None = None

        self.pred_combo = QComboBox()
        self.pred_combo.setToolTip("Labels layer to score (e.g. a model's output).")
        self.gt_combo = QComboBox()
        self.gt_combo.setToolTip(
            "Reference Labels layer. Its scale is used as voxel spacing for distances."
        )
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([SEMANTIC, INSTANCE])
        self.mode_combo.setToolTip(
            "semantic: ids are classes (Dice, IoU, HD95, ASSD, surface Dice per class).\n"
            "instance: ids are objects, matched one-to-one by IoU (F1, accuracy, PQ)."
        )
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.05, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("Instance mode: IoU a pair needs to count as a match.")
        self.tolerance_spin = QDoubleSpinBox()
        self.tolerance_spin.setRange(0.0, 1e6)
        self.tolerance_spin.setDecimals(3)
        self.tolerance_spin.setValue(1.0)
        self.tolerance_spin.setToolTip(
            "Semantic mode: surface Dice tolerance, in the ground truth's scale units."
        )
        self.errors_check = QCheckBox("Add error layers (false positives / negatives)")
        self.evaluate_button = QPushButton("Evaluate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(
            "Stop the evaluation (at the next class or step); no layer and no result change."
        )
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the selected cells (or the whole table) as text.")
        self.export_button = QPushButton("Export CSV…")
        self.objects_button = QPushButton("Export objects CSV…")
        self.objects_button.setToolTip("Instance mode: one row per object.")
        for button in (self.copy_button, self.export_button, self.objects_button):
            button.setEnabled(False)
        self._copy_shortcut = QShortcut(QKeySequence.StandardKey.Copy, self.table)
        self._copy_shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._copy_shortcut.activated.connect(self.copy_table)

        self.figure, self.canvas, self.slice_axes, self.object_axes = self._make_plots()

        form = QFormLayout()
        form.addRow("Prediction", self.pred_combo)
        form.addRow("Ground truth", self.gt_combo)
        form.addRow("Mode", self.mode_combo)
        form.addRow("IoU threshold", self.threshold_spin)
        form.addRow("Surface tolerance", self.tolerance_spin)
        buttons = QHBoxLayout()
        for button in (self.copy_button, self.export_button, self.objects_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.errors_check)
        run_buttons = QHBoxLayout()
        run_buttons.addWidget(self.evaluate_button)
        run_buttons.addWidget(self.cancel_button)
        layout.addLayout(run_buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(buttons)
        if self.canvas is not None:
            layout.addWidget(self.canvas, stretch=1)

        self.evaluate_button.clicked.connect(self.evaluate)
        self.cancel_button.clicked.connect(self.cancel)
        self.copy_button.clicked.connect(self.copy_table)
        self.export_button.clicked.connect(self._choose_csv)
        self.objects_button.clicked.connect(lambda: self._choose_csv(objects=True))
        self.mode_combo.currentTextChanged.connect(self._update_enabled)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.events.moved.connect(self._refresh_layers)
        self._refresh_layers()
        self._update_enabled()

    # ------------------------------------------------------------------ setup
    def _make_plots(self):
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # plots are optional; the table and CSV still work
            return None, None, None, None
        figure = Figure(figsize=(4, 4), tight_layout=True)
        canvas = FigureCanvasQTAgg(figure)
        canvas.setMinimumHeight(260)
        slice_axes = figure.add_subplot(2, 1, 1)
        object_axes = figure.add_subplot(2, 1, 2)
        return figure, canvas, slice_axes, object_axes

    def _refresh_layers(self, event=None) -> None:
        names = [layer.name for layer in layers_of_type(self.viewer, Labels)]
        names = [n for n in names if not n.endswith((FP_SUFFIX, FN_SUFFIX))]
        for combo, default_index in ((self.pred_combo, 0), (self.gt_combo, 1)):
            default = names[min(default_index, len(names) - 1)] if names else None
            fill_combo(combo, names, default=default)
        self._update_enabled()

    def _update_enabled(self, *_) -> None:
        instance = self.mode_combo.currentText() == INSTANCE
        self.threshold_spin.setEnabled(instance)
        self.tolerance_spin.setEnabled(not instance)
        self.evaluate_button.setEnabled(self._worker is None and self.pred_combo.count() > 0)
        self.cancel_button.setEnabled(self._worker is not None)

    # ------------------------------------------------------------------- run
    def evaluate(self) -> None:
        """Start the evaluation of the chosen layers in a worker thread."""
        if self._worker is not None:
            return
        try:
            pred_layer = self.viewer.layers[self.pred_combo.currentText()]
            gt_layer = self.viewer.layers[self.gt_combo.currentText()]
        except KeyError:
            notify_error(ValueError("choose a prediction and a ground-truth Labels layer"))
            return
        pred_data, gt_data = _labels_data(pred_layer), _labels_data(gt_layer)
        try:  # bad input fails here, in the GUI thread, before any job starts
            metrics.check_label_pair(pred_data, gt_data)
        except ValueError as exc:
            self._on_error(exc)
            return
        spacing = layer_spacing(gt_layer)
        if not np.allclose(layer_spacing(pred_layer), spacing):
            show_info(
                f"Evaluation: the layers' scales differ; using the ground truth's {spacing}."
            )
        mode = self.mode_combo.currentText()
        self._evaluated_layers = (pred_layer.name, gt_layer.name)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.status.setText("Evaluating…")
        self._cancel = threading.Event()
        self._worker = start_job(
            metrics.evaluation_steps,
            pred_data,
            gt_data,
            mode=mode,
            spacing=spacing,
            iou_threshold=float(self.threshold_spin.value()),
            tolerance=float(self.tolerance_spin.value()),
            error_images=self.errors_check.isChecked(),
            cancel=self._cancel,
            on_yielded=self._on_progress,
            on_returned=self._on_result,
            on_errored=self._on_error,
            on_finished=self._on_finished,
            # errors go to _on_error (a notification), not re-raised in the event loop
            _ignore_errors=True,
        )
        self._update_enabled()

    def cancel(self) -> None:
        """Ask the running evaluation to stop; the previous results and all layers stay."""
        if self._worker is not None:
            self._cancel.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, event: metrics.EvaluationProgress) -> None:
        self.progress.setRange(0, int(event.total))
        self.progress.setValue(int(event.done))
        self.status.setText(f"Evaluating: {event.message}…")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, JobCancelled):
            self.status.setText("Cancelled; no layer changed.")
            return
        self.status.setText(f"Failed: {exc}")
        notify_error(exc, "Evaluation")

    def _on_finished(self) -> None:
        self._worker = None
        self.progress.setVisible(False)
        self._update_enabled()

    def _on_result(self, evaluation: metrics.Evaluation) -> None:
        self.evaluation = evaluation
        self.show_table(*evaluation.table())
        self._plot(evaluation)
        if evaluation.false_positives is not None:
            self._add_error_layers(evaluation)
        self.status.setText(self._summary(evaluation))
        for button in (self.copy_button, self.export_button):
            button.setEnabled(True)
        self.objects_button.setEnabled(evaluation.mode == INSTANCE)

    @staticmethod
    def _summary(evaluation: metrics.Evaluation) -> str:
        result = evaluation.result
        if evaluation.mode == INSTANCE:
            return (
                f"{result['n_gt']} ground-truth objects, {result['n_pred']} predicted; at IoU ≥ "
                f"{result['iou_threshold']:g}: TP {result['tp']}, FP {result['fp']}, "
                f"FN {result['fn']}, F1 {metrics.format_value(result['f1'])}"
            )
        dice = [scores["dice"] for scores in result.values()]
        mean = np.nanmean(dice) if np.any(np.isfinite(dice)) else float("nan")
        return f"{len(result)} classes, mean Dice {metrics.format_value(mean)}"

    # ---------------------------------------------------------------- output
    def show_table(self, header: list[str], rows: list[list]) -> None:
        """Fill the results table (values formatted as in the CSV, 6 significant digits)."""
        self.table.clear()
        self.table.setColumnCount(len(header))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(header)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                item = QTableWidgetItem(metrics.format_value(value))
                item.setTextAlignment(
                    int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                )
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    def table_text(self, selected_only: bool = True) -> str:
        """Tab-separated text of the selected cells (the whole table, header included, if none)."""
        ranges = self.table.selectedRanges() if selected_only else []
        if ranges:
            top = min(r.topRow() for r in ranges)
            bottom = max(r.bottomRow() for r in ranges)
            left = min(r.leftColumn() for r in ranges)
            right = max(r.rightColumn() for r in ranges)
            selected = {(i.row(), i.column()) for i in self.table.selectedIndexes()}
            lines = []
            for r in range(top, bottom + 1):
                cells = []
                for c in range(left, right + 1):
                    item = self.table.item(r, c)
                    cells.append(item.text() if item and (r, c) in selected else "")
                lines.append("\t".join(cells))
            return "\n".join(lines)
        header = [
            self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())
        ]
        lines = ["\t".join(header)]
        for r in range(self.table.rowCount()):
            lines.append(
                "\t".join(self.table.item(r, c).text() for c in range(self.table.columnCount()))
            )
        return "\n".join(lines)

    def copy_table(self) -> str:
        """Copy :meth:`table_text` to the clipboard (Ctrl+C in the table, or the Copy button)."""
        text = self.table_text()
        QApplication.clipboard().setText(text)
        return text

    def save_csv(self, path: str | Path, objects: bool = False) -> Path:
        """Write the last result to ``path`` (the per-object table when ``objects``)."""
        if self.evaluation is None:
            raise RuntimeError("nothing to export yet: press Evaluate first")
        which = "objects" if objects else "summary"
        written = metrics.write_csv(self.evaluation.result, path, table=which)
        show_info(f"Evaluation: wrote {written}")
        return written

    def _choose_csv(self, objects: bool = False) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export evaluation as CSV", "evaluation.csv", "CSV files (*.csv)"
        )
        if not path:
            return
        try:
            self.save_csv(path, objects=objects)
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
            notify_error(exc, "Export CSV")

    def _plot(self, evaluation: metrics.Evaluation) -> None:
        if self.canvas is None:
            return
        self.slice_axes.clear()
        self.object_axes.clear()
        if evaluation.per_slice:
            for label, dice in evaluation.per_slice.items():
                name = "foreground" if evaluation.mode == INSTANCE else f"class {label}"
                self.slice_axes.plot(np.arange(dice.size), dice, label=name)
            self.slice_axes.set_ylim(-0.02, 1.02)
            self.slice_axes.legend(fontsize="small", loc="lower right")
        else:
            self.slice_axes.text(0.5, 0.5, "2D image: no slices", ha="center", va="center")
        self.slice_axes.set_xlabel("slice (axis 0)")
        self.slice_axes.set_ylabel("Dice")
        if evaluation.mode == INSTANCE:
            ious = evaluation.object_ious()
            self.object_axes.hist(ious, bins=np.linspace(0, 1, 21), color="tab:blue")
            threshold = evaluation.result["iou_threshold"]
            self.object_axes.axvline(threshold, color="tab:red", linestyle="--")
            self.object_axes.set_xlabel("IoU per ground-truth object")
            self.object_axes.set_ylabel("objects")
        else:
            labels = list(evaluation.result)
            dice = [evaluation.result[c]["dice"] for c in labels]
            self.object_axes.bar([str(c) for c in labels], np.nan_to_num(dice))
            self.object_axes.set_ylim(0, 1.02)
            self.object_axes.set_xlabel("class")
            self.object_axes.set_ylabel("Dice")
        self.canvas.draw_idle()

    def _add_error_layers(self, evaluation: metrics.Evaluation) -> None:
        pred_name, gt_name = self._evaluated_layers
        scale = self.viewer.layers[gt_name].scale
        for data, name in (
            (evaluation.false_positives, f"{pred_name} {FP_SUFFIX}"),
            (evaluation.false_negatives, f"{gt_name} {FN_SUFFIX}"),
        ):
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_labels(data, name=name, scale=scale)
