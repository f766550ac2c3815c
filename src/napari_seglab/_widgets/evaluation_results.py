"""The result part of the Evaluation dock: table, copy, CSV export and plots (plain Qt).

:class:`ResultsView` shows one :class:`~napari_seglab.metrics.Evaluation`: a
copyable table (the same rows as the CSV export and ``seglab evaluate``), a
per-slice Dice plot, and a per-object IoU histogram (instance mode) or
per-class Dice bars (semantic mode); in panoptic mode PQ, SQ and RQ bars per
class, things and stuff coloured apart. A caption names the layers the table
belongs to, so results never pass for another pair of layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QShortcut,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import metrics
from ._layers import notify_error, show_info

INSTANCE = "instance"
PANOPTIC = "panoptic"


class ResultsView(QWidget):
    """Table, buttons and plots of the last evaluation.

    Attributes
    ----------
    evaluation : metrics.Evaluation or None
        What the table shows (None before the first result).
    caption : QLabel
        Which layers the table describes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.evaluation: metrics.Evaluation | None = None
        self.caption = QLabel("No result yet.")
        self.caption.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setMinimumHeight(120)
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
        self.figure, self.canvas, self.slice_axes, self.object_axes = _make_plots()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.table)
        buttons = QHBoxLayout()
        for button in (self.copy_button, self.export_button, self.objects_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        if self.canvas is not None:
            layout.addWidget(self.canvas)

        self.copy_button.clicked.connect(self.copy_table)
        self.export_button.clicked.connect(self._choose_csv)
        self.objects_button.clicked.connect(lambda: self._choose_csv(objects=True))

    def show_evaluation(self, evaluation: metrics.Evaluation, caption: str) -> None:
        """Show ``evaluation`` in the table and plots; ``caption`` names its layers."""
        self.evaluation = evaluation
        self.caption.setText(caption)
        self.show_table(*evaluation.table())
        self.plot(evaluation)
        for button in (self.copy_button, self.export_button):
            button.setEnabled(True)
        self.objects_button.setEnabled(evaluation.mode == INSTANCE)

    # ------------------------------------------------------------------ table
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
        columns = range(self.table.columnCount())
        lines = ["\t".join(self.table.horizontalHeaderItem(c).text() for c in columns)]
        for r in range(self.table.rowCount()):
            lines.append("\t".join(self.table.item(r, c).text() for c in columns))
        return "\n".join(lines)

    def copy_table(self) -> str:
        """Copy :meth:`table_text` to the clipboard (Ctrl+C in the table, or the Copy button)."""
        text = self.table_text()
        QApplication.clipboard().setText(text)
        return text

    # -------------------------------------------------------------------- CSV
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

    # ------------------------------------------------------------------ plots
    def plot(self, evaluation: metrics.Evaluation) -> None:
        """Per-slice Dice, and per-object IoU (instance) or per-class Dice (semantic)."""
        if self.canvas is None:
            return
        self.slice_axes.clear()
        self.object_axes.clear()
        if evaluation.mode == PANOPTIC:
            self._plot_panoptic(evaluation.result)
            self.canvas.draw_idle()
            return
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

    def _plot_panoptic(self, result: dict) -> None:
        """PQ per class (things blue, stuff orange) above, SQ and RQ per class below."""
        classes = list(result["classes"])
        names = [str(c) for c in classes]
        colours = [
            "tab:blue" if result["classes"][c]["kind"] == "thing" else "tab:orange"
            for c in classes
        ]
        pq = [result["classes"][c]["pq"] for c in classes]
        self.slice_axes.bar(names, np.nan_to_num(pq), color=colours)
        self.slice_axes.set_ylim(0, 1.02)
        self.slice_axes.set_ylabel("PQ (blue: things, orange: stuff)")
        x = np.arange(len(classes))
        for offset, key in ((-0.2, "sq"), (0.2, "rq")):
            values = [result["classes"][c][key] for c in classes]
            self.object_axes.bar(x + offset, np.nan_to_num(values), width=0.4, label=key.upper())
        self.object_axes.set_xticks(x, names)
        self.object_axes.set_ylim(0, 1.02)
        self.object_axes.set_xlabel("class")
        self.object_axes.legend(fontsize="small", loc="lower right")


def _make_plots():
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
