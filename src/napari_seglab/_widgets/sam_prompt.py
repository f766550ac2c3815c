"""SAM point prompting dock widget (placeholder until issue 3 lands)."""

from __future__ import annotations

from ._placeholder import PlaceholderWidget


class SamPromptWidget(PlaceholderWidget):
    """SAM point prompting: not available in this build yet."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer, "SAM point prompting", "issue 3")
