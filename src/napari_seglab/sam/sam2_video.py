"""SAM 2 video predictor plumbing for :mod:`.sam2_tracker`: its state, its feature hook.

* :func:`new_inference_state` builds the inference state of
  ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (the keys its ``init_state``
  makes, sam2 1.1.0) without reading frames, with the state on the CPU.
* :class:`CachedFeatures` answers the predictor's per-frame feature lookup
  (``_get_image_feature`` reads ``inference_state["cached_features"]``) from
  an embedding source, so the predictor never runs ``forward_image`` itself;
  on CUDA it copies the next plane's features to the device while the
  current plane is computed (:meth:`CachedFeatures.prefetch`).
* :func:`affected_range` says which planes a prompt re-propagates.
* :class:`TrackStep` is the progress event of a tracking job.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..jobs import ProgressEvent

__all__ = ["CachedFeatures", "TrackStep", "affected_range", "new_inference_state"]


@dataclass(frozen=True)
class TrackStep(ProgressEvent):
    """One plane visited by :meth:`Sam2Tracker.propagate_steps` (``stage == "tracking"``).

    Attributes
    ----------
    done, total : int
        Planes visited so far / to visit (summed over objects).
    plane : int
    direction : int
        +1 (increasing index) or -1.
    object_id : int
        The tracker's id of the object tracked.
    area : int
        Pixels of the object's mask on ``plane``.
    """

    plane: int = 0
    direction: int = 1
    object_id: int = 0
    area: int = 0


def affected_range(prompted: Iterable[int], plane: int, n_planes: int) -> tuple[int, int]:
    """``(first, last)`` planes a prompt on ``plane`` re-propagates (both included).

    Every plane strictly between the nearest other prompted planes below and
    above ``plane`` (plane 0 / the last plane where there is none).

    Examples
    --------
    >>> affected_range([2, 9], 5, 12)
    (3, 8)
    >>> affected_range([5], 5, 12)
    (0, 11)
    """
    others = sorted(int(p) for p in prompted if int(p) != plane)
    below = [p for p in others if p < plane]
    above = [p for p in others if p > plane]
    return (below[-1] + 1 if below else 0, above[0] - 1 if above else n_planes - 1)


class CachedFeatures(dict):
    """The predictor's ``cached_features``, answered from an embedding source.

    ``SAM2VideoPredictor._get_image_feature`` calls
    ``inference_state["cached_features"].get(frame_idx, (None, None))`` and
    computes ``forward_image`` only on a miss; this mapping never misses. It
    holds the device copy of the last plane asked for (the official state
    holds one plane too). The positional encodings do not depend on the
    image (every embedding of a model shares the same tensors): they are
    copied to the device once, not per plane (at a 1024 input they are
    84 MB against 16 MB of features).

    **Prefetch** (on by default on CUDA only; the CPU path is a plain
    ``embed`` + ``.to(device)`` in :meth:`get`). Embeddings live in host
    memory, and a synchronous copy of a plane's features (16 MB at a 1024
    input) stalls the host when the predictor reaches the plane.
    :meth:`prefetch` hands the lookup and the copy of a plane the caller will
    need next to a worker thread, which copies the features into pinned
    (page-locked) host memory and from there to the device with
    ``non_blocking=True`` on a side CUDA stream, then records an event. When
    :meth:`get` reaches that plane, the caller's current stream waits for the
    event (on the GPU; the host waits only until the worker has queued the
    copy, which it did while the previous plane was computed) and ``record_stream`` marks
    the copies as used by that stream, so the caching allocator does not give
    their memory back to the side stream before the work queued on the
    current stream has read them. The bytes are those of the synchronous
    ``.to(device)``: results are bit-identical. Pinned buffers come from
    PyTorch's caching host allocator, which reuses one only after the copy
    from it has completed. At most :attr:`AHEAD` planes wait beyond the
    current one (older ones are dropped); :meth:`drop_prefetched` forgets
    them (the tracker calls it when a propagation ends).

    Parameters
    ----------
    embed : callable
        ``embed(plane) -> Sam2Embedding`` (CPU tensors). Called from the
        worker thread for prefetched planes, so it must be thread-safe.
    device : torch.device
    prefetch : bool, optional
        Default: ``device.type == "cuda"``. Off CUDA, ``True`` runs the worker
        thread with ``.to(device)`` as the copy (for tests of the bookkeeping).

    Attributes
    ----------
    prefetch_hits : int
        :meth:`get` calls answered by a prefetch.
    """

    #: Most planes prefetched and not yet read.
    AHEAD = 2

    def __init__(self, embed: Callable[[int], Any], device: Any, *, prefetch=None) -> None:
        super().__init__()
        self._embed = embed
        self._device = device
        self._last: tuple[int, tuple] | None = None
        self._pos: dict[int, tuple[Any, Any]] = {}
        self._image = None
        self._cuda = getattr(device, "type", None) == "cuda"
        self.prefetching = self._cuda if prefetch is None else bool(prefetch)
        self._ahead: OrderedDict[int, Future] = OrderedDict()
        self._worker: ThreadPoolExecutor | None = None
        self._stream = None
        self.prefetch_hits = 0

    def _shared(self, tensor):
        """The device copy of a shared positional encoding (kept with its source)."""
        entry = self._pos.get(id(tensor))
        if entry is None or entry[0] is not tensor:
            entry = (tensor, tensor.to(self._device))
            self._pos[id(tensor)] = entry
        return entry[1]

    def prefetch(self, frame_idx: int) -> None:
        """Start fetching plane ``frame_idx`` for a later :meth:`get` (no-op when off)."""
        frame_idx = int(frame_idx)
        if not self.prefetching or frame_idx in self._ahead:
            return
        if self._last is not None and self._last[0] == frame_idx:
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="sam2-prefetch")
            if self._cuda:
                import torch

                self._stream = torch.cuda.Stream(self._device)
        while len(self._ahead) >= self.AHEAD:
            self._ahead.popitem(last=False)  # never read: its copy completes, then is freed
        self._ahead[frame_idx] = self._worker.submit(self._fetch, frame_idx)

    def drop_prefetched(self) -> None:
        """Forget planes prefetched and not read (their copies complete and are freed)."""
        self._ahead.clear()

    def _fetch(self, frame_idx: int):
        """Worker thread: ``(embedding, device features, event ending their copy or None)``."""
        embedding = self._embed(frame_idx)
        if self._stream is None:
            return embedding, [t.to(self._device) for t in embedding.backbone_fpn], None
        import torch

        with torch.cuda.stream(self._stream):
            fpn = [
                (t.pin_memory() if t.device.type == "cpu" else t).to(
                    self._device, non_blocking=True
                )
                for t in embedding.backbone_fpn
            ]
            copied = torch.cuda.Event()
            copied.record(self._stream)
        return embedding, fpn, copied

    def get(self, frame_idx, default=None):
        import torch

        frame_idx = int(frame_idx)
        if self._last is not None and self._last[0] == frame_idx:
            return self._last[1]
        pending = self._ahead.pop(frame_idx, None)
        if pending is not None:
            embedding, fpn, copied = pending.result()  # re-raises what the worker raised
            self.prefetch_hits += 1
            if copied is not None:
                stream = torch.cuda.current_stream(self._device)
                stream.wait_event(copied)
                for t in fpn:
                    t.record_stream(stream)
        else:
            embedding = self._embed(frame_idx)
            fpn = [t.to(self._device) for t in embedding.backbone_fpn]
        pos = [self._shared(t) for t in embedding.vision_pos_enc]
        backbone = {"vision_features": fpn[-1], "vision_pos_enc": pos, "backbone_fpn": fpn}
        if self._image is None:  # expanded to the batch and discarded by the predictor
            self._image = torch.zeros((1, 3, 1, 1), device=self._device)
        self._last = (frame_idx, (self._image, backbone))
        return self._last[1]


def new_inference_state(
    n_planes: int, plane_shape: tuple[int, int], features: dict, device: Any
) -> dict:
    """An inference state for ``SAM2VideoPredictor`` without frames (state kept on the CPU).

    The keys are those ``SAM2VideoPredictor.init_state`` creates (sam2 1.1.0);
    ``images`` is left out because ``features`` answers every feature lookup.
    """

    import torch

    return {
        "num_frames": int(n_planes),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": True,
        "video_height": int(plane_shape[0]),
        "video_width": int(plane_shape[1]),
        "device": device,
        "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": features,
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
