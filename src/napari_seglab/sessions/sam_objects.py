"""Several pending objects and a class table in a SAM prompting session.

A mixin of :class:`~napari_seglab.sessions.SamPromptSession`. The session
holds a list of :class:`~.sam_records.PendingObject` (each its own prompts per
plane and its own proposals); one of them is *active*: clicks, predictions,
``Esc`` and the single-object API (``prediction``, ``proposal``,
``prediction_plane``, :meth:`commit`) act on it. :meth:`commit_all` writes
every pending object that has a proposal in one call of the writer (a widget
makes that one undo step). Each object may carry a class from the session's
class table ``{class id: name}`` (ids from 1; 0 is "no class"); committed
objects are remembered as ``{label id: class id}`` (:attr:`object_classes`),
which :meth:`class_features` turns into a Labels ``features`` table and
:func:`class_image` into a semantic class image.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from psygnal import Signal

from ..jobs import ProgressEvent, run_to_end
from ..objects import next_label
from .sam_records import PendingObject, PredictionResult, Writer

__all__ = ["ObjectsMixin", "class_image", "present_ids"]


class ObjectsMixin:
    """Pending objects, the active one, classes, and committing them together.

    Signals
    -------
    objects_changed()
        An object was added, removed, selected, given a class, or predicted while not active.
    classes_changed()
        The class table changed.
    committed_all(list)
        The label ids written by one commit (after the per-object ``committed`` signals).
    """

    objects_changed = Signal()
    classes_changed = Signal()
    committed_all = Signal(object)

    def _init_objects(self) -> None:
        self.classes: dict[int, str] = {}
        self.committed_objects: dict[int, dict] = {}
        self.settings: dict = {}
        self.store = None
        self._next_uid = 1
        self._reset_at = 0
        self.objects: list[PendingObject] = []
        self._active = self._make_object(0)

    def _make_object(self, class_id: int) -> PendingObject:
        obj = PendingObject(self._next_uid, int(class_id))
        self._next_uid += 1
        self.objects.append(obj)
        return obj

    # -- the active object (what the single-object API reads and writes) --------------------
    @property
    def active_object(self) -> PendingObject:
        """The object that clicks, predictions and :meth:`commit` act on."""
        return self._active

    @property
    def prediction(self):
        """Proposals of the active object (a ``Prediction``, or None)."""
        return self._active.prediction

    @prediction.setter
    def prediction(self, value) -> None:
        self._active.prediction = value

    @property
    def proposal(self) -> int:
        """Index of the active object's chosen proposal."""
        return self._active.proposal

    @proposal.setter
    def proposal(self, value: int) -> None:
        self._active.proposal = int(value)

    @property
    def prediction_plane(self) -> int | None:
        """Plane of the active object's proposals (None on a 2D image)."""
        return self._active.plane

    @prediction_plane.setter
    def prediction_plane(self, value: int | None) -> None:
        self._active.plane = value

    @property
    def _prompts(self) -> dict:
        return self._active.prompts

    def _touch(self) -> None:
        """The active object's prompts changed: results computed before are stale."""
        self.generation += 1
        self._active.changed_at = self.generation

    def _touch_all(self) -> None:
        """A new model or image: every result computed before is stale."""
        self.generation += 1
        self._reset_at = self.generation

    def _result_object(self, result: PredictionResult) -> PendingObject | None:
        """The object ``result`` belongs to, or None when it is gone or the result stale."""
        obj = self._active if result.obj is None else self.find_object(result.obj)
        if obj is None or result.generation < max(obj.changed_at, self._reset_at):
            return None
        return obj

    # -- the object list ------------------------------------------------------------------
    def find_object(self, uid: int) -> PendingObject | None:
        """The pending object with ``uid`` (None when there is none)."""
        return next((obj for obj in self.objects if obj.uid == uid), None)

    def _object(self, uid: int | None) -> PendingObject:
        if uid is None:
            return self._active
        obj = self.find_object(uid)
        if obj is None:
            known = [o.uid for o in self.objects]
            raise ValueError(f"Expected a pending object id in {known}, got {uid}.")
        return obj

    def _activate(self, obj: PendingObject) -> None:
        self._active = obj
        self.objects_changed.emit()
        self.prompts_changed.emit()
        self.prediction_changed.emit()

    def add_object(self, class_id: int | None = None) -> PendingObject:
        """Start a new pending object and make it active.

        Parameters
        ----------
        class_id : int, optional
            Its class (default: the active object's class). When the active
            object is still empty (no prompt, no proposal) it is reused.
        """
        class_id = self._active.class_id if class_id is None else self._check_class(class_id)
        obj = self._active
        if obj.has_prompts or obj.prediction is not None:
            obj = self._make_object(class_id)
        obj.class_id = class_id
        self._activate(obj)
        self.status.emit(f"Object {obj.uid}: click on it.")
        return obj

    def select_object(self, uid: int) -> PendingObject:
        """Make the pending object ``uid`` the active one."""
        obj = self._object(uid)
        if obj is not self._active:
            self._activate(obj)
        return obj

    def delete_object(self, uid: int | None = None) -> None:
        """Drop a pending object (default the active one); an empty one remains at least."""
        obj = self._object(uid)
        index = self.objects.index(obj)
        self.objects.remove(obj)
        if not self.objects:
            self._make_object(obj.class_id)
        self.generation += 1
        if obj is self._active:
            self._activate(self.objects[min(index, len(self.objects) - 1)])
        else:
            self.objects_changed.emit()

    # -- classes --------------------------------------------------------------------------
    def _check_class(self, class_id: int) -> int:
        class_id = int(class_id)
        if class_id != 0 and class_id not in self.classes:
            known = sorted(self.classes)
            raise ValueError(f"Expected a class id in {known} or 0, got {class_id}.")
        return class_id

    def add_class(self, name: str, class_id: int | None = None) -> int:
        """Add a class to the table (default id: the largest + 1); returns its id."""
        name = str(name).strip()
        if not name:
            raise ValueError("Expected a class name, got an empty one.")
        if class_id is None:
            class_id = max(self.classes, default=0) + 1
        class_id = int(class_id)
        if class_id < 1 or class_id in self.classes:
            raise ValueError(
                f"Expected a new class id >= 1 (taken: {sorted(self.classes)}), got {class_id}."
            )
        self.classes[class_id] = name
        self.classes_changed.emit()
        return class_id

    def rename_class(self, class_id: int, name: str) -> None:
        """Give class ``class_id`` a new name."""
        if int(class_id) not in self.classes or not str(name).strip():
            raise ValueError(f"Expected a class id in {sorted(self.classes)} and a name.")
        self.classes[int(class_id)] = str(name).strip()
        self.classes_changed.emit()

    def remove_class(self, class_id: int) -> None:
        """Drop a class no committed object carries; pending objects of it get no class."""
        class_id = self._check_class(class_id)
        used = sorted(k for k, v in self.committed_objects.items() if v["class_id"] == class_id)
        if used:
            raise ValueError(
                f"Expected a class no committed object carries; objects {used} are of class "
                f"{class_id}."
            )
        self.classes.pop(class_id, None)
        for obj in self.objects:
            obj.class_id = 0 if obj.class_id == class_id else obj.class_id
        self.classes_changed.emit()
        self.objects_changed.emit()

    def set_object_class(self, class_id: int, uid: int | None = None) -> None:
        """Give a pending object (default the active one) the class ``class_id`` (0: none)."""
        self._object(uid).class_id = self._check_class(class_id)
        self.objects_changed.emit()

    @property
    def object_classes(self) -> dict[int, int]:
        """``{label id: class id}`` of the objects committed in this session."""
        return {k: int(v["class_id"]) for k, v in sorted(self.committed_objects.items())}

    def class_features(self) -> dict[str, np.ndarray]:
        """Columns of a Labels ``features`` table: ``index`` (label id), ``class``, its name."""
        table = self.object_classes
        ids = np.array(list(table), dtype=np.int64)
        classes = np.array(list(table.values()), dtype=np.int64)
        names = np.array([self.classes.get(int(c), "") for c in classes], dtype=object)
        return {"index": ids, "class": classes, "class_name": names}

    # -- committing -----------------------------------------------------------------------
    def commit_all(
        self,
        labels,
        *,
        overwrite: bool = False,
        writer: Writer | None = None,
        handle: Any = None,
    ) -> list[int]:
        """Write every pending object with a proposal as new objects, in one write.

        Ids are ``max + 1``, ``max + 2``, ... in the order of :attr:`objects`;
        without ``overwrite`` a later object never takes an earlier one's pixels.
        The writer is called once (an int array of ids when several objects
        are written), so a widget puts them all in one undo step. Objects
        without a proposal, or whose mask adds nothing, stay pending.

        Returns
        -------
        list of int
            The new ids (empty when nothing was written).
        """
        return self._commit_objects(list(self.objects), labels, overwrite, writer, handle)

    def _commit_objects(self, objects, labels, overwrite, writer, handle) -> list[int]:
        ready = [obj for obj in objects if obj.prediction is not None]
        if not ready:
            self.status.emit("Nothing to commit: click on an object first.")
            return []
        shape = self.labels_shape
        if tuple(np.shape(labels)) != shape:
            raise ValueError(
                f"Expected labels of the image's shape {shape}, got {tuple(np.shape(labels))}."
            )
        next_id = next_label(labels)
        dtype = np.dtype(getattr(labels, "dtype", np.int64))
        limit = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else np.inf
        planes: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}
        done: list[tuple[PendingObject, int, int]] = []
        for obj in ready:
            if obj.plane not in planes:
                region = np.array(labels if obj.plane is None else labels[obj.plane])
                planes[obj.plane] = (region, region.copy())
            work = planes[obj.plane][1]
            mask = obj.mask() if overwrite else obj.mask() & (work == 0)
            if not mask.any():
                continue
            if next_id > limit:
                raise ValueError(
                    f"Expected room for label id {next_id} in the {dtype} labels: convert the "
                    "layer to a wider integer type."
                )
            work[mask] = next_id
            done.append((obj, next_id, int(mask.sum())))
            next_id += 1
        if not done:
            self.status.emit("Nothing new to commit: the mask lies on existing objects.")
            return []
        indices, values = _changes(planes)
        if writer is None:
            labels[indices] = values
        else:
            writer(indices, values if len(done) > 1 else done[0][1])
        return self._after_commit(done, labels if handle is None else handle, labels)

    def _after_commit(self, done, home, labels) -> list[int]:
        ids = [value for _, value, _ in done]
        self.last_object = (home, ids[-1])
        for obj, value, _ in done:
            self._record_committed(value, obj)
        self._drop_objects([obj for obj, _, _ in done])
        for value in ids:
            self.committed.emit(value)
        pixels = sum(size for _, _, size in done)
        what = f"object {ids[0]}" if len(ids) == 1 else f"objects {', '.join(map(str, ids))}"
        self.status.emit(f"Committed {what} ({pixels} pixels).")
        self.committed_all.emit(ids)
        self._autosave(labels)
        return ids

    def _record_committed(self, value: int, obj: PendingObject) -> None:
        self.committed_objects[int(value)] = {
            "class_id": int(obj.class_id),
            "plane": obj.plane,
            "prompts": dict(obj.prompts),
        }

    def record_objects(self, ids, *, class_id: int = 0, plane: int | None = None) -> list[int]:
        """Remember label ids written by another tool (refine, segment everything) as committed.

        Ids already recorded keep their record (class, prompts); new ones get
        ``class_id`` (0: no class), ``plane`` and no prompts. Returns the new ids.
        """
        class_id = self._check_class(class_id)
        added = [int(i) for i in ids if int(i) and int(i) not in self.committed_objects]
        for value in added:
            self.committed_objects[value] = {"class_id": class_id, "plane": plane, "prompts": {}}
        return added

    def follow_labels(self, labels) -> tuple[list[int], list[int]]:
        """Make the committed objects follow the labels (after an undo, redo or brush edit).

        Records of ids no longer in ``labels`` are set aside; they come back
        (class and prompts) when their id reappears (a redo). Ids painted by
        hand are not recorded.

        Parameters
        ----------
        labels : int array
            The label image, ``(Y, X)`` or ``(Z, Y, X)``.

        Returns
        -------
        gone, back : list of int
            The ids set aside and the ids brought back.
        """
        present = present_ids(labels)
        owner, aside = getattr(self, "_set_aside", (None, {}))
        if owner is not self.committed_objects:  # a new or restored session: nothing aside
            aside = {}
        gone = [k for k in self.committed_objects if k not in present]
        back = [k for k in aside if k in present and k not in self.committed_objects]
        for key in gone:
            aside[key] = self.committed_objects.pop(key)
        for key in back:
            self.committed_objects[key] = aside.pop(key)
        self._set_aside = (self.committed_objects, aside)
        return gone, back

    def _drop_objects(self, gone: list[PendingObject]) -> None:
        """Remove committed objects from the list; the active one moves on (or starts fresh)."""
        class_id = self._active.class_id
        self.objects = [obj for obj in self.objects if obj not in gone]
        if not self.objects:
            self._make_object(class_id)
        self.generation += 1
        if self._active in gone:
            self._active = self.objects[0]
        self.objects_changed.emit()
        self.prompts_changed.emit()
        self.prediction_changed.emit()

    def save(self, labels=None):
        """Save to the attached :class:`~.sam_store.SessionStore` now (``labels`` too if given).

        Returns the session folder, or None without a store.
        """
        return None if self.store is None else self.store.save(self, labels)

    def _autosave(self, labels=None) -> None:
        """Save to the attached store (if any); a failed save is reported, never raised."""
        if self.store is None:
            return
        try:
            self.store.save(self, labels)
        except (OSError, ValueError) as exc:
            self.status.emit(f"Session not saved: {exc}")

    # -- predicting objects that are not active -------------------------------------------
    def pending_predictions_job(self) -> Generator[ProgressEvent, None, list[PredictionResult]]:
        """Predict every pending object that has prompts but no proposal (a reopened session).

        Uses a segmenter of its own, so it may run beside the prompt thread.

        Returns
        -------
        list of PredictionResult
            Hand each to :meth:`accept`.
        """
        from ..sam import PromptSegmenter

        self._require_model()
        self._require_image()
        segmenter, generation = PromptSegmenter(self.model, self.cache), self.generation
        todo = [obj for obj in self.objects if obj.has_prompts and obj.prediction is None]
        results = []
        for done, obj in enumerate(todo):
            yield ProgressEvent("predicting", done, len(todo))
            plane = obj.plane if obj.plane in obj.prompts else next(iter(obj.prompts))
            segmenter.set_image(self.source, plane)
            prediction = segmenter.predict(**obj.prompts[plane].predict_kwargs())
            _ = prediction.mask  # upsampled here, off the caller's thread
            results.append(PredictionResult(plane, prediction, generation, obj.uid))
        return results

    def predict_pending(self) -> int:
        """Predict the pending objects without proposals now (scripts); returns how many."""
        results = run_to_end(self.pending_predictions_job())
        return sum(bool(self.accept(result)) for result in results)


