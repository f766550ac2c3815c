"""Prompting objects through a stack with SAM 2: prompts on any plane, then propagate again.

:class:`Sam2StackObjects` keeps one :class:`~.sam2_tracker.Sam2Tracker` per
(model, image) and remembers which tracked object became which label id, so
that new clicks on another plane of an object already written correct that
object: the tracker keeps the prompts of every plane it was given, the new
plane becomes a prompted plane, and only its affected range (see
:func:`~.sam2_video.affected_range`) is propagated again.

:meth:`Sam2StackObjects.job` is a job (:mod:`napari_seglab.jobs`) returning a
:class:`Sam2Update`; :meth:`Sam2Update.changes` gives the label writes that
replace the object on the planes that were propagated (one undo step in a
widget). Prompts are ``(row, col)`` points, ``positive`` flags and an optional
``(row0, col0, row1, col1)`` box per plane (any object with ``points``,
``positive`` and ``box`` attributes, e.g. the session's ``PlanePrompts``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jobs import CancelLike, JobCancelled
from .sam2_tracker import Sam2Tracker

__all__ = ["Sam2StackObjects", "Sam2Update"]


@dataclass(frozen=True)
class Sam2Update:
    """What :meth:`Sam2StackObjects.job` returns.

    Attributes
    ----------
    volume : bool array ``(Z, Y, X)``
        The object through the stack, as the tracker holds it now.
    first, last : int
        The planes propagated this time (both included); the others were
        left as they were.
    label_id : int
        The object's label id, or 0 for an object not written yet.
    tracker_id : int
        The object's id in the tracker.
    """

    volume: np.ndarray
    first: int
    last: int
    label_id: int
    tracker_id: int

    def changes(self, labels: Any, *, overwrite: bool = False) -> tuple[tuple, np.ndarray]:
        """Writes that make ``labels`` hold this object on planes ``first..last``.

        Pixels of ``label_id`` outside the new masks become 0; pixels inside
        become ``label_id`` where they are 0 (or any other id with
        ``overwrite``). ``labels`` (``(Z, Y, X)`` int) is only read.

        Returns
        -------
        indices : tuple of int arrays
            Full-volume indices, as for ``labels[indices] = values``.
        values : int array
        """
        if not self.label_id:
            raise ValueError("A new object has no label id yet: write it as a new object.")
        region = np.asarray(labels[self.first : self.last + 1])
        inside = self.volume[self.first : self.last + 1]
        drop = (region == self.label_id) & ~inside
        free = region != self.label_id if overwrite else region == 0
        take = inside & free
        z0, r0, c0 = np.nonzero(drop)
        z1, r1, c1 = np.nonzero(take)
        indices = (
            np.concatenate([z0, z1]) + self.first,
            np.concatenate([r0, r1]),
            np.concatenate([c0, c1]),
        )
        values = np.concatenate(
            [np.zeros(len(z0), region.dtype), np.full(len(z1), self.label_id, region.dtype)]
        )
        return indices, values


class Sam2StackObjects:
    """A SAM 2 tracker for the current model and image, and the objects it wrote.

    Attributes
    ----------
    tracker : Sam2Tracker or None
        Rebuilt when the model or the image (``SamInput``) changes.
    labels : dict of int to int
        Label id → tracker id of the objects written.
    """

    def __init__(self) -> None:
        self.tracker: Sam2Tracker | None = None
        self.labels: dict[int, int] = {}
        self._for: tuple[Any, Any] = (None, None)

    def tracker_for(self, model: Any, source: Any, cache: Any = None) -> Sam2Tracker:
        """The tracker of ``model`` over ``source`` (a new one, forgetting objects, if changed)."""
        if self.tracker is None or self._for[0] is not model or self._for[1] is not source:
            self.tracker = Sam2Tracker(model, source, cache=cache)
            self.labels = {}
            self._for = (model, source)
        return self.tracker

    def is_for(self, model: Any, source: Any) -> bool:
        """Whether the tracker is the one of ``model`` over ``source``."""
        return self.tracker is not None and self._for[0] is model and self._for[1] is source

    def tracks(self, label_id: int) -> bool:
        """Whether ``label_id`` is an object this tracker wrote."""
        return int(label_id) in self.labels

    def forget(self, label_id: int) -> None:
        """Drop ``label_id``'s object from the tracker (its prompts, memory and masks)."""
        tracker_id = self.labels.pop(int(label_id), None)
        if tracker_id is not None and tracker_id in self.tracker.object_ids:
            self.tracker.remove_object(tracker_id)

    def remember(self, label_id: int, tracker_id: int) -> None:
        """Record that ``tracker_id`` was written as ``label_id``."""
        if label_id:
            self.labels[int(label_id)] = int(tracker_id)

    def job(
        self,
        model: Any,
        source: Any,
        cache: Any = None,
        *,
        prompts: Mapping[int, Any] | None = None,
        seed: tuple[int, np.ndarray] | None = None,
        label_id: int = 0,
        cancel: CancelLike = None,
    ) -> Generator[Any, None, Sam2Update]:
        """Give the tracker new prompts for one object and propagate what they affect.

        Parameters
        ----------
        model : Sam2Model
        source : SamInput
            The stack ``(Z, Y, X[, 3])`` or time series.
        cache : EmbeddingCache, optional
        prompts : mapping of plane to prompts, optional
            Points, positive flags and box per plane.
        seed : (plane, bool array ``(Y, X)``), optional
            A mask prompt (a chosen proposal, or the object as written).
        label_id : int
            The object's label id: one this tracker wrote is corrected (its
            earlier prompts stay); another is tracked afresh (from ``seed``)
            and replaced. 0 starts a new object.
        cancel : threading.Event or callable, optional

        Returns
        -------
        Sam2Update
            Generator return value.

        Raises
        ------
        ValueError
            Without any prompt or seed.
        JobCancelled
            Nothing is kept: a new object is forgotten; an existing one keeps
            its masks (its new prompts wait for the next propagation).
        """
        tracker = self.tracker_for(model, source, cache)
        prompts = {int(p): v for p, v in (prompts or {}).items() if not _empty(v)}
        if seed is not None and not np.asarray(seed[1]).any():
            raise ValueError(f"The object is not on plane {seed[0]}: nothing to propagate.")
        if not prompts and seed is None:
            raise ValueError("Nothing to propagate: click on the object or commit it first.")
        known = label_id and self.tracks(label_id)
        tracker_id = self.labels[int(label_id)] if known else _new_id(tracker)
        if seed is not None:
            tracker.set_mask(int(seed[0]), tracker_id, seed[1])
        for plane, given in sorted(prompts.items()):
            if seed is not None and plane == int(seed[0]):
                continue  # the chosen proposal stands for these prompts
            labels = np.asarray(given.positive, dtype=int)
            tracker.set_points(plane, tracker_id, given.points, labels, box=given.box)
        planes = []
        try:
            job = tracker.propagate_steps([tracker_id], cancel=cancel)
            while True:
                try:
                    step = next(job)
                except StopIteration as stop:
                    volume = stop.value[tracker_id]
                    break
                planes.append(step.plane)
                yield step
        except JobCancelled:
            if not known:
                tracker.remove_object(tracker_id)
            raise
        first, last = (min(planes), max(planes)) if planes else (0, -1)
        return Sam2Update(volume, first, last, int(label_id), tracker_id)


def _empty(prompts: Any) -> bool:
    return len(getattr(prompts, "points", ())) == 0 and getattr(prompts, "box", None) is None


def _new_id(tracker: Sam2Tracker) -> int:
    return max(tracker.object_ids, default=0) + 1
