"""Real Qt mouse and key events on a napari viewer's canvas, as a user makes them."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt

SHIFT = Qt.KeyboardModifier.ShiftModifier
NO_MODIFIER = Qt.KeyboardModifier.NoModifier


def show_viewer(viewer, qtbot, width: int = 1280, height: int = 900) -> None:
    """Give the viewer's window an ordinary size on screen and wait until it is drawn."""
    window = viewer.window._qt_window
    window.resize(width, height)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(50)
    viewer.reset_view()
    qtbot.wait(50)


def canvas_pos(viewer, world) -> QPoint:
    """Canvas pixel of a world position of the displayed axes (napari order: ``(row, col)``)."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view
    transform = view.transform * view.scene.transform
    displayed = [float(world[d]) for d in viewer.dims.displayed[-2:]]
    x, y = transform.map([displayed[1], displayed[0], 0, 1])[:2]
    return QPoint(round(float(x)), round(float(y)))


def click(viewer, qtbot, world, modifier=NO_MODIFIER) -> None:
    """Press and release the left button at ``world`` on the canvas (a real Qt mouse click)."""
    native = viewer.window._qt_viewer.canvas.native
    pos = canvas_pos(viewer, world)
    qtbot.mouseMove(native, pos)
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, modifier, pos)


def key(viewer, qtbot, qt_key, modifier=NO_MODIFIER) -> None:
    """Press and release ``qt_key`` (e.g. ``Qt.Key.Key_Return``) on the canvas."""
    native = viewer.window._qt_viewer.canvas.native
    native.setFocus()
    qtbot.keyClick(native, qt_key, modifier)


def near(a, b, tolerance: float = 1.5) -> bool:
    """Whether two coordinates differ by at most ``tolerance`` on every axis."""
    return bool(np.all(np.abs(np.asarray(a, float) - np.asarray(b, float)) <= tolerance))
