"""The layer boxes of the SAM prompting widget: images and target labels, helpers left out.

A mixin of :class:`~napari_seglab._widgets.sam_prompt.SamPromptWidget`; it
uses the widget's ``viewer``, ``prompt_layers`` and ``objects_panel``. The
boxes' choices come from this widget's own viewer, leaving out the widget's
helper layers (the preview, the pending objects, the class layer), so none is
offered as an image or a target.
"""

from __future__ import annotations

from napari.layers import Image, Labels

__all__ = ["NEW_LABELS", "LayerChoices"]

NEW_LABELS = "<new labels layer>"


class LayerChoices:
    """``choices`` callables of the image and target boxes."""

    def _own_layers(self) -> tuple:
        layers = self.prompt_layers.layers if self.prompt_layers is not None else ()
        panels = (getattr(self, "objects_panel", None), getattr(self, "tools_panel", None))
        return (*layers, *(x for p in panels if p is not None for x in p.layers))

    def _image_choices(self, widget=None) -> list:
        own = self._own_layers()
        return [(x.name, x) for x in self.viewer.layers if isinstance(x, Image) and x not in own]

    def _labels_choices(self, widget=None) -> list:
        own = self._own_layers()
        layers = [x for x in self.viewer.layers if isinstance(x, Labels) and x not in own]
        return [(NEW_LABELS, None), *((x.name, x) for x in layers)]
