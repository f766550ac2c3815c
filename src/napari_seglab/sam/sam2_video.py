"""SAM 2 video predictor plumbing for :mod:`.sam2_tracker`: its state, its feature hook.

* :func:`new_inference_state` builds the inference state of
  ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (the keys its ``init_state``
  makes, sam2 1.1.0) without reading frames, with the state on the CPU.
* :class:`CachedFeatures` answers the predictor's per-frame feature lookup
  (``_get_image_feature`` reads ``inference_state["cached_features"]``) from
  an embedding source, so the predictor never runs ``forward_image`` itself.
* :func:`affected_range` says which planes a prompt re-propagates.
* :class:`TrackStep` is the progress event of a tracking job.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
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
    """

    def __init__(self, embed: Callable[[int], Any], device: Any) -> None:
        super().__init__()
        self._embed = embed
        self._device = device
        self._last: tuple[int, tuple] | None = None
        self._pos: dict[int, tuple[Any, Any]] = {}
        self._image = None

    def _shared(self, tensor):
        """The device copy of a shared positional encoding (kept with its source)."""
        entry = self._pos.get(id(tensor))
        if entry is None or entry[0] is not tensor:
            entry = (tensor, tensor.to(self._device))
            self._pos[id(tensor)] = entry
        return entry[1]

    def get(self, frame_idx, default=None):
        import torch

        if self._last is not None and self._last[0] == frame_idx:
            return self._last[1]
        embedding = self._embed(int(frame_idx))
        fpn = [t.to(self._device) for t in embedding.backbone_fpn]
        pos = [self._shared(t) for t in embedding.vision_pos_enc]
        backbone = {"vision_features": fpn[-1], "vision_pos_enc": pos, "backbone_fpn": fpn}
        if self._image is None:  # expanded to the batch and discarded by the predictor
            self._image = torch.zeros((1, 3, 1, 1), device=self._device)
        self._last = (int(frame_idx), (self._image, backbone))
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
