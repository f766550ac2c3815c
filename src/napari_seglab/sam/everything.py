"""Segment everything: automatic instance segmentation of an image with SAM.

A grid of single-point prompts is decoded over the image embedding; the
proposals are filtered by SAM's predicted IoU and by stability, masks cut by
a crop edge are dropped, duplicates are removed by box non-maximum
suppression (within a crop, then between crops), and optionally small holes
and islands are removed. The settings, the filters and their order are those
of ``segment_anything``'s ``SamAutomaticMaskGenerator`` (same names, same
defaults), and with the same weights the objects match its output (a test
checks IoU >= 0.99 per object). What differs is the work:

* the embedding of each crop comes from an :class:`~.embedding.EmbeddingCache`
  (computed once, then reused by later runs with other settings);
* the prompts of a batch share one embedding: :mod:`.everything_decode` runs
  the decoder's transformer for all of them without copying the embedding per
  prompt, and upscales to mask logits only the prompts with a proposal that
  passed the predicted-IoU filter (the filter needs no mask);
* only those proposals are resized to the image for the stability score, and
  masks stay boolean arrays (no run-length encoding).

Coordinates in the records are SAM's ``(x, y)`` (see :func:`segment_everything`);
the label image is ``(Y, X)`` as napari shows it. Painting and linking the labels
of a stack: :mod:`.everything_labels`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..jobs import CancelCheck, ProgressEvent, Stopwatch, run_to_end
from .decoder_prepare import prepare_image
from .embedding import EmbeddingCache
from .everything_decode import decode_masks, decode_tokens
from .everything_filters import (
    clean_small_regions,
    mask_boxes,
    near_crop_edge,
    non_max_suppression,
    stability_scores,
    upsample_crop_logits,
)
from .everything_grid import EverythingSettings, crop_boxes
from .everything_labels import label_objects, link_planes
from .frames import to_model_xy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .image import SamInput
    from .model import SamModel

__all__ = [
    "EverythingResult",
    "check_model",
    "segment_everything",
    "segment_everything_job",
    "segment_plane_job",
]

#: Proposals upscaled and resized together (bounds memory: ~4 MiB each per 1024² input).
MASK_CHUNK = 24


@dataclass
class EverythingResult:
    """What segment everything found.

    Attributes
    ----------
    labels : array ``(Y, X)`` or ``(Z, Y, X)`` int32
        Instance labels, 0 background. In a plane, ids ``1..N`` follow object
        area (largest first) and objects are painted in id order, so a smaller
        object overlapping a larger one stays visible on top of it. In a stack,
        ids are linked across planes (:func:`.everything_labels.link_planes`).
    objects : list of dict
        One record per object, in id order (stacks: by plane, then id). Keys
        of the official generator: ``segmentation`` (``(Y, X)`` bool, the whole
        mask, also where a smaller object covers it), ``area`` (pixels of
        ``segmentation``), ``bbox`` (``[x, y, w, h]``: the official XYWH, ``x + w``
        and ``y + h`` are the last column and row inside), ``predicted_iou``,
        ``point_coords`` (``[[x, y]]``, the prompt), ``stability_score``,
        ``crop_box`` (``[x, y, w, h]`` of the crop it came from); plus ``id``
        (its value in :attr:`labels`), ``visible_area`` (its pixels in
        :attr:`labels`) and, in stacks, ``plane``.
    settings : EverythingSettings
    """

    labels: np.ndarray
    objects: list[dict[str, Any]]
    settings: EverythingSettings = field(default_factory=EverythingSettings)

    def records(self) -> list[dict[str, Any]]:
        """The object records without their ``segmentation`` arrays (for tables and JSON)."""
        return [{k: v for k, v in obj.items() if k != "segmentation"} for obj in self.objects]


def check_model(model: Any) -> None:
    """Raise TypeError unless ``model`` is a :class:`~.model.SamModel`."""
    from .model import SamModel

    if not isinstance(model, SamModel):
        raise TypeError(
            "Expected a SamModel (napari_seglab.sam.load_model or build_tiny_sam), got "
            f"{type(model).__name__}."
        )


def segment_everything(
    model: SamModel,
    image: Any,
    *,
    cache: EmbeddingCache | None = None,
    cancel: Any = None,
    rgb: bool | None = None,
    link_iou: float = 0.5,
    **settings: Any,
) -> EverythingResult:
    """Segment every object of an image (or of each plane of a stack) with SAM.

    Parameters
    ----------
    model : SamModel
    image : array or SamInput
        ``(Y, X)``, ``(Y, X, 3)`` of any numeric dtype, or a stack ``(Z, Y, X)``
        / ``(Z, Y, X, 3)``; normalised to uint8 RGB as in :mod:`.image`
        (NaN/-Inf pixels become black, +Inf white, with a warning). Never modified.
    cache : EmbeddingCache, optional
        Where the embeddings of the image (and of its crops) are kept; pass the
        prompting widget's cache to reuse its embedding.
    cancel : threading.Event or callable, optional
        Stops the run (:class:`~napari_seglab.jobs.JobCancelled`).
    rgb : bool, optional
        Whether the last axis is colour (None: guess, as :class:`~.image.SamInput`).
    link_iou : float
        Stacks only: IoU at which an object continues an object of the plane before.
    **settings
        :class:`~.everything_grid.EverythingSettings` by their official names
        (``points_per_side=32``, ``pred_iou_thresh=0.88``, ...).

    Returns
    -------
    EverythingResult
        ``labels`` and the object ``records``; see there.

    Raises
    ------
    TypeError
        For a model that is not a SamModel or an unknown setting name.
    ValueError
        For a setting out of range or an image that is not 2D/3D (named with what it got).
    """
    return run_to_end(
        segment_everything_job(
            model, image, cache=cache, cancel=cancel, rgb=rgb, link_iou=link_iou, **settings
        )
    )


def segment_everything_job(
    model: SamModel,
    image: Any,
    *,
    cache: EmbeddingCache | None = None,
    cancel: Any = None,
    rgb: bool | None = None,
    link_iou: float = 0.5,
    **settings: Any,
) -> Generator[ProgressEvent, None, EverythingResult]:
    """:func:`segment_everything` as a job: yields a ``ProgressEvent`` per batch of prompts.

    ``stage`` is ``"segment everything"`` (stacks: ``"segment everything, plane z"``);
    ``done``/``total`` count prompt batches over all crops (and planes). Before each
    crop's embedding is looked up (or computed: the slow step on a CPU) an event with
    the stage ``"...: embedding"`` and an unchanged ``done`` is yielded.
    """
    from .image import SamInput

    check_model(model)
    options = EverythingSettings.from_kwargs(settings)
    if not (isinstance(link_iou, (int, float)) and 0.0 < link_iou <= 1.0):
        raise ValueError(f"Expected link_iou in (0, 1], got {link_iou!r}.")
    source = image if isinstance(image, SamInput) else SamInput(image, rgb=rgb)
    if min(source.plane_shape) < 1:
        raise ValueError(f"Expected an image with pixels, got plane shape {source.plane_shape}.")
    if cache is None:
        cache = EmbeddingCache(max_items=8)
    if source.is_stack:
        return (yield from _segment_stack_job(model, source, options, cache, cancel, link_iou))
    labels, objects = yield from segment_plane_job(
        model, source.plane(None), options, cache=cache, cancel=cancel
    )
    return EverythingResult(labels, objects, options)


def batches_per_plane(shape: tuple[int, int], options: EverythingSettings) -> int:
    """Prompt batches in one plane of ``shape`` ``(Y, X)`` (the progress total)."""
    _boxes, layers = crop_boxes(shape, options.crop_n_layers, options.crop_overlap_ratio)
    grids = options.grids()
    per = options.points_per_batch
    return sum(-(-len(grids[layer]) // per) for layer in layers)


def segment_plane_job(
    model: SamModel,
    rgb: np.ndarray,
    options: EverythingSettings,
    *,
    cache: EmbeddingCache,
    cancel: Any = None,
    stage: str = "segment everything",
    offset: int = 0,
    total: int | None = None,
    clock: Stopwatch | None = None,
) -> Generator[ProgressEvent, None, tuple[np.ndarray, list[dict[str, Any]]]]:
    """Segment everything in one ``(Y, X, 3)`` uint8 plane; returns ``(labels, objects)``.

    ``offset`` and ``total`` place this plane's batches in a longer job's progress.
    """
    import torch

    check = CancelCheck(cancel)
    clock = clock or Stopwatch()
    shape = rgb.shape[:2]
    total = total if total is not None else batches_per_plane(shape, options)
    boxes, layers = crop_boxes(shape, options.crop_n_layers, options.crop_overlap_ratio)
    grids = options.grids()
    done = offset
    found: list[dict[str, Any]] = []
    for crop, layer in zip(boxes, layers):
        x0, y0, x1, y1 = crop
        check.raise_if_set("Segment everything")
        yield ProgressEvent(f"{stage}: embedding", done, total, clock.elapsed)
        embedding = cache.get_or_compute(model, np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        points = grids[layer] * np.array([[x1 - x0, y1 - y0]], dtype=np.float64)
        with torch.inference_mode():
            context = _CropContext(model, embedding, crop, shape, options)
            parts = []
            for start in range(0, len(points), options.points_per_batch):
                check.raise_if_set("Segment everything")
                parts.append(context.batch(points[start : start + options.points_per_batch]))
                done += 1
                yield ProgressEvent(stage, done, total, clock.elapsed)
            found.append(context.deduplicate(parts))
    check.raise_if_set("Segment everything")
    kept = _merge_crops(found, options, shape)
    if options.min_mask_region_area > 0:
        threshold = max(options.box_nms_thresh, options.crop_nms_thresh)
        kept = clean_small_regions(kept, options.min_mask_region_area, threshold)
    labels, objects = label_objects(kept, shape)
    return labels, objects


class _CropContext:
    """The per-crop state of :func:`segment_plane_job`: embedding, prepared decoder."""

    def __init__(self, model, embedding, crop, shape, options: EverythingSettings) -> None:
        sam = model.sam
        self.model, self.embedding, self.crop, self.options = model, embedding, crop, options
        self.image_box = (0, 0, int(shape[1]), int(shape[0]))
        self.crop_size = tuple(embedding.original_size)
        self.threshold = float(sam.mask_threshold)
        h, w = embedding.features.shape[-2:]
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        self.prepared = prepare_image(
            sam.mask_decoder,
            embedding.features,
            model.dense_pe(),
            dense,
            pe_tokens=model.pe_tokens(),
        )

    def batch(self, points: np.ndarray) -> dict[str, Any]:
        """Proposals of a batch of ``(x, y)`` crop pixels that pass the per-mask filters."""
        import torch

        options, sam = self.options, self.model.sam
        xy = to_model_xy(points[:, ::-1], self.crop_size, self.embedding.input_size)
        coords = torch.as_tensor(xy, dtype=torch.float64, device=self.model.device)[:, None]
        labels = torch.ones((len(xy), 1), dtype=torch.int, device=self.model.device)
        sparse, _ = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        state = decode_tokens(sam.mask_decoder, self.prepared, sparse.float())
        count = state.iou.shape[1]
        iou = state.iou.reshape(-1).float()
        chosen = torch.arange(len(iou), device=iou.device)
        if options.pred_iou_thresh > 0.0:
            chosen = chosen[iou > options.pred_iou_thresh]
        out: dict[str, list] = {
            "masks": [torch.zeros((0, *self.crop_size), dtype=torch.bool)],
            "boxes": [torch.zeros((0, 4), dtype=torch.int64)],
            "iou": [torch.zeros(0)],
            "stability": [torch.zeros(0)],
            "which": [torch.zeros(0, dtype=torch.int64)],
        }  # on the CPU: what passed the per-mask filters (masks as bool)
        for start in range(0, len(chosen), MASK_CHUNK):
            which = chosen[start : start + MASK_CHUNK]
            low = decode_masks(
                sam.mask_decoder, self.prepared, state, which // count, which % count
            )
            logits = upsample_crop_logits(
                low, self.embedding.input_size, self.crop_size, self.model.img_size
            )
            stability = stability_scores(logits, self.threshold, options.stability_score_offset)
            keep = torch.ones_like(stability, dtype=torch.bool)
            if options.stability_score_thresh > 0.0:
                keep = stability >= options.stability_score_thresh
            masks = (logits > self.threshold)[keep].cpu()
            boxes = mask_boxes(masks)
            inside = ~near_crop_edge(boxes, self.crop, self.image_box)
            out["masks"].append(masks[inside])
            out["boxes"].append(boxes[inside])
            out["iou"].append(iou[which][keep].cpu()[inside])
            out["stability"].append(stability[keep].cpu()[inside])
            out["which"].append(which[keep].cpu()[inside])
        merged = {k: _cat(v) for k, v in out.items()}
        merged["points"] = points[(merged["which"] // count).numpy()]
        return merged

    def deduplicate(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Non-maximum suppression within the crop (by predicted IoU), in the image frame."""
        import torch

        data = {k: _cat([p[k] for p in parts]) for k in ("masks", "boxes", "iou", "stability")}
        data["points"] = np.concatenate([p["points"] for p in parts])
        keep = non_max_suppression(data["boxes"], data["iou"], self.options.box_nms_thresh)
        data = _select(data, keep)
        x0, y0 = self.crop[:2]
        data["boxes"] = data["boxes"] + torch.as_tensor([x0, y0, x0, y0])
        data["points"] = data["points"] + np.array([x0, y0], dtype=np.float64)
        data["crop"] = [self.crop] * len(data["iou"])
        return data


