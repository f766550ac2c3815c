"""Controls shared by the training widgets: live loss/Dice plot and number boxes."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QDoubleSpinBox, QScrollArea, QSpinBox, QVBoxLayout, QWidget


class TrainingPlot(QWidget):
    """Live loss and validation-Dice curves (matplotlib canvas), shared by the training widgets.

    Attributes
    ----------
    epochs, losses, dices : list
        The plotted history (``dices`` holds None for epochs without validation).
    """

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.losses: list[float] = []
        self.dices: list[float | None] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.figure = Figure(figsize=(3.2, 2.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.loss_axes = self.figure.add_subplot(111)
        self.dice_axes = self.loss_axes.twinx()
        layout.addWidget(self.canvas)
        self._draw()

    def clear(self) -> None:
        """Forget the history (a new training starts)."""
        self.epochs.clear()
        self.losses.clear()
        self.dices.clear()
        self._draw()

    def add(self, epoch: int, loss: float, dice: float | None) -> None:
        """Append one epoch and redraw."""
        self.epochs.append(epoch)
        self.losses.append(loss)
        self.dices.append(dice)
        self._draw()

    def _draw(self) -> None:
        self.loss_axes.clear()
        self.dice_axes.clear()
        # clear() puts a twin axis back on the left; keep Dice on the right.
        self.dice_axes.yaxis.tick_right()
        self.dice_axes.yaxis.set_label_position("right")
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("loss", color="tab:blue")
        self.dice_axes.set_ylabel("val Dice", color="tab:orange")
        self.dice_axes.set_ylim(0.0, 1.0)
        if self.epochs:
            self.loss_axes.plot(self.epochs, self.losses, "o-", color="tab:blue", ms=3)
            points = [(e, d) for e, d in zip(self.epochs, self.dices) if d is not None]
            if points:
                xs, ys = zip(*points)
                self.dice_axes.plot(xs, ys, "s-", color="tab:orange", ms=3)
        self.canvas.draw_idle()


def device_choices() -> list[str]:
    """Compute devices to offer: ``auto`` and ``cpu``, plus ``cuda``/``mps`` where present."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def int_box(value: int, low: int, high: int, tip: str, special: str | None = None) -> QSpinBox:
    """An integer spin box with range, value, tooltip and optional text for its minimum."""
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    if special:
        box.setSpecialValueText(special)
    return box


def float_box(
    value: float, low: float, high: float, step: float, decimals: int, tip: str
) -> QDoubleSpinBox:
    """A float spin box with range, step, decimals, value and tooltip."""
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def scroll_area(content: QWidget) -> QScrollArea:
    """``content`` in a vertical scroll area, so a tall dock fits a small screen."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(content)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    return area


def path_text(widget) -> str:
    """The path typed into a magicgui ``FileEdit``, '' when it is empty."""
    text = str(widget.line_edit.value).strip()
    return "" if text in ("", ".") else text
