"""Saved SAM sessions in the prompting dock: autosave, and resume when the image has one.

A mixin of :class:`~napari_seglab._widgets.sam_objects.ObjectsPanel`. When
prompting starts on an image, its session folder is looked up (beside the
image file, else in the cache folder by content fingerprint:
:mod:`napari_seglab.sessions.sam_store`). A session made on this image is
offered ("Resume" / "Start over"); autosave stays off until the user chose,
so a saved session is never overwritten by accident. A session folder of
another image (same file name, changed pixels) is never applied and never
overwritten: the cache folder is used instead.

Once attached, the session saves its labels after each commit (the core
does it) and its pending prompts half a second after the last change (here,
on the GUI thread: one small JSON file), and when the widget closes; a crash
loses at most that last half second of prompts. Resuming writes the saved
labels into the target layer through napari's undo, puts the pending
objects and their prompts back and recomputes their proposals in a worker.

The saved labels follow the Labels layer the session writes into (the
target of the last commit, tool write or resume): napari emits ``paint`` for
a write and a brush stroke and only ``set_data`` (a refresh) for
``layer.undo()`` / ``redo()``, so both are watched, a refresh counting only
when the layer's undo history moved. One second after the last change
(:data:`LABELS_SAVE_DELAY_MS`, debounced on the GUI thread: the labels are
rewritten whole, about 0.17 s for 64x512x512) the committed objects follow
the layer (:meth:`~napari_seglab.sessions.SamPromptSession.follow_labels`),
its ``features`` get the classes and the session is saved with the labels.
Tool writes (refine, segment everything accepted) are recorded and saved at
once (:meth:`SessionFiles.tool_wrote`).
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QPushButton

from ..sessions import SessionMismatch, SessionStore, load_session, restore_session
from ..sessions.sam_store import session_folder
from ._layers import notify_error, replace_labels, show_info, show_warning

__all__ = ["LABELS_SAVE_DELAY_MS", "SAVE_DELAY_MS", "SessionFiles"]

#: Pending prompts are saved this long after their last change.
SAVE_DELAY_MS = 500
#: The labels are saved this long after the watched layer's last change (undo, redo, brush).
LABELS_SAVE_DELAY_MS = 1000


def _history_state(layer) -> tuple:
    """Where ``layer``'s undo history stands (napari's private lists; a change if unknown)."""
    undo = getattr(layer, "_undo_history", None)
    redo = getattr(layer, "_redo_history", None)
    if undo is None or redo is None:
        return (object(),)
    return len(undo), len(redo), id(undo[-1]) if len(undo) else None


class SessionFiles:
    """Finding, offering, resuming and saving the session of the prompted image."""

    def _init_files(self) -> None:
        self.store: SessionStore | None = None
        self.saved = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_DELAY_MS)
        self._timer.timeout.connect(self.flush)
        self.watched = None
        self._saved_state: tuple = ()
        self._labels_timer = QTimer(self)
        self._labels_timer.setSingleShot(True)
        self._labels_timer.setInterval(LABELS_SAVE_DELAY_MS)
        self._labels_timer.timeout.connect(self.follow_layer)

    def _file_rows(self) -> list:
        self.resume_label = QLabel("")
        self.resume_label.setWordWrap(True)
        self.resume_button = QPushButton("Resume saved session")
        self.resume_button.clicked.connect(self.resume)
        self.fresh_button = QPushButton("Start over")
        self.fresh_button.clicked.connect(self.start_over)
        self._offer(None)
        return [[self.resume_label], [self.resume_button, self.fresh_button]]

    def _offer(self, text: str | None) -> None:
        for item in (self.resume_label, self.resume_button, self.fresh_button):
            item.setVisible(text is not None)
        self.resume_label.setText(text or "")

    # -- when prompting starts -------------------------------------------------------------
    def started(self, image) -> None:
        """Prompting (re)started on the image layer ``image``: find its saved session."""
        self._timer.stop()
        self.unwatch()
        self._remove_pending_layer()
        self._shown_uid = None
        self.saved, self.store = None, None
        self._offer(None)
        try:
            self._find(image)
        except (OSError, ValueError) as exc:
            notify_error(exc, "SAM session")
        self._on_objects()

    def _find(self, image) -> None:
        """Offer the first saved session made on this image; else autosave to a free folder."""
        path = getattr(image.source, "path", None)
        first = SessionStore.for_session(self.session, path, name=image.name)
        cache = session_folder(None, first.image["fingerprint"])
        stores = [SessionStore(f, first.image) for f in dict.fromkeys([first.folder, cache])]
        for store in (s for s in stores if s.exists()):
            try:
                saved = load_session(store.folder)
                saved.check_image(self.session.source.data)
            except SessionMismatch as exc:
                show_warning(str(exc))  # another image's session: never applied nor overwritten
                continue
            except (OSError, ValueError) as exc:
                show_warning(f"Saved session in {store.folder} not read ({exc}); autosave is off.")
                return
            self.saved, self.store = saved, store
            pending = sum(bool(p.get("prompts")) for p in saved.pending)
            self._offer(
                f"A saved session of this image ({saved.saved_at}): {len(saved.committed)} "
                f"committed, {pending} pending objects. Autosave is off until you choose."
            )
            return
        free = [s for s in stores if not s.exists()]
        if not free:
            show_warning("No session folder free for this image: autosave is off.")
            return
        self.store = self.session.store = free[0]

    # -- the user's choice -----------------------------------------------------------------
    def resume(self) -> None:
        """Put the saved session back: labels (undoable), classes, pending objects, prompts."""
        saved = self.saved
        if saved is None:
            return
        try:
            warnings = restore_session(self.session, saved)
        except SessionMismatch as exc:
            notify_error(exc, "SAM session")
            return
        for text in warnings:
            show_warning(text)
        layer = None
        if saved.labels is not None:
            layer = self.widget.target_labels()
            if layer.data.shape != saved.labels.shape:
                self.widget.form.target.value = None
                layer = self.widget.target_labels()
            replace_labels(layer, saved.labels.astype(layer.data.dtype, copy=False))
            if saved.labels.any():
                self.session.last_object = (layer, int(saved.labels.max()))
        settings = self.session.settings
        with suppress(KeyError, TypeError, ValueError):
            self.widget.form.overwrite.value = bool(settings["overwrite"])
        self.class_layer_box.setChecked(bool(settings.get("class_layer", False)))
        self.store.adopt(saved)
        self.session.store, self.saved = self.store, None
        self._offer(None)
        if layer is not None:
            self.apply_classes(layer)
            self.watch(layer)
        show_info(f"Resumed the SAM session of {saved.saved_at}.")
        self._predict_pending()

    def start_over(self) -> None:
        """Ignore the saved session; autosave from now on replaces it."""
        self.saved = None
        self.session.store = self.store
        self._offer(None)

    def _predict_pending(self) -> None:
        if self.session.model is None or not any(o.has_prompts for o in self.session.objects):
            return
        self.widget.jobs.start(
            "resume",
            self.session.pending_predictions_job,
            what="SAM resume",
            cancellable=False,
            on_returned=lambda results: [self.session.accept(r) for r in results],
        )

    # -- saving ----------------------------------------------------------------------------
    def save_soon(self) -> None:
        """Save the pending prompts shortly (restarts the delay on every change)."""
        if self.session.store is not None and self._alive():
            with suppress(RuntimeError):
                self._timer.start()

    def flush(self, labels=None) -> None:
        """Save now (the pending prompts; ``labels`` too if given)."""
        with suppress(RuntimeError):
            self._timer.stop()
        if self.session.store is None:
            return
        try:
            self.session.save(labels)
        except (OSError, ValueError) as exc:
            notify_error(exc, "SAM session not saved")

    def save_after_undo(self, layer) -> None:
        """Labels changed outside a commit (an undo): follow them and save now."""
        self.follow_layer(layer)

    # -- following the labels layer --------------------------------------------------------
    def watch(self, layer) -> None:
        """Follow ``layer``'s changes (undo, redo, brush): the saved labels track it."""
        if layer is self.watched:
            self._saved_state = _history_state(layer)
            return
        self.unwatch()
        self.watched = layer
        layer.events.paint.connect(self._on_layer_changed)
        layer.events.data.connect(self._on_layer_changed)
        layer.events.set_data.connect(self._on_layer_refreshed)
        self._saved_state = _history_state(layer)

    def unwatch(self) -> None:
        """Stop following the watched layer (no pending labels save)."""
        with suppress(RuntimeError):
            self._labels_timer.stop()
        layer, self.watched = self.watched, None
        if layer is not None:
            for event, slot in (
                (layer.events.paint, self._on_layer_changed),
                (layer.events.data, self._on_layer_changed),
                (layer.events.set_data, self._on_layer_refreshed),
            ):
                with suppress(Exception):
                    event.disconnect(slot)

    def _on_layer_refreshed(self, event=None) -> None:
        """A refresh (also on every slice change) counts when the undo history moved."""
        if self.watched is not None and _history_state(self.watched) != self._saved_state:
            self._on_layer_changed()

    def _on_layer_changed(self, event=None) -> None:
        if self.session.store is not None and self._alive():
            with suppress(RuntimeError):
                self._labels_timer.start()

    def saved_now(self, layer) -> None:
        """The session was just saved with ``layer``'s labels (a commit): no follow-up save."""
        self.watch(layer)
        with suppress(RuntimeError):
            self._labels_timer.stop()

    def follow_layer(self, layer=None) -> None:
        """Committed objects, classes and saved labels follow ``layer`` (default: the watched)."""
        layer = self.watched if layer is None else layer
        with suppress(RuntimeError):
            self._labels_timer.stop()
        if layer is None or layer not in self.viewer.layers or self.session.source is None:
            return
        self._saved_state = _history_state(layer)
        if tuple(layer.data.shape) != tuple(self.session.labels_shape):
            return  # not labels of the prompted image
        data = np.asarray(layer.data)
        self.session.follow_labels(data)
        self.apply_classes(layer)
        if self.session.store is not None:
            self.flush(data)

    def tool_wrote(self, layer, ids, *, class_id: int = 0, plane=None) -> list[int]:
        """A tool wrote ``ids`` into ``layer``: record them, give features, save the labels.

        New ids are recorded as committed objects of class ``class_id`` (0: no
        class); ids already recorded keep their class. Returns the new ids.
        """
        added = self.session.record_objects(ids, class_id=class_id, plane=plane)
        self.watch(layer)
        self.follow_layer(layer)
        return added
