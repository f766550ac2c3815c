"""The base of the SAM dock widgets: scrollable content, live layer choices, clean closing.

A dock built from rows of controls inside a scroll area (usable on a 900 px
screen), whose magicgui forms refresh their layer choices when docked and
when napari reports a layer change (napari calls ``reset_choices``), and
which tears down (cancels its jobs, removes what it added) when it is taken
out of its dock, closed, destroyed, or when the application quits.
"""

from __future__ import annotations

from contextlib import suppress

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QApplication, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ._controls import scroll_area
from ._jobs import WidgetJobs

__all__ = ["DockShell"]


class DockShell(QWidget):
    """A dock widget body: rows of controls, magicgui forms, background jobs.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    viewer : napari.Viewer
    jobs : WidgetJobs
        Cancelled, and silenced, when the widget goes away.
    forms : list of magicgui Container
        Refreshed by :meth:`reset_choices`.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.jobs = WidgetJobs()
        self.forms: list = []
        self._docked = False
        self.destroyed.connect(self.jobs.close)  # a WidgetJobs method: holds no widget
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.jobs.close)

    def set_rows(self, rows) -> None:
        """Lay out ``rows`` (lists of QWidgets or magicgui widgets) in a scroll area."""
        content = QWidget()
        layout = QVBoxLayout(content)
        for widgets in rows:
            row = QHBoxLayout()
            for widget in widgets:
                widget = getattr(widget, "native", widget)
                if isinstance(widget, QLabel):
                    widget.setWordWrap(True)
                row.addWidget(widget)
            layout.addLayout(row)
        layout.addStretch(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll_area(content))

    def reset_choices(self, event=None) -> None:
        """Refresh the layer choices (napari calls this when layers change)."""
        for form in self.forms:
            with suppress(RuntimeError):
                form.reset_choices()

    def event(self, event) -> bool:
        """Docked: fill the layer boxes. Taken out of its dock (closed): tear down."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                self.reset_choices()
            elif self._docked:
                self.teardown()
        return super().event(event)

    def closeEvent(self, event) -> None:
        self.teardown()
        super().closeEvent(event)

    def teardown(self) -> None:
        """Cancel the jobs; subclasses also remove what they added to the viewer."""
        self.jobs.close()
