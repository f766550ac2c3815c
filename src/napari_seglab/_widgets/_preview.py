"""Fast preview drawing for SAM prompting: only the changed region, one frame per click.

:class:`PreviewPainter` writes a mask into a preview Labels layer and redraws
only the bounding box of what changed (the previous mask's box and the new
one's), instead of rewriting and re-uploading the whole layer: on a
2048x2048 image a click touches a few hundred thousand pixels, not four
million. It uses the same partial texture update napari uses for painting; when
that path does not apply (3D display, contours, non-numpy data, a napari
without it) it falls back to a plain refresh.

:class:`RepaintHold` holds a window's repaints from the moment a click
changes the prompts until its preview is shown, for at most
:attr:`RepaintHold.max_hold` (0.4 s): the point and its preview are then
drawn in one frame instead of two, and the prediction does not compete for
the CPU with drawing the point. With software OpenGL one frame of a 1280x900
viewer costs tens of milliseconds, so this takes that much off every click.
When predictions keep taking longer (a slow device), clicks are not held.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress

import numpy as np
from qtpy.QtCore import QCoreApplication, QEvent, QObject, QTimer

__all__ = ["PreviewPainter", "RepaintHold", "mask_box"]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(row0, row1, col0, col1)`` (stops exclusive) of a 2D mask; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


class PreviewPainter:
    """Shows one mask at a time in a preview Labels layer, redrawing only what changed.

    Parameters
    ----------
    layer : napari.layers.Labels
        ``(Y, X)`` or ``(Z, Y, X)``; its pixels outside the shown mask stay 0.
    """

    THUMBNAIL_DELAY_MS = 300

    def __init__(self, layer) -> None:
        self.layer = layer
        self._plane: int | None = None  # plane of the shown mask (None: 2D)
        self._box: tuple[int, int, int, int] | None = None  # its bounding box
        self.partial_updates = 0  # regions redrawn through the partial path (for tests)
        # The layer list's thumbnail follows a moment later, off the click's path.
        self._thumbnail = QTimer()
        self._thumbnail.setSingleShot(True)
        self._thumbnail.setInterval(self.THUMBNAIL_DELAY_MS)
        self._thumbnail.timeout.connect(self._update_thumbnail)

    def show(self, mask: np.ndarray | None, plane: int | None) -> None:
        """Show ``mask`` ``(Y, X)`` on ``plane`` (None: 2D, or nothing when ``mask`` is None)."""
        data = self.layer.data
        stack = data.ndim == 3
        box = None if mask is None else mask_box(mask)
        regions: dict[int | None, tuple] = {}
        if self._box is not None:
            regions[self._plane] = self._box
        if box is not None:
            key = plane if stack else None
            regions[key] = _union(regions.get(key), box)
        full_refresh = False
        for where, (r0, r1, c0, c1) in regions.items():
            target = data[where] if stack else data
            if box is not None and where == (plane if stack else None):
                target[r0:r1, c0:c1] = mask[r0:r1, c0:c1]
            else:
                target[r0:r1, c0:c1] = 0
            if not self._redraw(where, (slice(r0, r1), slice(c0, c1))):
                full_refresh = True
        self._plane, self._box = (plane if stack else None), box
        if full_refresh:
            self.layer.refresh(extent=False, highlight=False)
        elif regions:
            self._thumbnail.start()

    def _update_thumbnail(self) -> None:
        with suppress(AttributeError, RuntimeError):  # another napari; a closed viewer
            self.layer._update_thumbnail()

    def stop(self) -> None:
        """No more thumbnail updates (the layer is going away)."""
        self._thumbnail.stop()

    def _redraw(self, plane: int | None, region: tuple[slice, slice]) -> bool:
        """Redraw ``region`` of ``plane`` on the canvas; False when a full refresh is needed."""
        layer = self.layer
        try:
            if not (
                layer._slicing_state.loaded
                and not layer._slice.empty
                and layer.contour == 0
                and layer._slice_input.ndisplay == 2
                and isinstance(layer.data, np.ndarray)
                and np.shares_memory(layer.data, layer._slice.image.raw)
            ):
                return False
            displayed = list(layer._slice_input.displayed)
            if plane is None:
                if displayed != [0, 1]:
                    return False
                full = region
            else:
                if displayed != [1, 2]:
                    return False
                if int(layer._get_pt_not_disp().get(0, -1)) != plane:
                    return True  # not the plane on screen: nothing to redraw
                full = (slice(plane, plane + 1), *region)
            view = layer._slice.image.view
            view[region] = layer.colormap._data_to_texture(layer._slice.image.raw[region])
            layer._accumulate_updated_slice(full)
            layer._partial_labels_refresh()
        except (AttributeError, TypeError, KeyError):  # another napari: refresh it all
            return False
        self.partial_updates += 1
        return True


class _UpdateFilter(QObject):
    """Swallows a window's update requests (its repaint passes) while ``active``."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.swallowed = False

    def eventFilter(self, obj, event) -> bool:
        if self.active and event.type() == QEvent.Type.UpdateRequest:
            self.swallowed = True
            return True
        return False


class RepaintHold:
    """Holds a window's repaints while a quick prediction runs, for a bounded time.

    Qt collects what changed meanwhile (the new point, the status text) and
    repaints just that, in one pass, when the hold ends.

    Parameters
    ----------
    window : callable
        Returns the top-level QWidget whose repaints are held (the viewer's
        main window), or None when there is none.
    max_hold : float
        Seconds; the longest a click waits for its preview before it is drawn alone.
    """

    def __init__(self, window: Callable[[], object], max_hold: float = 0.4) -> None:
        self._window = window
        self.max_hold = float(max_hold)
        self._held = None
        self._since: float | None = None  # when the held click came
        self.recent: deque[float] = deque(maxlen=3)  # seconds from a held click to its preview
        self._skipped = 0  # clicks not held since predictions were found too slow
        self.holds = 0  # how many times repaints were held (for tests and benchmarks)
        self._filter = _UpdateFilter()
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.release)

    def limit(self) -> float:
        """How long the next hold may last: :attr:`max_hold`, or 0 (do not hold) while the
        last three held clicks all waited longer (every tenth click tries again)."""
        slow = len(self.recent) == self.recent.maxlen and min(self.recent) > self.max_hold
        return 0.0 if slow and self._skipped < 10 else self.max_hold

    @property
    def held(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        """Stop repainting until :meth:`done` or :meth:`release` (or the time limit)."""
        if self._held is not None:
            return
        limit = self.limit()
        self._skipped = self._skipped + 1 if limit <= 0 else 0
        if limit <= 0:
            return
        window = self._window()
        if window is None:
            return
        with suppress(RuntimeError):  # the window went away
            window.installEventFilter(self._filter)
            self._filter.active, self._filter.swallowed = True, False
            self._held = window
            self._since = time.perf_counter()
            self.holds += 1
            self._timer.start(round(limit * 1000))

    def done(self) -> None:
        """The awaited preview is shown: remember how long it took, and repaint."""
        if self._since is not None:
            self.recent.append(time.perf_counter() - self._since)
            self._since = None
        self.release()

    def release(self) -> None:
        """Repaint now what changed while held."""
        self._timer.stop()
        window, self._held = self._held, None
        if window is None:
            return
        self._filter.active = False
        with suppress(RuntimeError):
            window.removeEventFilter(self._filter)
            if self._filter.swallowed:  # Qt waits for the request it sent: send it again
                QCoreApplication.postEvent(window, QEvent(QEvent.Type.UpdateRequest))
