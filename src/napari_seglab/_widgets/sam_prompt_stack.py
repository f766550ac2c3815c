"""The 3D part of the SAM prompting widget: background embeddings and propagation.

A mixin of :class:`~napari_seglab._widgets.sam_prompt.SamPromptWidget`; it
uses the widget's ``session``, ``jobs``, ``form``, ``prompt_layers`` and
buttons. Neighbouring planes are embedded in the background, nearest first,
into the session's cache (memory and disk, so a reopened image is instant);
the widget cancels that queue when a click needs a plane not embedded yet
and restarts it after the click's prediction. Propagation runs as a job with
a Cancel button; a cancelled propagation changes no layer.

With a SAM 2 model, Propagate tracks the object with SAM 2's memory
(:class:`~napari_seglab.sam.sam2_stack.Sam2StackObjects`): the first time
from the shown proposal (a mask prompt on its plane) and the prompts of the
other planes, writing a new object; afterwards, while the same pending object
stays active, clicks on any plane followed by Propagate correct that object:
only the planes between the neighbouring prompted planes are tracked again,
and the object is replaced there, in one undo step. A new pending object
(Objects panel), a commit or a new image or model starts a new object.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._layers import show_info
from ._layers import write_labels as _write_labels

__all__ = ["StackPrompting"]


class StackPrompting:
    """Background embeddings of neighbouring planes and propagation through the stack."""

    def _on_plane_changed(self, event=None) -> None:
        if self.prompt_layers is not None and self.session.is_stack:
            self._precompute_neighbours()

    def _precompute_neighbours(self) -> None:
        """Embed the visible plane, then its neighbours, in the background (to the disk cache)."""
        if self.session.model is None or self.session.source is None or self.jobs.closed:
            return
        if self.session.is_stack and not self.form.neighbours.value:
            return
        order = self.session.neighbour_order(self.plane())
        self.jobs.start(
            "neighbours",
            self.session.embedding_job,
            order,
            what="SAM embedding",
            progress={"total": len(order), "desc": "SAM embeddings"},
            on_yielded=self._on_embedded,
        )

    def _on_embedded(self, event) -> None:
        """Report background progress only while it hides nothing (no prompt, no proposal)."""
        if not self.session.has_prompts and self.session.prediction is None:
            plane = getattr(event, "plane", "")
            self._set_status(f"Embedded plane {plane} ({event.done}/{event.total}).")

    def propagate(self) -> None:
        """Extend the previewed (or last committed) object through the stack in a worker."""
        if self.prompt_layers is None or not self.session.is_stack:
            show_info("Propagation needs a 3D stack and a model: press 'Start prompting'.")
            return
        if getattr(self.session.model, "is_sam2", False):
            self._propagate_sam2()
            return
        last = self.session.last_object
        target = last[0] if last is not None and self.session.prediction is None else None
        self._set_status("Propagating…")
        self.propagate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.jobs.start(
            "propagate",
            self.session.propagation_job,
            self.plane(),
            None if target is None else target.data,
            what="SAM propagation",
            on_yielded=lambda s: self._set_status(f"Propagating: plane {s.plane} ({s.done})"),
            on_returned=self._on_propagated,
            on_cancelled=lambda exc: self._set_status("Propagation cancelled; no layer changed."),
            on_finished=self._propagation_finished,
        )

    def _propagation_finished(self) -> None:
        self.propagate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_propagated(self, result) -> None:
        labels = result.handle if result.handle is not None else self.target_labels()
        self._write(labels, partial(self.session.apply_propagation, result))

    # -- SAM 2: memory tracking ------------------------------------------------------------
    def _sam2_objects(self):
        from ..sam.sam2_stack import Sam2StackObjects

        if getattr(self, "_sam2", None) is None:
            self._sam2 = Sam2StackObjects()
        return self._sam2

    def _sam2_target(self):
        """``(layer, label id)`` the active object was written as by SAM 2, else ``(None, 0)``."""
        link = getattr(self, "_sam2_link", None)
        if link is None:
            return None, 0
        uid, layer, label_id = link
        objects = self._sam2_objects()
        alive = uid == self.session.active_object.uid and layer in self.viewer.layers
        current = objects.is_for(self.session.model, self.session.source)
        if not (alive and current and objects.tracks(label_id)):
            return None, 0
        if not np.any(np.asarray(layer.data) == label_id):  # undone, or painted away
            return None, 0
        return layer, label_id

    def _propagate_sam2(self) -> None:
        """Track the active object with SAM 2 (new, or corrected by the clicks shown)."""
        session = self.session
        layer, label_id = self._sam2_target()
        link = getattr(self, "_sam2_link", None)
        if link is not None and not label_id:  # no way back to that object: free its memory
            self._sam2_link = None
            if self._sam2_objects().is_for(session.model, session.source):
                self._sam2_objects().forget(link[2])
        prompts = {p: session.prompts(p) for p in range(session.source.n_planes)}
        prompts = {p: v for p, v in prompts.items() if not v.empty}
        seed = None
        if not label_id and session.prediction is not None:
            seed = (session.prediction_plane, session.mask())
        elif not label_id and not prompts and session.last_object is not None:
            layer, label_id = session.last_object
            plane = self.plane()
            seed = (plane, np.asarray(layer.data[plane]) == label_id)
        self._set_status("Propagating with SAM 2's memory…")
        self.propagate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.jobs.start(
            "propagate",
            self._sam2_objects().job,
            session.model,
            session.source,
            session.cache,
            prompts=prompts,
            seed=seed,
            label_id=label_id,
            what="SAM 2 propagation",
            on_yielded=lambda s: self._set_status(
                f"Tracking: plane {s.plane} ({s.done}/{s.total})"
            ),
            on_returned=partial(self._on_sam2_tracked, layer, session.active_object.uid),
            on_cancelled=self._on_sam2_cancelled,
            on_finished=self._propagation_finished,
        )

    def _on_sam2_step(self, step) -> None:
        self._set_status(f"Tracking: plane {step.plane} ({step.done}/{step.total})")

    def _on_sam2_cancelled(self, exc) -> None:
        update = getattr(exc, "partial", None)
        if update is not None and not update.label_id:  # finished as it was cancelled
            self._sam2_objects().tracker.remove_object(update.tracker_id)
        self._set_status("Propagation cancelled; no layer changed.")

    def _on_sam2_tracked(self, layer, uid, update) -> None:
        """Write the tracked object: a new object, or replace it on the propagated planes."""
        from ..sessions import PropagationResult

        objects = self._sam2_objects()
        if update.label_id and layer is not None and layer in self.viewer.layers:
            indices, values = update.changes(layer.data, overwrite=self.form.overwrite.value)
            _write_labels(layer, indices, values)
            objects.remember(update.label_id, update.tracker_id)
            self._sam2_link = (uid, layer, update.label_id)
            self.session.last_object = (layer, update.label_id)
            self.session.clear_prompts()
            self._set_status(
                f"Object {update.label_id} corrected on planes {update.first}–{update.last}."
            )
            if self.prompt_layers is not None and self.prompt_layers.alive():
                self.prompt_layers.activate()
            return
        labels = self.target_labels()
        result = PropagationResult(update.volume, 0, None)
        value = self._write(labels, partial(self.session.apply_propagation, result))
        if value:
            objects.remember(value, update.tracker_id)
            self._sam2_link = (uid, labels, value)
