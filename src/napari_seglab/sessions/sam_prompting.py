"""A SAM prompting session: model, image, prompts per plane, proposals, commits, propagation.

Compute-heavy steps are jobs (:mod:`napari_seglab.jobs`) that may run in a
worker thread and return a result object; the session's state changes only
when that result is handed back with :meth:`SamPromptSession.accept` (a
widget does that on its GUI thread), so signals are always emitted from the
thread that owns the session. Scripts use the synchronous helpers
(:meth:`SamPromptSession.predict`, :meth:`SamPromptSession.propagate`).

Coordinates follow napari: points ``(row, col)`` on a plane, ``(plane, row,
col)`` on a stack; boxes ``(row0, col0, row1, col1)``.

Examples
--------
>>> session = SamPromptSession()                          # doctest: +SKIP
>>> session.set_model(load_model("vit_b"))                # doctest: +SKIP
>>> session.set_image(stack)                              # (Z, Y, X)  # doctest: +SKIP
>>> session.add_point((12, 80, 64))                       # doctest: +SKIP
>>> session.predict(12).scores                            # doctest: +SKIP
>>> new_id = session.commit(labels)                       # numpy (Z, Y, X)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from psygnal import Signal

from ..jobs import CancelLike, ProgressEvent, run_to_end
from ..objects import grow_object, new_object
from .sam_objects import ObjectsMixin
from .sam_records import PlanePrompts, PredictionResult, PropagationResult, Writer

__all__ = ["SamPromptSession"]


class SamPromptSession(ObjectsMixin):
    """What a user is doing while prompting SAM on one image or stack.

    Several objects may be pending at once (:mod:`.sam_objects`): prompts,
    proposals and :meth:`commit` act on the active one, :meth:`commit_all`
    writes them all.

    Parameters
    ----------
    cache : EmbeddingCache, optional
        Embeddings shared with background precompute and propagation;
        default an in-memory cache of 32 planes plus the disk cache folder.
    neighbours : int
        Planes on each side of the visible one embedded in the background.

    Signals
    -------
    model_changed(object)
        A model was set (the new :class:`~napari_seglab.sam.SamModel`).
    image_changed()
        A new image; prompts and proposals were reset.
    prompts_changed()
        Prompts were set or cleared.
    prediction_changed()
        The proposals or the chosen proposal changed (or were cleared).
    committed(int)
        An object was committed with this id.
    objects_changed(), classes_changed(), committed_all(list)
        See :class:`~.sam_objects.ObjectsMixin`.
    status(str)
        A one-line message for the user.
    """

    model_changed = Signal(object)
    image_changed = Signal()
    prompts_changed = Signal()
    prediction_changed = Signal()
    committed = Signal(int)
    status = Signal(str)

    def __init__(self, cache=None, *, neighbours: int = 4) -> None:
        from ..sam import EmbeddingCache

        self.cache = cache if cache is not None else EmbeddingCache(max_items=32, disk=True)
        self.neighbours = int(neighbours)
        self.model = None
        self.model_source = ""
        self.model_decoder = ""
        self.segmenter = None
        self.source = None
        self.last_object: tuple[Any, int] | None = None
        self.generation = 0
        self._init_objects()

    # -- model and image -----------------------------------------------------------------
    def set_model(self, model, source: str = "", *, decoder: str = "") -> None:
        """Prompt with ``model`` from now on (e.g. a freshly fine-tuned one).

        Parameters
        ----------
        model : SamModel
        source : str
            Where it came from, for display (a checkpoint path, "fine-tuned").
        decoder : str
            The decoder file that reloads this model's decoder, if there is one.
        """
        from ..sam import PromptSegmenter

        self.model = model
        self.model_source = source or getattr(model, "name", "")
        self.model_decoder = str(decoder)
        self.segmenter = PromptSegmenter(model, self.cache)
        self._touch_all()  # a result computed with the previous model is stale
        self._forget_prediction()
        self.model_changed.emit(model)
        self.status.emit(f"Model {model.name} on {model.device}.")

    def set_image(self, data, *, rgb: bool | None = None):
        """Prompt on ``data`` from now on; prompts and proposals are reset.

        Parameters
        ----------
        data : array
            ``(Y, X)``, ``(Y, X, 3)``, or a stack ``(Z, Y, X[, 3])``; never modified.
        rgb : bool, optional
            Whether the last axis is colour (None: guess).

        Returns
        -------
        SamInput
        """
        from ..sam import SamInput

        self.source = data if isinstance(data, SamInput) else SamInput(data, rgb=rgb)
        self.objects, self.committed_objects, self.store = [], {}, None
        self._active = self._make_object(self._active.class_id)
        self.last_object = None
        self._touch_all()  # a result computed on the previous image is stale
        self._forget_prediction()
        self.objects_changed.emit()
        self.image_changed.emit()
        return self.source

    @property
    def is_stack(self) -> bool:
        return self.source is not None and self.source.is_stack

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of a label array matching the image: ``(Y, X)`` or ``(Z, Y, X)``."""
        self._require_image()
        plane = tuple(self.source.plane_shape)
        return (self.source.n_planes, *plane) if self.is_stack else plane

    def _require_image(self) -> None:
        if self.source is None:
            raise RuntimeError("No image: call set_image(data) first.")

    def _require_model(self) -> None:
        if self.segmenter is None:
            raise RuntimeError("No model: load one (set_model) first.")

    def _plane_key(self, plane: int | None) -> int | None:
        if not self.is_stack:
            return None
        if plane is None:
            raise ValueError("Expected a plane index on a stack, got None.")
        plane = int(plane)
        if not 0 <= plane < self.source.n_planes:
            raise ValueError(f"Expected a plane in 0..{self.source.n_planes - 1}, got {plane}.")
        return plane

    # -- prompts -------------------------------------------------------------------------
    def prompts(self, plane: int | None = None) -> PlanePrompts:
        """The prompts on ``plane`` (a copy-free view; do not modify)."""
        return self._prompts.get(self._plane_key(plane), PlanePrompts())

    def set_prompts(self, plane: int | None = None, points=None, positive=None, box=None) -> None:
        """Replace the prompts of one plane.

        Parameters
        ----------
        plane : int or None
            Plane index on a stack; None on a 2D image.
        points : array ``(N, 2)``, optional
            ``(row, col)``.
        positive : bool array ``(N,)``, optional
            Default all True.
        box : ``(row0, col0, row1, col1)``, optional
        """
        self._require_image()
        key = self._plane_key(plane)
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=float)
        pts = pts.reshape(-1, 2) if pts.size else np.zeros((0, 2))
        pos = (
            np.ones(len(pts), dtype=bool)
            if positive is None
            else np.asarray(positive, dtype=bool).reshape(-1)
        )
        if len(pos) != len(pts):
            raise ValueError(f"Expected {len(pts)} positive flags, got {len(pos)}.")
        if not np.all(np.isfinite(pts)):
            raise ValueError("Expected finite point coordinates, got NaN or infinity.")
        corners = None
        if box is not None:
            corners = np.asarray(box, dtype=float).reshape(-1)
            if corners.shape != (4,) or not np.all(np.isfinite(corners)):
                raise ValueError(f"Expected a finite box (row0, col0, row1, col1), got {box!r}.")
        prompts = PlanePrompts(pts, pos, corners)
        if prompts.empty:
            self._prompts.pop(key, None)
        else:
            self._prompts[key] = prompts
        self._touch()
        self.prompts_changed.emit()

    @property
    def has_prompts(self) -> bool:
        """Whether any plane holds a prompt of the active object."""
        return bool(self._prompts)

    def is_embedded(self, plane: int | None = None) -> bool:
        """Whether the embedding of ``plane`` is ready in the cache (memory or disk)."""
        from ..sam.embedding import embedding_key

        self._require_model()
        key = embedding_key(self.model, self.source.plane(self._plane_key(plane)))
        return self.cache.has(key, self.model)

    def add_point(self, position, positive: bool = True) -> None:
        """Add one point: ``(row, col)`` on a 2D image, ``(plane, row, col)`` on a stack."""
        position = np.asarray(position, dtype=float).reshape(-1)
        expected = 3 if self.is_stack else 2
        if position.shape != (expected,):
            raise ValueError(
                f"Expected a point with {expected} coordinates, got {position.tolist()}."
            )
        plane = int(np.round(position[0])) if self.is_stack else None
        current = self.prompts(plane)
        self.set_prompts(
            plane,
            np.vstack([current.points, position[-2:]]),
            np.append(current.positive, bool(positive)),
            current.box,
        )

    def clear_prompts(self) -> None:
        """Forget the active object's prompts and proposals; it starts fresh."""
        self._prompts.clear()
        self._touch()
        self._forget_prediction()
        self.prompts_changed.emit()
        self.status.emit("Prompts cleared.")

    def _forget_prediction(self) -> None:
        self.prediction = None
        self.proposal = 0
        self.prediction_plane = None
        self.prediction_changed.emit()

    # -- prediction ----------------------------------------------------------------------
    def prediction_job(
        self, plane: int | None = None, *, obj: int | None = None
    ) -> Generator[ProgressEvent, None, PredictionResult]:
        """Embed (cached) and prompt ``plane``; safe to run in a worker thread.

        Parameters
        ----------
        plane : int or None
        obj : int, optional
            ``uid`` of the pending object to prompt (default the active one).

        Returns
        -------
        PredictionResult
            Hand it to :meth:`accept` on the session's own thread.
        """
        self._require_model()
        self._require_image()
        key = self._plane_key(plane)
        generation, target = self.generation, self._object(obj)
        prompts = target.prompts.get(key, PlanePrompts())
        if prompts.empty:
            return PredictionResult(key, None, generation, target.uid)
        yield ProgressEvent("embedding", 0, 1)
        self.segmenter.set_image(self.source, key)
        prediction = self.segmenter.predict(**prompts.predict_kwargs())
        _ = prediction.mask  # upsample the shown proposal here, off the caller's thread
        return PredictionResult(key, prediction, generation, target.uid)

    def accept(self, result: PredictionResult) -> bool:
        """Show ``result`` unless the prompts changed since it was computed.

        Returns
        -------
        bool
            False for a stale result (dropped).
        """
        obj = self._result_object(result)
        if obj is None:
            return False
        n = 0 if result.prediction is None else len(result.prediction.scores)
        chosen = obj.resume_proposal if obj.resume_proposal in range(n) else None
        obj.prediction, obj.plane, obj.resume_proposal = result.prediction, result.plane, None
        obj.proposal = int(result.prediction.best) if chosen is None and n else (chosen or 0)
        if obj is not self._active:
            self.objects_changed.emit()
            return True
        if result.prediction is None:
            self._forget_prediction()
            self.status.emit("No prompts on this plane.")
            return True
        self.prediction_changed.emit()
        self.status.emit(
            f"{int(self.mask().sum())} pixels. Enter commits, N shows the next proposal."
        )
        return True

    def predict(self, plane: int | None = None):
        """Prompt ``plane`` now and show the result; returns the Prediction (or None)."""
        result = run_to_end(self.prediction_job(plane))
        self.accept(result)
        return result.prediction

    def next_proposal(self) -> int:
        """Show the next proposal; returns its index."""
        if self.prediction is None:
            self.status.emit("No prediction yet: click on an object first.")
            return 0
        self.proposal = (self.proposal + 1) % len(self.prediction.scores)
        self.prediction_changed.emit()
        self.status.emit(
            f"Proposal {self.proposal + 1} of {len(self.prediction.scores)}: "
            f"{int(self.mask().sum())} pixels."
        )
        return self.proposal

    def mask(self) -> np.ndarray:
        """The chosen proposal, ``(Y, X)`` bool (empty without a prediction)."""
        if self.prediction is None:
            self._require_image()
            return np.zeros(tuple(self.source.plane_shape), dtype=bool)
        return self.prediction.mask_at(self.proposal)

    # -- commit --------------------------------------------------------------------------
    def commit(
        self,
        labels,
        *,
        overwrite: bool = False,
        writer: Writer | None = None,
        handle: Any = None,
    ) -> int:
        """Write the chosen proposal into ``labels`` as a new object (id ``max + 1``).

        Parameters
        ----------
        labels : int array
            Of :attr:`labels_shape`; read to find the new id and free pixels.
        overwrite : bool
            Also take pixels of existing objects.
        writer : callable, optional
            ``writer(indices, value)`` does the writing (a widget passes an
            undoable layer write); default writes into ``labels`` in place.
        handle : object, optional
            What to remember as the object's home for :meth:`propagation_job`
            (default ``labels``).

        Returns
        -------
        int
            The new id, or 0 when nothing was new (prompts are kept then).
        """
        ids = self._commit_objects([self._active], labels, overwrite, writer, handle)
        return ids[0] if ids else 0

    # -- stacks --------------------------------------------------------------------------
    def neighbour_order(self, plane: int | None) -> list[int]:
        """Planes to embed in the background: ``plane`` first, then outward."""
        self._require_image()
        if not self.is_stack:
            return [0]
        plane = self._plane_key(plane)
        order = [plane]
        for step in range(1, self.neighbours + 1):
            order += [p for p in (plane + step, plane - step) if 0 <= p < self.source.n_planes]
        return order

    def embedding_job(self, planes, *, cancel: CancelLike = None):
        """Embed ``planes`` into the cache; a job, see ``sam.precompute_embeddings``."""
        from ..sam import precompute_embeddings

        self._require_model()
        self._require_image()
        return precompute_embeddings(
            self.model, self.source, self.cache, planes=list(planes), cancel=cancel
        )

    def propagation_job(
        self, plane: int | None = None, labels=None, *, cancel: CancelLike = None
    ) -> Generator[Any, None, PropagationResult]:
        """Extend the shown proposal, or the last committed object, through the stack.

        Parameters
        ----------
        plane : int, optional
            Plane of the last committed object to start from (when no proposal is shown).
        labels : int array, optional
            Current contents of the last object's labels (default the array
            given to :meth:`commit`).
        cancel : threading.Event or callable, optional

        Returns
        -------
        PropagationResult
            Apply it with :meth:`apply_propagation`.
        """
        from ..sam import PromptSegmenter
        from ..sam.propagate import propagate_steps

        self._require_model()
        self._require_image()
        if not self.is_stack:
            raise ValueError("Propagation needs a 3D stack (Z, Y, X); the image is 2D.")
        object_id, handle = 0, None
        if self.prediction is not None and self.prediction_plane is not None:
            start, seed = self.prediction_plane, self.mask()
        elif self.last_object is not None:
            handle, object_id = self.last_object
            current = handle if labels is None else labels
            start = self._plane_key(plane)
            seed = np.asarray(current[start]) == object_id
        else:
            raise ValueError("Nothing to propagate: prompt or commit an object first.")
        if not seed.any():
            raise ValueError(f"The object is not on plane {start}: go to a plane that shows it.")
        segmenter = PromptSegmenter(self.model, self.cache)
        volume = yield from propagate_steps(
            self.source, start, seed, segmenter=segmenter, cancel=cancel
        )
        return PropagationResult(np.asarray(volume, dtype=bool), object_id, handle)

    def apply_propagation(
        self,
        result: PropagationResult,
        labels,
        *,
        overwrite: bool = False,
        writer: Writer | None = None,
        handle: Any = None,
    ) -> int:
        """Write a propagated object: grow the committed one, or commit a new one.

        Returns
        -------
        int
            The object's id (0 when nothing was written).
        """
        if result.object_id:
            write = grow_object(labels, result.volume, result.object_id, overwrite=overwrite)
        else:
            write = new_object(labels, result.volume, overwrite=overwrite)
        if write.size:
            if writer is None:
                write.apply(labels)
            else:
                writer(write.indices, write.value)
        object_id = result.object_id or write.value
        if not result.object_id and object_id:
            self.last_object = (labels if handle is None else handle, object_id)
            self._record_committed(object_id, self._active)
            self.clear_prompts()
        planes = np.flatnonzero(result.volume.any(axis=tuple(range(1, result.volume.ndim))))
        if object_id and planes.size:
            self.status.emit(f"Object {object_id} spans planes {planes.min()}–{planes.max()}.")
        if not result.object_id and object_id:
            self.committed_all.emit([object_id])
        if write.size:
            self._autosave(labels)
        return object_id

    def propagate(self, labels, *, plane: int | None = None, overwrite: bool = False) -> int:
        """Propagate and write into the numpy ``labels`` now (scripts)."""
        result = run_to_end(self.propagation_job(plane, labels))
        return self.apply_propagation(result, labels, overwrite=overwrite)
