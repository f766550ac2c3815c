"""CRF refinement dock widget (placeholder until issue 5 lands)."""

from __future__ import annotations

from ._placeholder import PlaceholderWidget


class CrfWidget(PlaceholderWidget):
    """CRF refinement: not available in this build yet."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer, "CRF refinement", "issue 5")
