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
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QPushButton

from ..sessions import SessionMismatch, SessionStore, load_session, restore_session
from ..sessions.sam_store import session_folder
from ._layers import notify_error, replace_labels, show_info, show_warning

__all__ = ["SAVE_DELAY_MS", "SessionFiles"]

#: Pending prompts are saved this long after their last change.
SAVE_DELAY_MS = 500


class SessionFiles:
    """Finding, offering, resuming and saving the session of the prompted image."""

    def _init_files(self) -> None:
        self.store: SessionStore | None = None
        self.saved = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_DELAY_MS)
        self._timer.timeout.connect(self.flush)

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
        """Labels changed outside a commit (an undo): forget gone objects, save the labels."""
        if self.session.store is None or self.session.source is None:
            return
        data = np.asarray(layer.data)
        present = set(np.unique(data).tolist())
        for object_id in [k for k in self.session.committed_objects if k not in present]:
            del self.session.committed_objects[object_id]
        self.apply_classes(layer)
        self.flush(data)
