"""The 3D part of the SAM prompting widget: background embeddings and propagation.

A mixin of :class:`~napari_seglab._widgets.sam_prompt.SamPromptWidget`; it
uses the widget's ``session``, ``jobs``, ``form``, ``prompt_layers`` and
buttons. Neighbouring planes are embedded in the background, nearest first,
into the session's cache (memory and disk, so a reopened image is instant);
the widget cancels that queue when a click needs a plane not embedded yet
and restarts it after the click's prediction. Propagation runs as a job with
a Cancel button; a cancelled propagation changes no layer.
"""

from __future__ import annotations

from functools import partial

from ._layers import show_info

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
