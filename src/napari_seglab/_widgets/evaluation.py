"""Dice / IoU evaluation dock widget (placeholder until issue 6 lands)."""

from __future__ import annotations

from ._placeholder import PlaceholderWidget


class EvaluationWidget(PlaceholderWidget):
    """Dice / IoU evaluation: not available in this build yet."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer, "Dice / IoU evaluation", "issue 6")
