"""Fine-tune SAM's mask decoder on the user's annotated images (the MedSAM recipe).

The image encoder is frozen: every annotated plane is embedded once (through
:class:`~.embedding.EmbeddingCache`, so planes already embedded by the
prompting tool are reused), and the embeddings are kept in memory, or on disk
when they exceed a memory budget. Training then runs only the prompt encoder
and the mask decoder on prompts drawn from the labels (jittered boxes,
positive and negative points, optional correction rounds, see
:mod:`.finetune_prompts`), with Dice + BCE loss on the low-resolution logits,
MSE on the IoU head, AdamW, validation Dice on held-out objects after every
epoch, and early stopping. The best decoder is kept (also on cancel).

Typical use::

    from napari_seglab.sam import build_tiny_sam, load_model
    from napari_seglab.sam.finetune import finetune_decoder, save_decoder

    model = load_model("vit_b")
    result = finetune_decoder(model, [image], [labels], time_budget_s=600)
    result.before, result.after           # validation Dice per prompt kind
    save_decoder(result.model, "decoder.pt", result=result)
    tuned = load_model("vit_b", decoder_checkpoint="decoder.pt")

The input model is never changed: the result's model shares its (frozen)
image encoder and owns a trained copy of the decoder.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .decoder_files import (
    DecoderMismatchError,
    check_decoder_compatible,
    load_decoder,
    read_decoder_metadata,
    save_decoder,
)
from .finetune_prompts import (
    AnnotatedObject,
    PromptBatch,
    PromptRecipe,
    collect_objects,
    low_res_target_crops,
    sample_prompts,
    to_model_xy,
    validation_prompts,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .embedding import EmbeddingCache
    from .model import SamModel

__all__ = [
    "DecoderMismatchError",
    "FinetuneEvent",
    "FinetuneResult",
    "PromptRecipe",
    "check_decoder_compatible",
    "finetune_decoder",
    "finetune_decoder_events",
    "load_decoder",
    "read_decoder_metadata",
    "save_decoder",
]

#: Epochs when none of ``steps``, ``epochs`` and ``time_budget_s`` is given.
DEFAULT_EPOCHS = 30


@dataclass(frozen=True)
class FinetuneEvent:
    """Progress of :func:`finetune_decoder_events`.

    Attributes
    ----------
    stage : {"embedding", "epoch", "done"}
        ``"embedding"`` after each plane embedded (``done`` of ``total``
        planes); ``"epoch"`` after each epoch's validation (epoch 0 is the
        untrained decoder); ``"done"`` once, at the end.
    epoch, step : int
        Epochs and optimizer steps completed.
    done, total : int
        Progress within the stage (planes, or epochs; ``total`` is 0 when
        only a time budget bounds training).
    loss : float or None
        Mean training loss of the epoch.
    validation : dict of str to float
        Validation Dice per prompt kind (``"box"``, ``"points"``) and their ``"mean"``.
    best : float or None
        Best mean validation Dice so far.
    elapsed_s : float
        Seconds since training started (embedding excluded).
    """

    stage: str
    epoch: int = 0
    step: int = 0
    done: int = 0
    total: int = 0
    loss: float | None = None
    validation: dict = field(default_factory=dict)
    best: float | None = None
    elapsed_s: float = 0.0


@dataclass
class FinetuneResult:
    """Outcome of fine-tuning.

    Attributes
    ----------
    model : SamModel
        The tuned model (best epoch's decoder), sharing the input model's encoder.
    history : list of dict
        One entry per epoch (epoch 0 = before training): ``epoch``, ``step``,
        ``loss`` (mean training loss, None for epoch 0), ``dice`` (per prompt
        kind and ``"mean"``), ``elapsed_s``.
    before, after : dict of str to float
        Validation Dice per prompt kind and ``"mean"``, of the untrained and
        of the kept decoder (empty without validation objects).
    best_epoch : int
    steps, epochs : int
        Optimizer steps and epochs run.
    cancelled, stopped_early : bool
    encoder_calls : int
        Planes the image encoder ran on (the others came from the cache).
    n_planes, n_train_objects, n_validation_objects : int
    recipe : dict
        Prompt recipe and optimisation settings (stored with the decoder).
    """

    model: SamModel
    history: list[dict]
    before: dict
    after: dict
    best_epoch: int = 0
    steps: int = 0
    epochs: int = 0
    cancelled: bool = False
    stopped_early: bool = False
    encoder_calls: int = 0
    n_planes: int = 0
    n_train_objects: int = 0
    n_validation_objects: int = 0
    recipe: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Plane:
    """An annotated plane: where it comes from and its geometry in the encoder frame."""

    image: int
    index: int | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]


# -- inputs ---------------------------------------------------------------------------------


def _as_list(items: Any, name: str) -> list:
    if isinstance(items, np.ndarray) or hasattr(items, "shape"):
        return [items]
    if isinstance(items, (list, tuple)):
        return list(items)
    raise ValueError(
        f"Expected {name} as an array or a list of arrays, got {type(items).__name__}."
    )


def _checked_pairs(images: Any, labels: Any) -> list[tuple[Any, np.ndarray]]:
    """``(image, labels)`` pairs with matching spatial shapes (labels read into memory)."""
    from .image import SamInput

    images = _as_list(images, "images")
    labels = _as_list(labels, "labels")
    if len(images) != len(labels):
        raise ValueError(
            f"Expected one label image per image, got {len(images)} images and "
            f"{len(labels)} label images."
        )
    if not images:
        raise ValueError("Expected at least one image with labels, got none.")
    pairs = []
    for i, (image, label) in enumerate(zip(images, labels)):
        source = image if isinstance(image, SamInput) else SamInput(image)
        label = np.asarray(label)
        if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
            raise ValueError(
                f"Expected integer labels (0 = background), got dtype {label.dtype} "
                f"for label image {i}."
            )
        expected = ((source.n_planes,) if source.is_stack else ()) + tuple(source.plane_shape)
        if label.shape != expected:
            raise ValueError(
                f"Label image {i} has shape {label.shape}, expected {expected} to match "
                f"image {i} of shape {np.shape(source.data)}."
            )
        pairs.append((source, label))
    return pairs


def _split(
    objects: list[AnnotatedObject], fraction: float, rng: np.random.Generator
) -> tuple[list[AnnotatedObject], list[AnnotatedObject]]:
    """Training and validation objects; at least one of each when ``fraction > 0``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"Expected validation_fraction in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return list(objects), []
    if len(objects) < 2:
        raise ValueError(
            f"Expected at least 2 annotated objects to hold some out for validation, got "
            f"{len(objects)} (or pass validation_fraction=0)."
        )
    order = rng.permutation(len(objects))
    n_val = min(max(1, round(fraction * len(objects))), len(objects) - 1)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [objects[i] for i in train], [objects[i] for i in val]


# -- embeddings -----------------------------------------------------------------------------


class _EmbeddingStore:
    """Embeddings of the annotated planes: one tensor in memory, or a disk-backed cache.

    Parameters
    ----------
    model : SamModel
    cache : EmbeddingCache
        Where embeddings come from (and, when disk-backed, are kept).
    n_planes : int
    budget_mib : float
        In-memory limit; above it, planes are read back from ``cache`` (which
        must then have a disk store) on demand.
    """

    def __init__(self, model: SamModel, cache: EmbeddingCache, n_planes: int, budget_mib: float):
        import torch

        grid = model.architecture.embedding_size
        channels = model.architecture.prompt_embed_dim
        self.bytes_per_plane = 4 * channels * grid * grid
        self.in_memory = n_planes * self.bytes_per_plane <= budget_mib * 2**20
        self.device = model.device
        self.model = model
        self.cache = cache
        self.keys: list[str] = [""] * n_planes
        self.tensor = (
            torch.empty((n_planes, channels, grid, grid), device=model.device)
            if self.in_memory
            else None
        )

    def put(self, i: int, key: str, features: torch.Tensor) -> None:
        self.keys[i] = key
        if self.tensor is not None:
            self.tensor[i].copy_(features[0])

    def put_copy(self, i: int, key: str, j: int) -> None:
        """Plane ``i`` has the same content as plane ``j`` (already stored)."""
        self.keys[i] = key
        if self.tensor is not None:
            self.tensor[i].copy_(self.tensor[j])

    def get(self, i: int) -> torch.Tensor:
        """``(1, C, h, w)`` float32 on the device (a normal tensor, usable with autograd)."""
        if self.tensor is not None:
            return self.tensor[i : i + 1]
        embedding = self.cache.get(self.keys[i], self.model)
        if embedding is None:  # pragma: no cover - the disk store is written before training
            raise RuntimeError(f"The embedding of plane {i} is missing from the disk cache.")
        return embedding.features.to(self.device).clone()


def _embed_planes(
    model: SamModel,
    pairs: list[tuple[Any, np.ndarray]],
    planes: list[_Plane],
    store: _EmbeddingStore,
    cancel: Any,
) -> Generator[FinetuneEvent, None, int]:
    """Fill ``store`` with the embedding of every plane; returns the encoder runs (planes).

    Planes with identical content (same uint8 RGB, so the same cache key) are
    embedded once, whichever image they come from.
    """
    from .embedding import _cancelled, embedding_key, precompute_embeddings

    by_image: dict[int, list[int]] = {}
    for i, plane in enumerate(planes):
        by_image.setdefault(plane.image, []).append(i)
    first_with_key: dict[str, int] = {}
    done = computed = 0
    for image_index, plane_ids in by_image.items():
        source = pairs[image_index][0]
        pending: dict[int, tuple[int, str]] = {}  # plane index in the image -> (store row, key)
        for i in plane_ids:
            key = embedding_key(model, source.plane(planes[i].index))
            if key in first_with_key:
                store.put_copy(i, key, first_with_key[key])
                done += 1
                yield FinetuneEvent("embedding", done=done, total=len(planes))
                continue
            first_with_key[key] = i
            pending[planes[i].index if source.is_stack else 0] = (i, key)
        steps = precompute_embeddings(
            model, source, store.cache, planes=list(pending), cancel=cancel
        )
        while True:
            try:
                progress = next(steps)
            except StopIteration as stop:
                computed += int(stop.value or 0)
                break
            i, key = pending[progress.plane]
            embedding = store.cache.get(key, model)
            if embedding is None:  # pragma: no cover - evicted between put and get
                embedding = store.cache.get_or_compute(model, source.plane(planes[i].index))
                computed += 1
            store.put(i, key, embedding.features.to(store.device))
            done += 1
            yield FinetuneEvent("embedding", done=done, total=len(planes))
        if _cancelled(cancel):
            break
    return computed


# -- model ----------------------------------------------------------------------------------


def _trainable_copy(model: SamModel, device: torch.device, train_prompt_encoder: bool) -> SamModel:
    """A SamModel sharing ``model``'s image encoder, with its own copy of the trained parts.

    On another device, the whole network is copied there.
    """
    if device != model.device:
        sam = copy.deepcopy(model.sam).to(device)
    else:
        sam = copy.copy(model.sam)  # shallow: shares the frozen encoder
        sam._modules = type(model.sam._modules)(model.sam._modules)
        sam._parameters = type(model.sam._parameters)(model.sam._parameters)
        sam._buffers = type(model.sam._buffers)(model.sam._buffers)
        sam.mask_decoder = copy.deepcopy(model.sam.mask_decoder)
        if train_prompt_encoder:
            sam.prompt_encoder = copy.deepcopy(model.sam.prompt_encoder)
    return dataclasses.replace(
        model, sam=sam, device=device, _dense_pe=None, decoder_checkpoint=None
    )


def _trained_state(model: SamModel, train_prompt_encoder: bool) -> dict:
    parts = ("mask_decoder", "prompt_encoder") if train_prompt_encoder else ("mask_decoder",)
    return {
        part: {k: v.detach().clone() for k, v in getattr(model.sam, part).state_dict().items()}
        for part in parts
    }


def batched_predict_masks(
    mask_decoder: torch.nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` for a batch of prompts on *different* images.

    segment_anything's ``predict_masks`` takes one image embedding and
    repeats it for every prompt; training draws objects from many planes at
    once, so here prompt ``i`` is decoded against ``image_embeddings[i]``. The
    computation is otherwise the same, step by step, with the decoder's own
    modules (a test checks equality with ``predict_masks``, one object at a time).

    Parameters
    ----------
    mask_decoder : segment_anything.modeling.MaskDecoder
    image_embeddings : ``(B, C, h, w)``
    image_pe : ``(1, C, h, w)``
    sparse_prompt_embeddings : ``(B, N, C)``
    dense_prompt_embeddings : ``(B, C, h, w)``

    Returns
    -------
    masks : ``(B, 4, 4h, 4w)`` low-res logits (token 0: single-mask output, 1..3: multimask)
    iou_pred : ``(B, 4)``
    """
    import torch

    dec = mask_decoder
    batch = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    pos_src = image_pe.expand(batch, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + dec.num_mask_tokens), :]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    upscaled = dec.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, dec.iou_prediction_head(iou_token_out)


class _TargetCrops:
    """Low-res training targets stored as their non-zero crops (float16).

    A full ``(n, 256, 256)`` float32 stack would cost 256 KiB per object for
    published models; objects cover a small part of the frame, so crops keep
    thousands of objects in a few MiB.
    """

    def __init__(self, n: int, size: int):
        self.size = size
        self.crops: list[Any] = [None] * n
        self.offsets: list[tuple[int, int]] = [(0, 0)] * n

    def put(self, i: int, crop: np.ndarray, offset: tuple[int, int]) -> None:
        import torch

        self.crops[i] = torch.from_numpy(crop).half()
        self.offsets[i] = (int(offset[0]), int(offset[1]))

    def batch(self, ids: Sequence[int], device: torch.device) -> torch.Tensor:
        """``(B, 1, L, L)`` float32 targets of objects ``ids`` on ``device``."""
        import torch

        out = torch.zeros((len(ids), 1, self.size, self.size))
        for row, i in enumerate(ids):
            crop = self.crops[i]
            r, c = self.offsets[i]
            out[row, 0, r : r + crop.shape[0], c : c + crop.shape[1]] = crop.float()
        return out.to(device)


class _Decoder:
    """Runs SAM's prompt encoder and mask decoder on a batch of objects from several planes."""

    def __init__(
        self,
        model: SamModel,
        planes: list[_Plane],
        store: _EmbeddingStore,
        train_prompt_encoder: bool,
    ):
        import torch

        self.model = model
        self.planes = planes
        self.store = store
        self.train_prompt_encoder = train_prompt_encoder
        with torch.no_grad():
            self.image_pe = model.sam.prompt_encoder.get_dense_pe().clone()

    def prompt_tensors(self, objects: list[AnnotatedObject], prompts: PromptBatch):
        """SAM-frame tensors ``(coords (B,N,2), labels (B,N))`` or None, and boxes ``(B,4)``."""
        import torch

        device = self.model.device
        points = boxes = None
        if prompts.points is not None:
            xy = np.stack(
                [
                    to_model_xy(
                        p, self.planes[o.plane].original_size, self.planes[o.plane].input_size
                    )
                    for o, p in zip(objects, prompts.points)
                ]
            )
            points = (
                torch.as_tensor(xy, dtype=torch.float, device=device),
                torch.as_tensor(prompts.point_labels, dtype=torch.int, device=device),
            )
        if prompts.boxes is not None:
            corners = np.stack(
                [
                    to_model_xy(
                        b.reshape(2, 2),
                        self.planes[o.plane].original_size,
                        self.planes[o.plane].input_size,
                    ).reshape(4)
                    for o, b in zip(objects, prompts.boxes)
                ]
            )
            boxes = torch.as_tensor(corners, dtype=torch.float, device=device)
        return points, boxes

    def embeddings(self, objects: list[AnnotatedObject]) -> torch.Tensor:
        """``(B, C, h, w)``: the embedding of each object's plane."""
        import torch

        plane_ids = [o.plane for o in objects]
        if self.store.tensor is not None:
            index = torch.as_tensor(plane_ids, device=self.model.device)
            return self.store.tensor.index_select(0, index)
        unique = {p: self.store.get(p) for p in dict.fromkeys(plane_ids)}
        return torch.cat([unique[p] for p in plane_ids])

    def __call__(self, objects: list[AnnotatedObject], points, boxes, mask_input=None):
        """Low-res logits of all four mask tokens ``(B, 4, L, L)`` and IoU predictions ``(B, 4)``.

        Token 0 is the single-mask output (``multimask=False``), tokens 1..3
        the three proposals of ``multimask=True``.
        """
        import contextlib

        import torch

        sam = self.model.sam
        context = contextlib.nullcontext() if self.train_prompt_encoder else torch.no_grad()
        with context:
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        embeddings = self.embeddings(objects)
        # On a CPU, large embeddings (64x64x256) one object at a time are faster: the
        # activations of a batch overflow the caches. Small ones and GPUs: all at once.
        small = embeddings[0].numel() < 2**18
        chunk = len(objects) if self.model.device.type == "cuda" or small else 1
        outputs = [
            batched_predict_masks(
                sam.mask_decoder,
                embeddings[i : i + chunk],
                self.image_pe,
                sparse[i : i + chunk],
                dense[i : i + chunk],
            )
            for i in range(0, len(objects), chunk)
        ]
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([m for m, _ in outputs]), torch.cat([q for _, q in outputs])


def _mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE per mask: logits ``(B, K, L, L)``, target ``(B, 1, L, L)`` -> ``(B, K)``.

    The Dice term is written out (two sums) rather than taken from MONAI: the
    ``monai`` import alone costs several seconds, more than a short fine-tuning run.
    """
    import torch.nn.functional as F

    logits = logits.float()
    expanded = target.expand_as(logits)
    prob = logits.sigmoid()
    inter = (prob * expanded).sum((-2, -1))
    total = prob.sum((-2, -1)) + expanded.sum((-2, -1))
    dice = 1.0 - (2.0 * inter + 1.0) / (total + 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, expanded, reduction="none").mean((-2, -1))
    return dice + bce


def _actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each mask ``logits > 0`` with ``target > 0.5``, ``(B, K)`` (no gradient)."""
    pred = logits.detach() > 0
    truth = (target > 0.5).expand_as(pred)
    inter = (pred & truth).sum((-2, -1)).float()
    union = (pred | truth).sum((-2, -1)).float()
    return inter / union.clamp(min=1.0)


def _correction_points(
    logits: torch.Tensor, target: torch.Tensor, img_size: int, generator: torch.Generator
):
    """One point per object in the error region of ``logits``: ``(B,1,2)`` xy and ``(B,1)`` labels.

    Missed object pixels give a positive point, overflow a negative one; an
    object without error gets a positive point inside it.
    """
    import torch

    pred = logits.detach() > 0
    truth = target[:, 0] > 0.5
    error = (pred ^ truth).flatten(1).float()
    weights = error + 1e-6 * truth.flatten(1).float() + 1e-9
    cell = torch.multinomial(weights.cpu(), 1, generator=generator).to(logits.device)[:, 0]
    low = logits.shape[-1]
    rows = torch.div(cell, low, rounding_mode="floor")
    cols = cell % low
    scale = img_size / low
    xy = torch.stack([(cols.float() + 0.5) * scale - 0.5, (rows.float() + 0.5) * scale - 0.5], -1)
    labels = truth.flatten(1).gather(1, cell[:, None]).int()
    return xy[:, None, :], labels


def _validate(
    decoder: _Decoder,
    objects: list[AnnotatedObject],
    kinds: tuple[str, ...],
    batch_size: int,
) -> dict:
    """Mean Dice per prompt kind of token-0 masks at full resolution (and their mean)."""
    import torch

    from ..device import autocast
    from .prompt import Prediction

    if not objects:
        return {}
    model = decoder.model
    scores: dict[str, float] = {}
    with torch.inference_mode(), autocast(model.device):
        for kind in kinds:
            dices = []
            for start in range(0, len(objects), batch_size):
                chunk = objects[start : start + batch_size]
                points, boxes = decoder.prompt_tensors(chunk, validation_prompts(chunk, kind))
                low, iou = decoder(chunk, points, boxes)
                for obj, logits, score in zip(chunk, low[:, :1].float(), iou[:, :1].float()):
                    plane = decoder.planes[obj.plane]
                    prediction = Prediction(
                        scores=score.cpu().numpy(),
                        best=0,
                        original_size=plane.original_size,
                        _logits=logits[None],
                        _input_size=plane.input_size,
                        _img_size=model.img_size,
                        _threshold=float(model.sam.mask_threshold),
                    )
                    mask = prediction.mask
                    r, c = obj.offset
                    inside = mask[r : r + obj.mask.shape[0], c : c + obj.mask.shape[1]]
                    overlap = np.count_nonzero(inside & obj.mask)
                    dices.append(2.0 * overlap / (np.count_nonzero(mask) + obj.area))
            scores[kind] = float(np.mean(dices))
    scores["mean"] = float(np.mean([scores[k] for k in kinds]))
    return scores


# -- training -------------------------------------------------------------------------------


def finetune_decoder_events(
    model: SamModel,
    images: Any,
    labels: Any,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    prompt: str | PromptRecipe = "mixed",
    learning_rate: float = 1e-4,
    weight_decay: float = 0.01,
    batch_size: int = 16,
    validation_fraction: float = 0.2,
    patience: int = 5,
    iou_loss_weight: float = 1.0,
    train_prompt_encoder: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    cache: EmbeddingCache | None = None,
    embedding_memory_mib: float = 1024.0,
    embedding_dir: str | Path | None = None,
    min_object_pixels: int = 16,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> Generator[FinetuneEvent, None, FinetuneResult]:
    """Fine-tune the mask decoder, yielding progress; returns a :class:`FinetuneResult`.

    Same parameters as :func:`finetune_decoder` plus ``cancel``: a
    ``threading.Event`` or a callable checked before every step. Cancelling
    ends training at once and keeps the best decoder so far (the result has
    ``cancelled=True``). Drive it with ``yield from`` or a ``thread_worker``;
    the result is the generator's return value.
    """

    from ..device import resolve_device
    from .embedding import EmbeddingCache, _cancelled

    recipe = prompt if isinstance(prompt, PromptRecipe) else PromptRecipe(kind=str(prompt))
    for name, value in (("steps", steps), ("epochs", epochs)):
        if value is not None and int(value) < 1:
            raise ValueError(f"Expected {name} >= 1 or None, got {value}.")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"Expected time_budget_s > 0 or None, got {time_budget_s}.")
    if learning_rate <= 0 or batch_size < 1 or patience < 1:
        raise ValueError(
            "Expected learning_rate > 0, batch_size >= 1 and patience >= 1, got "
            f"{learning_rate}, {batch_size}, {patience}."
        )
    if steps is None and epochs is None and time_budget_s is None:
        epochs = DEFAULT_EPOCHS
    device = resolve_device(device)
    pairs = _checked_pairs(images, labels)
    rng = np.random.default_rng(seed)

    # Annotated planes and their objects.
    from .embedding import _resized_shape

    planes: list[_Plane] = []
    objects: list[AnnotatedObject] = []
    for image_index, (source, label) in enumerate(pairs):
        stack = label if source.is_stack else label[None]
        for z in range(stack.shape[0]):
            if not stack[z].any():
                continue
            found = collect_objects(stack[z], len(planes), rng, min_pixels=min_object_pixels)
            if not found:
                continue
            shape = tuple(int(s) for s in stack[z].shape)
            planes.append(
                _Plane(
                    image_index,
                    z if source.is_stack else None,
                    shape,
                    _resized_shape(shape, model.img_size),
                )
            )
            objects.extend(found)
    if not objects:
        raise ValueError(
            f"Expected annotated objects (label > 0, at least {min_object_pixels} pixels) in the "
            "label images, found none."
        )
    train, val = _split(objects, validation_fraction, rng)

    tuned = _trainable_copy(model, device, train_prompt_encoder)

    # Embeddings, once, with the frozen encoder.
    own_dir = None
    needs_disk = (
        len(planes)
        * 4
        * model.architecture.prompt_embed_dim
        * model.architecture.embedding_size**2
        > embedding_memory_mib * 2**20
    )
    if cache is None or (needs_disk and cache.disk_path is None):
        if needs_disk and embedding_dir is None:
            from .download import cache_dir

            parent = cache_dir()
            parent.mkdir(parents=True, exist_ok=True)
            own_dir = tempfile.mkdtemp(prefix="finetune-embeddings-", dir=parent)
        location = embedding_dir or own_dir
        per_plane = 4 * model.architecture.prompt_embed_dim * model.architecture.embedding_size**2
        # In memory, the LRU only hands embeddings on to the store (4 = a CUDA encoder
        # batch); disk-backed, it is the working set: at most half the budget.
        lru = max(1, min(8, int(embedding_memory_mib * 2**19 // per_plane))) if needs_disk else 4
        disk = Path(location) / "store.zarr" if location else None
        cache = EmbeddingCache(max_items=lru, disk=disk)
    store = _EmbeddingStore(tuned, cache, len(planes), embedding_memory_mib)
    try:
        encoder_calls = yield from _embed_planes(tuned, pairs, planes, store, cancel)
        if _cancelled(cancel):
            return FinetuneResult(
                model=model,
                history=[],
                before={},
                after={},
                cancelled=True,
                encoder_calls=encoder_calls,
                n_planes=len(planes),
                n_train_objects=len(train),
                n_validation_objects=len(val),
                recipe=recipe.to_dict(),
            )
        result = yield from _train(
            tuned,
            planes,
            store,
            train,
            val,
            recipe,
            steps=steps,
            epochs=epochs,
            time_budget_s=time_budget_s,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            batch_size=batch_size,
            patience=patience,
            iou_loss_weight=iou_loss_weight,
            train_prompt_encoder=train_prompt_encoder,
            seed=seed,
            cancel=cancel,
        )
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    result.encoder_calls = encoder_calls
    result.n_planes = len(planes)
    result.recipe.update(
        {
            "validation_fraction": validation_fraction,
            "seed": seed,
            "n_planes": len(planes),
            "n_train_objects": len(train),
            "n_validation_objects": len(val),
        }
    )
    yield FinetuneEvent(
        "done",
        epoch=result.epochs,
        step=result.steps,
        done=1,
        total=1,
        validation=dict(result.after),
        best=result.after.get("mean") if result.after else None,
        elapsed_s=result.history[-1]["elapsed_s"] if result.history else 0.0,
    )
    return result


def _train(
    tuned: SamModel,
    planes: list[_Plane],
    store: _EmbeddingStore,
    train: list[AnnotatedObject],
    val: list[AnnotatedObject],
    recipe: PromptRecipe,
    *,
    steps: int | None,
    epochs: int | None,
    time_budget_s: float | None,
    learning_rate: float,
    weight_decay: float,
    batch_size: int,
    patience: int,
    iou_loss_weight: float,
    train_prompt_encoder: bool,
    seed: int,
    cancel: Any,
) -> Generator[FinetuneEvent, None, FinetuneResult]:
    """The training loop of :func:`finetune_decoder_events` (embeddings already in ``store``)."""
    import torch

    from ..device import autocast, autocast_dtype
    from .embedding import _cancelled
    from .model import apply_decoder_weights

    device = tuned.device
    sam = tuned.sam
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed)
    decoder = _Decoder(tuned, planes, store, train_prompt_encoder)
    shapes = [p.original_size for p in planes]
    low = tuned.low_res_size

    # Low-res targets of the training objects, computed once, kept as crops.
    targets = _TargetCrops(len(train), low)
    by_plane: dict[int, list[int]] = {}
    for i, obj in enumerate(train):
        by_plane.setdefault(obj.plane, []).append(i)
    for plane, ids in by_plane.items():
        crops = low_res_target_crops(
            [train[i] for i in ids], shapes[plane], planes[plane].input_size, tuned.img_size, low
        )
        for i, (crop, offset) in zip(ids, crops):
            targets.put(i, crop, offset)

    params = list(sam.mask_decoder.parameters())
    if train_prompt_encoder:
        params += list(sam.prompt_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    kinds = recipe.kinds
    steps_per_epoch = math.ceil(len(train) / batch_size)
    max_epochs = (
        epochs
        if epochs is not None
        else (math.ceil(steps / steps_per_epoch) if steps is not None else None)
    )
    total = max_epochs or 0

    start = time.perf_counter()
    before = _validate(decoder, val, kinds, batch_size)
    history = [
        {
            "epoch": 0,
            "step": 0,
            "loss": None,
            "dice": dict(before),
            "elapsed_s": time.perf_counter() - start,
        }
    ]
    best_dice = before.get("mean", -math.inf)
    best_state = _trained_state(tuned, train_prompt_encoder)
    best_epoch = 0
    yield FinetuneEvent(
        "epoch", 0, 0, 0, total, None, dict(before), before.get("mean"), history[-1]["elapsed_s"]
    )

    step = epoch = stale = 0
    cancelled = stopped_early = out_of_budget = False
    sam.mask_decoder.train()
    if train_prompt_encoder:
        sam.prompt_encoder.train()
    try:
        while not (max_epochs is not None and epoch >= max_epochs):
            order = rng.permutation(len(train))
            if not store.in_memory:  # keep planes together: few disk reads
                plane_order = rng.permutation(len(planes))
                rank = np.argsort(plane_order)
                order = order[np.argsort(rank[[train[i].plane for i in order]], kind="stable")]
            losses = []
            for first in range(0, len(order), batch_size):
                if _cancelled(cancel):
                    cancelled = True
                    break
                ids = order[first : first + batch_size]
                batch = [train[i] for i in ids]
                target = targets.batch(ids, device)
                kind = kinds[int(rng.integers(len(kinds)))]
                prompts = sample_prompts(
                    batch, kind, recipe, rng, [shapes[o.plane] for o in batch]
                )
                points, boxes = decoder.prompt_tensors(batch, prompts)
                with autocast(device):
                    logits, iou = decoder(batch, points, boxes)
                    per_mask = _mask_losses(logits, target)
                    # Single-mask output for every prompt; best of the three proposals
                    # (SAM's ambiguity-aware loss) so multimask prediction is trained too.
                    loss = (per_mask[:, 0] + per_mask[:, 1:].min(dim=1).values).mean()
                    if iou_loss_weight:
                        truth = _actual_iou(logits.float(), target)
                        loss = loss + iou_loss_weight * torch.mean((iou.float() - truth) ** 2)
                    for _ in range(recipe.correction_rounds):
                        xy, lab = _correction_points(
                            logits[:, 0], target, tuned.img_size, generator
                        )
                        if points is None:
                            points = (xy, lab)
                        else:
                            points = (
                                torch.cat([points[0], xy], 1),
                                torch.cat([points[1], lab], 1),
                            )
                        previous = logits[:, :1].detach().float()
                        logits, iou = decoder(batch, points, boxes, mask_input=previous)
                        loss = loss + _mask_losses(logits[:, :1], target).mean()
                        if iou_loss_weight:
                            truth = _actual_iou(logits[:, :1].float(), target)
                            loss = loss + iou_loss_weight * torch.mean(
                                (iou[:, :1].float() - truth) ** 2
                            )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                step += 1
                if steps is not None and step >= steps:
                    out_of_budget = True
                    break
                if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
                    out_of_budget = True
                    break
            if cancelled and not losses:
                break
            epoch += 1
            sam.mask_decoder.eval()
            dice = _validate(decoder, val, kinds, batch_size)
            sam.mask_decoder.train()
            mean_loss = float(np.mean(losses)) if losses else None
            history.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "loss": mean_loss,
                    "dice": dict(dice),
                    "elapsed_s": time.perf_counter() - start,
                }
            )
            current = dice.get("mean", -math.inf) if val else math.inf
            if not val or current > best_dice + 1e-4:
                best_dice = current if val else best_dice
                best_state = _trained_state(tuned, train_prompt_encoder)
                best_epoch = epoch
                stale = 0
            else:
                stale += 1
            yield FinetuneEvent(
                "epoch",
                epoch,
                step,
                epoch,
                total,
                mean_loss,
                dict(dice),
                None if not val else best_dice,
                history[-1]["elapsed_s"],
            )
            if cancelled or out_of_budget:
                break
            if val and stale >= patience:
                stopped_early = True
                break
    finally:
        sam.mask_decoder.eval()
        sam.prompt_encoder.eval()
    apply_decoder_weights(tuned, best_state, source=f"<fine-tuning, epoch {best_epoch}>")
    after = history[best_epoch]["dice"] if val else {}
    recipe_dict = recipe.to_dict()
    recipe_dict.update(
        {
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "iou_loss_weight": iou_loss_weight,
            "train_prompt_encoder": train_prompt_encoder,
            "steps": step,
            "epochs": epoch,
            "best_epoch": best_epoch,
        }
    )
    return FinetuneResult(
        model=tuned,
        history=history,
        before=before,
        after=dict(after),
        best_epoch=best_epoch,
        steps=step,
        epochs=epoch,
        cancelled=cancelled,
        stopped_early=stopped_early,
        n_train_objects=len(train),
        n_validation_objects=len(val),
        recipe=recipe_dict,
    )


def finetune_decoder(
    model: SamModel,
    images: Any,
    labels: Any,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    prompt: str | PromptRecipe = "mixed",
    learning_rate: float = 1e-4,
    validation_fraction: float = 0.2,
    train_prompt_encoder: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    callback: Callable[[FinetuneEvent], Any] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune SAM's mask decoder on annotated images with the image encoder frozen.

    Parameters
    ----------
    model : SamModel
        Base model; never modified (the result holds a tuned copy that shares
        its image encoder).
    images : array or list of arrays
        2D images ``(Y, X)`` / ``(Y, X, 3)`` or stacks ``(Z, Y, X[, 3])``, any
        dtype, normalised like the prompting tool does (see :mod:`.image`).
    labels : array or list of arrays
        One integer label image per image, ``(Y, X)`` or ``(Z, Y, X)``; 0 is
        background. Instance or semantic: each connected component of each
        value in each plane is one object. Planes without labels are ignored
        (only annotated planes are embedded).
    steps, epochs, time_budget_s : optional
        Stop after this many optimizer steps, epochs (passes over the training
        objects), or seconds of training (embedding time excluded), whichever
        comes first. None of them: 30 epochs. Early stopping applies in all cases.
    prompt : {"mixed", "box", "points"} or PromptRecipe
        Prompt kinds to train and validate with; a :class:`PromptRecipe`
        also sets point counts, negatives, box jitter and correction rounds.
    learning_rate : float
        AdamW learning rate (1e-4 suits published decoders; a decoder trained
        from scratch wants about 1e-3).
    validation_fraction : float
        Share of the objects held out for validation Dice (0: no validation,
        the last epoch is kept).
    train_prompt_encoder : bool
        Also train the prompt encoder (saved with the decoder).
    device : str or torch.device
        ``"auto"``: cuda > mps > cpu (CUDA runs the decoder under autocast).
    seed : int
        Seeds the object split and prompt sampling.
    callback : callable, optional
        Called with every :class:`FinetuneEvent`.
    **options
        Further keywords of :func:`finetune_decoder_events`: ``batch_size``
        (16), ``patience`` (5 epochs), ``weight_decay`` (0.01),
        ``iou_loss_weight`` (1.0), ``cache`` (an :class:`EmbeddingCache` to
        reuse), ``embedding_memory_mib`` (1024; above it embeddings live on
        disk), ``embedding_dir``, ``min_object_pixels`` (16), ``cancel``.

    Returns
    -------
    FinetuneResult
    """
    events = finetune_decoder_events(
        model,
        images,
        labels,
        steps=steps,
        epochs=epochs,
        time_budget_s=time_budget_s,
        prompt=prompt,
        learning_rate=learning_rate,
        validation_fraction=validation_fraction,
        train_prompt_encoder=train_prompt_encoder,
        device=device,
        seed=seed,
        **options,
    )
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
