"""The helper layers of SAM prompting: points and box in, preview out.

Points are clicked into a Points layer (click: positive, Shift+click:
negative), boxes are drawn as rectangles in a Shapes layer, and the chosen
proposal is shown in a preview Labels layer. The layers share the image's
``scale`` and ``translate``, so their data coordinates are the image's pixel
coordinates: ``(row, col)`` on a 2D image, ``(plane, row, col)`` on a stack.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Points
from qtpy.QtCore import QTimer

from ._preview import PreviewPainter, RepaintHold

__all__ = ["NEGATIVE_MODIFIER", "PromptLayers", "is_negative_click"]

NEGATIVE_MODIFIER = "Shift"
POSITIVE_COLOUR = np.array([0.1, 0.9, 0.2, 1.0])
NEGATIVE_COLOUR = np.array([1.0, 0.1, 0.6, 1.0])
CLICK_DISTANCE = 5  # canvas pixels: napari adds a point when press and release are closer


def is_negative_click(modifiers) -> bool:
    """Whether a mouse event's modifiers hold Shift.

    napari hands vispy ``Key`` objects (``str`` gives ``"<Key 'Shift'>"``);
    they compare equal to their name, and so do plain strings.
    """
    return any(key == NEGATIVE_MODIFIER for key in modifiers or ())


class PromptLayers:
    """Points, box and preview layers over one image, added to ``viewer`` on creation.

    Parameters
    ----------
    viewer : napari.Viewer
    shape : tuple of int
        Label shape of the image: ``(Y, X)`` or ``(Z, Y, X)``.
    geometry : dict
        ``scale`` and ``translate`` of the image's spatial axes.
    on_prompts : callable
        Called without arguments when the user changed a point or a box.
    keys : dict of str to callable
        Key bindings of the points layer (e.g. ``{"Enter": commit}``).
    """

    def __init__(
        self,
        viewer,
        shape: tuple[int, ...],
        geometry: dict,
        on_prompts: Callable[[], None],
        keys: dict[str, Callable[[], object]],
    ) -> None:
        # napari hands plugin widgets a proxy of the viewer that checks every attribute access
        # (and wraps each result) and warns on private ones; these layers are our own, so we
        # work with the viewer and layers themselves (a click touches them many times).
        self.viewer = viewer = getattr(viewer, "__wrapped__", viewer)
        ndim = len(shape)
        self.preview = viewer.add_labels(
            np.zeros(shape, dtype=np.uint8), name="SAM preview", opacity=0.5, **geometry
        )
        self.box = viewer.add_shapes(
            ndim=ndim, name="SAM box", face_color="transparent", edge_color="yellow", **geometry
        )
        self.points = viewer.add_points(
            ndim=ndim,
            name="SAM points",
            size=max(3.0, min(shape[-2:]) / 60),
            features={"positive": np.zeros(0, dtype=bool)},
            feature_defaults={"positive": True},
            face_color="positive",  # a new point takes its colour from its feature when added
            face_color_cycle={True: POSITIVE_COLOUR, False: NEGATIVE_COLOUR},
            **geometry,
        )
        self._pending: tuple[np.ndarray, bool] | None = None  # a clicked point napari adds next
        self.points.mouse_drag_callbacks.insert(0, self._on_click)
        # First in line: the prediction starts before napari's own handlers of the change run.
        self.points.events.data.connect(self._changed, position="first")
        self.box.events.data.connect(self._changed, position="first")
        self.painter = PreviewPainter(self.preview)
        self.hold = RepaintHold(self._window)
        self._on_prompts = on_prompts
        for key, action in keys.items():
            self.points.bind_key(key, lambda layer, action=action: action(), overwrite=True)
        self.activate()

    @property
    def layers(self) -> tuple:
        return (self.points, self.box, self.preview)

    def alive(self) -> bool:
        """Whether the points layer is still in the viewer."""
        return self.points in self.viewer.layers

    def activate(self) -> None:
        """Put the prompt layers on top and select the points layer in add mode."""
        layers = self.viewer.layers
        for layer in (self.preview, self.box, self.points):
            if layer in layers and layers.index(layer) != len(layers) - 1:
                layers.move(layers.index(layer), len(layers))
        if self.points in layers:
            layers.selection.active = self.points
            self.points.mode = "add"

    def add_below(self, layer) -> None:
        """Add ``layer`` (e.g. a new target Labels layer) under the prompt layers."""
        layers = self.viewer.layers
        index = min(layers.index(x) for x in self.layers if x in layers)
        layers.insert(index, layer)
        self.activate()

    def _window(self):
        """The viewer's main window (its repaints are held while a click is predicted)."""
        qt_viewer = getattr(self.viewer.window, "_qt_viewer", None)
        return None if qt_viewer is None else qt_viewer.window()

    def _on_click(self, layer: Points, event):
        """Mouse press on the points layer, then its release.

        The point added by this click is negative when Shift is held. In add
        mode a click (released within :data:`CLICK_DISTANCE` of the press)
        asks for its prediction at once, with the clicked point as pending,
        before napari adds the point (and updates the viewer's dimensions,
        selection and drawing, all on the path of the click otherwise).
        """
        positive = not is_negative_click(event.modifiers)
        if bool(np.asarray(layer.feature_defaults["positive"])[0]) != positive:
            layer.feature_defaults = {"positive": positive}
        if layer.mode != "add":
            return
        press = np.asarray(event.pos, dtype=float)
        yield
        while event.type == "mouse_move":
            yield
        if np.linalg.norm(press - np.asarray(event.pos, dtype=float)) >= CLICK_DISTANCE:
            return  # a drag: napari pans, no point
        position = np.asarray(layer.world_to_data(event.position), dtype=float)
        self._pending = (position.reshape(-1)[-layer.ndim :], positive)
        QTimer.singleShot(0, self._pending_not_added)
        self._prompts_changed()

    def _pending_not_added(self) -> None:
        """After the click: napari did not add the pending point, so it is no prompt."""
        if self._pending is not None:
            self._pending = None
            self._prompts_changed()

    def _changed(self, event=None) -> None:
        if str(getattr(event, "action", "")) in ("adding", "removing", "changing"):
            return  # napari announces a change before making it; act once it is made
        pending, self._pending = self._pending, None
        if pending is not None and event is not None and event.source is self.points:
            data = np.asarray(self.points.data, dtype=float)
            positive = np.asarray(self.points.features["positive"], dtype=bool)
            if len(data) and np.allclose(data[-1], pending[0]) and positive[-1] == pending[1]:
                self._colour_points()
                return  # the point asked for on release: its prediction is on its way
        self._colour_points()
        self._prompts_changed()

    def _prompts_changed(self) -> None:
        self.hold.hold()  # draw the new prompt together with its preview
        self._on_prompts()

    def _colour_points(self) -> None:
        """Colours from the ``positive`` feature (set when a point is added; this catches
        points whose feature was changed afterwards)."""
        layer = self.points
        if not len(layer.data):
            return
        positive = np.asarray(layer.features["positive"], dtype=bool)
        colours = np.where(positive[:, None], POSITIVE_COLOUR, NEGATIVE_COLOUR)
        if not np.allclose(np.asarray(layer.face_color), colours, atol=1e-6):
            layer.face_color = colours

    def prompts(self, plane: int | None) -> dict:
        """Keyword arguments of ``SamPromptSession.set_prompts`` for ``plane``.

        On a stack only points and boxes lying on ``plane`` count; the last
        rectangle drawn is the box.
        """
        points = np.asarray(self.points.data, dtype=float).reshape(-1, self.points.ndim)
        positive = np.asarray(self.points.features.get("positive", np.ones(len(points), bool)))
        if self._pending is not None:  # clicked, napari adds it next
            points = np.vstack([points, self._pending[0]])
            positive = np.append(positive, self._pending[1])
        if plane is not None:
            keep = np.round(points[:, 0]) == plane
            points, positive = points[keep], positive[keep]
        box = None
        for vertices, kind in zip(reversed(self.box.data), reversed(self.box.shape_type)):
            vertices = np.asarray(vertices, dtype=float)
            if kind != "rectangle":
                continue
            if plane is not None and not np.all(np.round(vertices[:, 0]) == plane):
                continue
            rc = vertices[:, -2:]
            box = (*rc.min(axis=0), *rc.max(axis=0))
            break
        return {"points": points[:, -2:], "positive": positive.astype(bool), "box": box}

    def clear(self) -> None:
        """Remove every point and box (without reporting a prompt change)."""
        for layer in (self.points, self.box):
            if len(layer.data):
                with layer.events.data.blocker():
                    layer.data = []
        self.points.feature_defaults = {"positive": True}

    def show(self, mask: np.ndarray | None, plane: int | None) -> None:
        """Show ``mask`` ``(Y, X)`` on ``plane`` (None: 2D or nothing) in the preview.

        Only the region that changed is rewritten and redrawn; held repaints resume.
        """
        self.painter.show(mask, plane)
        self.hold.done()

    def remove(self) -> None:
        """Take the helper layers out of the viewer."""
        self.hold.release()
        self.painter.stop()
        for layer in self.layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
