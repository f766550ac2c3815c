"""SAM decoder fine-tuning dock widget (placeholder until issue 7 lands)."""

from __future__ import annotations

from ._placeholder import PlaceholderWidget


class SamFinetuneWidget(PlaceholderWidget):
    """SAM decoder fine-tuning: not available in this build yet."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer, "SAM decoder fine-tuning", "issue 7")