def _cat(parts: list) -> torch.Tensor:
    import torch

    return torch.cat(parts)


def _select(data: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """Rows ``keep`` (in that order) of every entry of ``data``."""
    index = keep.cpu().numpy()
    out = {}
    for key, value in data.items():
        if isinstance(value, list):
            out[key] = [value[int(i)] for i in index]
        elif isinstance(value, np.ndarray):
            out[key] = value[index]
        else:
            out[key] = value[keep]
    return out


def _merge_crops(
    found: list[dict[str, Any]], options: EverythingSettings, shape: tuple[int, int]
) -> list[dict]:
    """All crops' proposals; duplicates between crops removed (the smaller crop wins).

    Returns one dict per object with the mask ``(Y, X)`` of the whole image.
    """
    import torch

    boxes = torch.cat([f["boxes"] for f in found])
    if len(found) > 1:
        crops = torch.as_tensor([c for f in found for c in f["crop"]], dtype=torch.int64)
        area = (crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])
        keep = non_max_suppression(boxes, 1 / area, options.crop_nms_thresh).tolist()
    else:
        keep = list(range(len(boxes)))
    index = [(n, i) for n, f in enumerate(found) for i in range(len(f["iou"]))]
    height, width = shape
    objects = []
    for k in keep:
        n, i = index[k]
        f = found[n]
        x0, y0, x1, y1 = f["crop"][i]
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = f["masks"][i].cpu().numpy()
        objects.append(
            {
                "segmentation": mask,
                "box": [int(v) for v in f["boxes"][i].tolist()],
                "predicted_iou": float(f["iou"][i]),
                "point": [float(v) for v in f["points"][i]],
                "stability_score": float(f["stability"][i]),
                "crop": (x0, y0, x1, y1),
            }
        )
    return objects


def _segment_stack_job(
    model: SamModel,
    source: SamInput,
    options: EverythingSettings,
    cache: EmbeddingCache,
    cancel: Any,
    link_iou: float,
) -> Generator[ProgressEvent, None, EverythingResult]:
    """Segment every plane of ``source`` (a stack) and link the ids; a job."""
    clock = Stopwatch()
    per_plane = batches_per_plane(source.plane_shape, options)
    total = per_plane * source.n_planes
    planes, records = [], []
    for z in range(source.n_planes):
        labels, objects = yield from segment_plane_job(
            model,
            source.plane(z),
            options,
            cache=cache,
            cancel=cancel,
            stage=f"segment everything, plane {z}",
            offset=z * per_plane,
            total=total,
            clock=clock,
        )
        planes.append(labels)
        records.append(objects)
    labels, objects = link_planes(planes, records, link_iou)
    return EverythingResult(labels, objects, options)
