"""Track objects through a stack or time series with SAM 2's memory (video predictor).

:class:`Sam2Tracker` drives the memory machinery of
``sam2.sam2_video_predictor.SAM2VideoPredictor`` (memory attention, memory
encoder, object pointers, its per-object output dictionaries) over planes fed
as arrays. What differs from the official ``init_state``/``propagate_in_video``:

* **No frame files.** The predictor's inference state is built here (the
  same keys ``init_state`` makes) without ``images``: every per-frame
  feature lookup of the predictor (``_get_image_feature`` reads
  ``inference_state["cached_features"]``) is answered from the plugin's
  embedding cache through :class:`~.sam2_video.CachedFeatures`, so each plane is encoded
  once (``sam2_model.encode_plane`` = ``net.forward_image`` with the official
  preprocessing) and shared with 2D prompting.
* **State in CPU memory.** ``storage_device`` is the CPU (the official
  ``offload_state_to_cpu=True``): memory features and low-resolution masks of
  visited planes live in host memory, so GPU memory does not grow per plane.
* **Corrections re-propagate the affected range only.** Prompts on a plane
  the object was already tracked through become a conditioning plane (the
  official ``add_all_frames_to_correct_as_cond``). The *affected range* of a
  prompted plane ``k`` is every plane strictly between the object's previous
  and next prompted planes (the stack ends where there is none), ``k``
  included: :meth:`Sam2Tracker.propagate_steps` tracks forward from ``k`` to
  the next prompted plane and backward from ``k`` to the previous one; the
  other planes keep their masks. An object never tracked is propagated the
  official way: forward from its first prompted plane to the end, then
  backward from it to plane 0.
* **Copies ahead on CUDA.** While a plane is computed, the next plane's
  features are copied from the cache (host memory) to the GPU on a side
  stream (:meth:`~.sam2_video.CachedFeatures.prefetch`): at most two planes
  beyond the current one are on the GPU; results are bit-identical.
* **Jobs.** Propagation yields a :class:`TrackStep` per plane (with autocast
  on CUDA, 8 at a time: the planes of one autocast region) and checks
  ``cancel`` between planes; a cancelled propagation restores the predictor's
  memory and leaves the masks as they were.

Axis order: planes ``(Z, Y, X)`` or ``(Z, Y, X, 3)``; axis 0 is depth or time.
Points are ``(row, col)``, boxes ``(row0, col0, row1, col1)`` in pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np

from ..jobs import CancelCheck, CancelLike, JobCancelled, Stopwatch
from .image import SamInput
from .sam2_video import CachedFeatures, TrackStep, affected_range, new_inference_state

__all__ = ["Sam2Tracker", "TrackStep", "affected_range"]

_AUTOCAST = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


class Sam2Tracker:
    """Objects prompted on planes of a stack, tracked with SAM 2's memory.

    Parameters
    ----------
    model : Sam2Model
        ``model.net`` is a ``SAM2VideoPredictor``.
    volume : array ``(Z, Y, X)`` / ``(Z, Y, X, 3)`` or SamInput
        Planes in order (depth, or time for a time series). Never modified.
    cache : EmbeddingCache, optional
        Where embeddings come from (``cache.get_or_compute(model, rgb)``);
        default a memory cache of 16 planes (a plane that left it is encoded
        again when a correction needs it).
    rgb : bool, optional
        Whether the last axis of ``volume`` is colour (None: guess).
    autocast : {"bf16", "fp16"}, optional
        Mixed precision on CUDA (ignored on the CPU).
    prefetch : bool, optional
        Copy the next plane's features to the device while the current one
        is computed (default: on CUDA only; see
        :class:`~.sam2_video.CachedFeatures`).

    Attributes
    ----------
    n_planes : int
    plane_shape : (int, int)
        ``(Y, X)``.
    encoded : set of int
        Planes whose embedding this tracker asked for.
    features : CachedFeatures
        The predictor's feature lookup (``features.prefetch_hits`` counts the
        planes read from a prefetch).
    """

    def __init__(
        self,
        model: Any,
        volume: np.ndarray | SamInput,
        *,
        cache: Any = None,
        rgb: bool | None = None,
        autocast: str | None = None,
        prefetch: bool | None = None,
    ) -> None:
        import torch

        if not getattr(model, "is_sam2", False):
            raise TypeError(f"Expected a SAM 2 model (Sam2Model), got {type(model).__name__}.")
        source = volume if isinstance(volume, SamInput) else SamInput(volume, rgb=rgb)
        if not source.is_stack:
            raise ValueError(
                f"Expected a stack (Z, Y, X) or time series (T, Y, X) to track through, got "
                f"an image of shape {np.shape(source.data)}."
            )
        if autocast is not None and autocast not in _AUTOCAST:
            raise ValueError(f"Expected autocast 'bf16', 'fp16' or None, got {autocast!r}.")
        if cache is None:
            from .embedding import EmbeddingCache

            cache = EmbeddingCache(max_items=16)
        self.model, self.source, self.cache = model, source, cache
        self.n_planes, self.plane_shape = source.n_planes, tuple(source.plane_shape)
        self.net = model.net
        self.device = torch.device(model.device)
        self.autocast = autocast
        # Planes computed between two progress events. Leaving an autocast region drops
        # autocast's cache of low-precision weight copies, so with autocast on CUDA planes
        # are computed 8 to a region (one cast of each weight per 8 planes, not per plane).
        self._group = 8 if autocast is not None and self.device.type == "cuda" else 1
        self.encoded: set[int] = set()
        self._keys: dict[int, tuple[str, str]] = {}  # plane: (encoder hash, cache key)
        self.features = CachedFeatures(self._embedding, self.device, prefetch=prefetch)
        self.state = new_inference_state(
            self.n_planes, self.plane_shape, self.features, self.device
        )
        self._masks: dict[int, np.ndarray] = {}
        self._dirty: dict[int, set[int]] = {}
        self._given: dict[tuple[int, int], np.ndarray] = {}  # mask prompts, kept as given

    # -- embeddings ----------------------------------------------------------------------
    def _embedding(self, plane: int):
        """Plane ``plane``'s embedding from the cache; its key is hashed once per tracker.

        Also called from the prefetch thread (one plane at a time; the cache locks).
        """
        from .embedding import embedding_key

        self.encoded.add(plane)
        known = self._keys.get(plane)
        embedding = None
        if known is not None and known[0] == self.model.encoder_hash:
            embedding = self.cache.get(known[1], self.model)
        if embedding is None:
            rgb = self.source.plane(plane)
            embedding = self.cache.get_or_compute(self.model, rgb)
            key = embedding.key or embedding_key(self.model, rgb)
            self._keys[plane] = (self.model.encoder_hash, key)
        return embedding

    @contextlib.contextmanager
    def _compute(self):
        import torch

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.autocast is not None and self.device.type == "cuda":
                dtype = getattr(torch, _AUTOCAST[self.autocast])
                stack.enter_context(torch.autocast("cuda", dtype=dtype))
            yield

    # -- objects and prompts -------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        """Ids of the objects prompted so far, in the order they were added."""
        return list(self.state["obj_ids"])

    def prompted_planes(self, object_id: int) -> list[int]:
        """Planes holding prompts (points, box or mask) of ``object_id``, sorted."""
        index = self.state["obj_id_to_idx"].get(object_id)
        if index is None:
            return []
        planes = set(self.state["point_inputs_per_obj"][index])
        planes |= set(self.state["mask_inputs_per_obj"][index])
        return sorted(planes)

    def _check_plane(self, plane: int) -> int:
        plane = int(plane)
        if not 0 <= plane < self.n_planes:
            raise ValueError(f"Expected a plane in 0..{self.n_planes - 1}, got {plane}.")
        return plane

    def _after_prompt(self, plane: int, object_id: int, out) -> np.ndarray:
        self._dirty.setdefault(object_id, set()).add(plane)
        _, ids, masks = out
        return (masks[ids.index(object_id), 0] > 0).cpu().numpy()

    def set_points(
        self,
        plane: int,
        object_id: int,
        points: Any = None,
        labels: Any = None,
        *,
        box: Any = None,
    ) -> np.ndarray:
        """Replace the prompts of ``object_id`` on ``plane``; returns the mask there.

        Parameters
        ----------
        plane : int
        object_id : int
            Any int naming the object (new ids start a new object).
        points : array ``(N, 2)``, optional
            ``(row, col)`` pixel coordinates.
        labels : array ``(N,)``, optional
            1 object, 0 background (default all 1).
        box : ``(row0, col0, row1, col1)``, optional

        Returns
        -------
        array ``(Y, X)`` bool
            The object on ``plane`` from these prompts (and, on a plane tracked
            before, the memory of the others).
        """
        plane = self._check_plane(plane)
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, float).reshape(-1, 2)
        lab = np.ones(len(pts), int) if labels is None else np.asarray(labels, int).reshape(-1)
        if len(lab) != len(pts):
            raise ValueError(f"Expected {len(pts)} point labels, got {len(lab)}.")
        if not len(pts) and box is None:
            raise ValueError("Expected at least one point or a box.")
        self._given.pop((int(object_id), plane), None)
        xy = pts[:, ::-1].astype(np.float32)
        xyxy = None if box is None else np.asarray(box, np.float32).reshape(4)[[1, 0, 3, 2]]
        net = self.net
        as_cond = net.add_all_frames_to_correct_as_cond
        try:
            net.add_all_frames_to_correct_as_cond = True
            with self._compute():
                out = net.add_new_points_or_box(
                    self.state,
                    frame_idx=plane,
                    obj_id=int(object_id),
                    points=xy if len(xy) else None,
                    labels=lab.astype(np.int32) if len(xy) else None,
                    clear_old_points=True,
                    normalize_coords=True,
                    box=xyxy,
                )
        finally:
            net.add_all_frames_to_correct_as_cond = as_cond
        return self._after_prompt(plane, int(object_id), out)

    def set_mask(self, plane: int, object_id: int, mask: np.ndarray) -> np.ndarray:
        """Prompt ``object_id`` on ``plane`` with a mask ``(Y, X)``; returns it (a copy).

        The plane keeps this mask in the results (the model's own output for
        a mask prompt is a coarser copy of it); other planes are tracked from
        the model's memory of it.
        """
        plane = self._check_plane(plane)
        mask = np.asarray(mask) > 0
        if mask.shape != self.plane_shape:
            raise ValueError(f"Expected a mask of shape {self.plane_shape}, got {mask.shape}.")
        if not mask.any():
            raise ValueError(f"The mask prompt on plane {plane} is empty.")
        net = self.net
        as_cond = net.add_all_frames_to_correct_as_cond
        try:
            net.add_all_frames_to_correct_as_cond = True
            with self._compute():
                out = net.add_new_mask(self.state, plane, int(object_id), mask)
        finally:
            net.add_all_frames_to_correct_as_cond = as_cond
        self._after_prompt(plane, int(object_id), out)
        self._given[(int(object_id), plane)] = mask.copy()
        return mask.copy()

    def remove_object(self, object_id: int) -> None:
        """Forget ``object_id``: its prompts, memory and masks."""
        with self._compute():
            self.net.remove_object(self.state, int(object_id), need_output=False)
        self._masks.pop(object_id, None)
        self._dirty.pop(object_id, None)
        self._given = {k: v for k, v in self._given.items() if k[0] != object_id}

    # -- results -------------------------------------------------------------------------
    def masks(self, object_id: int) -> np.ndarray:
        """``(Z, Y, X)`` bool: the object's masks as last propagated (a new array).

        Masks are held bit-packed (one bit per pixel) between propagations.
        """
        if object_id not in self._masks:
            raise KeyError(
                f"Object {object_id} has not been propagated; known: {self.object_ids}."
            )
        size = self.plane_shape[0] * self.plane_shape[1]
        flat = np.unpackbits(self._masks[object_id], axis=1, count=size).view(bool)
        return flat.reshape(self.n_planes, *self.plane_shape)

    def pending(self) -> dict[int, list[int]]:
        """Prompted planes not propagated from yet, per object."""
        return {k: sorted(v) for k, v in self._dirty.items() if v}

    # -- propagation ---------------------------------------------------------------------
    def _sweeps(self, object_id: int) -> list[tuple[list[int], bool]]:
        """The ``(planes, reverse)`` runs that bring ``object_id`` up to date."""
        prompted = self.prompted_planes(object_id)
        dirty = self._dirty.get(object_id, set())
        last = self.n_planes - 1
        if object_id not in self._masks:  # never tracked: the official order
            first = prompted[0]
            return [(list(range(first, last + 1)), False), (list(range(first, -1, -1)), True)]
        forward, backward = [], []
        for k in sorted(dirty):
            lo, hi = affected_range(prompted, k, self.n_planes)
            forward.append((list(range(k, hi + 1)), False))
            below = [p for p in prompted if p < k]
            if not below or below[-1] not in dirty:  # a dirty plane below sweeps this gap
                backward.append((list(range(k, lo - 1, -1)), True))
        return forward + backward

    def propagate_steps(
        self,
        object_ids: Iterable[int] | None = None,
        *,
        within: tuple[int, int] | None = None,
        cancel: CancelLike = None,
    ) -> Generator[TrackStep, None, dict[int, np.ndarray]]:
        """Bring objects up to date with their prompts; a job (see :mod:`napari_seglab.jobs`).

        Objects never tracked are propagated through the whole stack; objects
        with new prompts re-propagate the affected range of each prompted
        plane (see the module notes); objects without new prompts are skipped.

        Parameters
        ----------
        object_ids : iterable of int, optional
            Default every object.
        within : (int, int), optional
            Visit only planes ``first..last`` (both included); the masks of
            the other planes stay as they were (empty for a new object).
        cancel : threading.Event or callable, optional
            Checked before each plane.

        Returns
        -------
        dict of int to array ``(Z, Y, X)`` bool
            Generator return value: every requested object's masks (new arrays).

        Raises
        ------
        JobCancelled
            When ``cancel`` is set (``partial`` None; masks and memory as before).
        RuntimeError
            When an object has no prompt.
        """
        check, clock = CancelCheck(cancel), Stopwatch()
        ids = self.object_ids if object_ids is None else [int(i) for i in object_ids]
        unknown = [i for i in ids if i not in self.state["obj_id_to_idx"]]
        if unknown:
            raise ValueError(f"Unknown object ids {unknown}; prompted objects: {self.object_ids}.")
        plan = {i: self._sweeps(i) for i in ids if i not in self._masks or self._dirty.get(i)}
        if within is not None:
            lo, hi = int(within[0]), int(within[1])
            plan = {
                i: [([p for p in planes if lo <= p <= hi], rev) for planes, rev in sweeps]
                for i, sweeps in plan.items()
            }
        steps = [
            (i, plane, reverse)
            for i, sweeps in plan.items()
            for planes, reverse in sweeps
            for plane in planes
        ]
        total = len(steps)
        with self._compute():
            self.net.propagate_in_video_preflight(self.state)
        snapshot = self._snapshot()
        staged: dict[int, dict[int, np.ndarray]] = {i: {} for i in plan}
        try:
            for first in range(0, total, self._group):
                events = []
                with self._compute():  # one autocast region per group (see __init__)
                    for n in range(first, min(first + self._group, total)):
                        object_id, plane, reverse = steps[n]
                        check.raise_if_set("SAM 2 propagation")
                        ahead = self._next_read(steps, n)
                        if ahead is not None:
                            self.features.prefetch(ahead)
                        mask = self._track(object_id, plane, reverse)
                        staged[object_id][plane] = np.packbits(mask.reshape(-1))
                        events.append(
                            TrackStep(
                                "tracking",
                                n + 1,
                                total,
                                clock.elapsed,
                                plane=plane,
                                direction=-1 if reverse else 1,
                                object_id=object_id,
                                area=int(np.count_nonzero(mask)),
                            )
                        )
                yield from events
        except JobCancelled:
            self._restore(snapshot)
            raise
        finally:
            self.features.drop_prefetched()
        for object_id, planes in staged.items():
            packed = self._masks.get(object_id)
            if packed is None:
                size = self.plane_shape[0] * self.plane_shape[1]
                packed = np.zeros((self.n_planes, (size + 7) // 8), dtype=np.uint8)
                self._masks[object_id] = packed
            for plane, bits in planes.items():
                packed[plane] = bits
            self._dirty[object_id] = set()
        return {i: self.masks(i) for i in ids if i in self._masks}

    def propagate(self, object_ids: Iterable[int] | None = None, **options) -> dict:
        """:meth:`propagate_steps` run to the end."""
        from ..jobs import run_to_end

        return run_to_end(self.propagate_steps(object_ids, **options))

    def _next_read(self, steps: list, n: int) -> int | None:
        """The plane of the first of the next two steps that reads features (None: neither).

        A step on a plane prompted for its object reuses the prompted output.
        """
        for object_id, plane, _ in steps[n + 1 : n + 3]:
            index = self.state["obj_id_to_idx"][object_id]
            if plane not in self.state["output_dict_per_obj"][index]["cond_frame_outputs"]:
                return plane
        return None

    def _track(self, object_id: int, plane: int, reverse: bool) -> np.ndarray:
        """Track ``object_id`` onto ``plane`` (or reuse its prompted output); ``(Y, X)`` bool."""
        net, state = self.net, self.state
        index = state["obj_id_to_idx"][object_id]
        outputs = state["output_dict_per_obj"][index]
        with self._compute():
            if plane in outputs["cond_frame_outputs"]:
                logits = outputs["cond_frame_outputs"][plane]["pred_masks"].to(self.device)
            else:
                compact, logits = net._run_single_frame_inference(
                    inference_state=state,
                    output_dict=outputs,
                    frame_idx=plane,
                    batch_size=1,
                    is_init_cond_frame=False,
                    point_inputs=None,
                    mask_inputs=None,
                    reverse=reverse,
                    run_mem_encoder=True,
                )
                outputs["non_cond_frame_outputs"][plane] = compact
            state["frames_tracked_per_obj"][index][plane] = {"reverse": reverse}
            _, full = net._get_orig_video_res_output(state, logits)
            given = self._given.get((object_id, plane))
            if given is not None and plane in state["mask_inputs_per_obj"][index]:
                return given.copy()  # a mask prompt stands as given (the model's is coarser)
            return (full[0, 0] > 0).cpu().numpy()

    def _snapshot(self) -> dict:
        """Shallow copies of the per-object outputs (tensors are replaced, never modified)."""
        state = self.state
        return {
            "outputs": {
                i: {k: dict(v) for k, v in d.items()}
                for i, d in state["output_dict_per_obj"].items()
            },
            "tracked": {i: dict(d) for i, d in state["frames_tracked_per_obj"].items()},
        }

    def _restore(self, snapshot: dict) -> None:
        state = self.state
        for i, saved in snapshot["outputs"].items():
            for key, frames in saved.items():
                state["output_dict_per_obj"][i][key].clear()
                state["output_dict_per_obj"][i][key].update(frames)
        for i, saved in snapshot["tracked"].items():
            state["frames_tracked_per_obj"][i].clear()
            state["frames_tracked_per_obj"][i].update(saved)
