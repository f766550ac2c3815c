"""U-Net train / predict dock widget (placeholder until issue 4 lands)."""

from __future__ import annotations

from ._placeholder import PlaceholderWidget


class UNetWidget(PlaceholderWidget):
    """U-Net train / predict: not available in this build yet."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer, "U-Net train / predict", "issue 4")
