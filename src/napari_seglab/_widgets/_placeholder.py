"""A dock widget that says its capability is not available in this build yet."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class PlaceholderWidget(QWidget):
    """Shows a short message in place of a capability still being built.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    title : str
        Capability name shown in bold.
    issue : str
        Where to follow progress.
    """

    def __init__(self, napari_viewer, title: str, issue: str) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.message = QLabel(
            f"<b>{title}</b><br>Not available in this version yet ({issue}).<br>"
            "The Python API and the <code>seglab</code> command will land with it."
        )
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.available = False