def _changes(planes: dict) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Indices into the full labels and new values of every changed pixel of the planes."""
    parts, values = [], []
    for plane, (before, after) in planes.items():
        changed = np.nonzero(before != after)
        if plane is not None:
            changed = (np.full(changed[0].shape, plane, dtype=np.intp), *changed)
        parts.append(changed)
        values.append(after[changed[-before.ndim :]])
    indices = tuple(np.concatenate(axis) for axis in zip(*parts))
    return indices, np.concatenate(values)


def class_image(labels, object_classes: dict[int, int], dtype=np.uint16) -> np.ndarray:
    """The semantic class image of an instance label image.

    Parameters
    ----------
    labels : int array
        ``(Y, X)`` or ``(Z, Y, X)`` object ids.
    object_classes : dict of int to int
        ``{label id: class id}``; ids not in it get class 0.
    dtype : numpy dtype
        Of the result (must hold the largest class id).

    Returns
    -------
    array of ``labels``' shape
        The class id of every pixel's object.
    """
    labels = np.asarray(labels)
    table = {int(k): int(v) for k, v in object_classes.items() if v and int(k) > 0}
    if not table or not labels.size:
        return np.zeros(labels.shape, dtype=dtype)
    ids, inverse = np.unique(labels, return_inverse=True)
    lookup = np.array([table.get(int(i), 0) for i in ids], dtype=dtype)
    return lookup[inverse].reshape(labels.shape)


def present_ids(labels) -> set[int]:
    """The label ids (> 0) in ``labels``, any shape (about 25 ms for 64x512x512 mostly 0)."""
    flat = np.asarray(labels).ravel()
    values = flat[flat > 0]
    if not values.size:
        return set()
    if np.issubdtype(values.dtype, np.integer) and values.max() < 2**24:
        return set(np.flatnonzero(np.bincount(values)).tolist())
    return {int(v) for v in np.unique(values)}
