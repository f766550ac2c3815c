"""What fine-tuning hands to the shared training loop: SAM's decoder as a ``TrainingTask``.

:class:`DecoderTask` implements :class:`napari_seglab.training_loop.TrainingTask`
for a tuned copy of SAM whose image embeddings are already in an
:class:`~.store.EmbeddingStore`: batches of objects with prompts drawn from
the labels, Dice + BCE on the low-resolution logits (best of the three
proposals plus the single-mask output) with MSE on the IoU head and optional
correction rounds, and validation Dice per prompt kind on full-size masks
(:func:`napari_seglab.metrics.foreground_dice`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..frames import upsample_logits
from ..model import apply_decoder_weights
from .batched import BatchDecoder
from .data import AnnotatedObject, Plane
from .losses import actual_iou, correction_points, mask_losses
from .prompts import PromptBatch, PromptRecipe, sample_prompts, validation_prompts
from .store import EmbeddingStore
from .targets import TargetCrops, low_res_target_crops

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model import SamModel

__all__ = ["DecoderBatch", "DecoderTask", "trained_parts"]


def trained_parts(train_prompt_encoder: bool) -> tuple[str, ...]:
    """Names of the SAM submodules fine-tuning trains."""
    return ("mask_decoder", "prompt_encoder") if train_prompt_encoder else ("mask_decoder",)


@dataclass
class DecoderBatch:
    """One training step's objects and prompts.

    Attributes
    ----------
    ids : array of int
        Indices into the training objects.
    objects : list of AnnotatedObject
    prompts : PromptBatch
        In ``(row, col)`` pixels of each object's plane.
    """

    ids: np.ndarray
    objects: list[AnnotatedObject]
    prompts: PromptBatch


class DecoderTask:
    """SAM decoder fine-tuning as a :class:`~napari_seglab.training_loop.TrainingTask`.

    Parameters
    ----------
    model : SamModel
        The copy being tuned (its decoder, and prompt encoder when
        ``train_prompt_encoder``, are trained in place).
    planes : list of Plane
    store : EmbeddingStore
        The planes' embeddings.
    train, val : list of AnnotatedObject
        Training and validation objects (``val`` may be empty).
    recipe : PromptRecipe
    batch_size : int
    iou_loss_weight : float
        Weight of the MSE between the IoU head and the actual IoU (0: off).
    train_prompt_encoder : bool
    seed : int
        Seeds the object order, prompt sampling and correction points.
    """

    def __init__(
        self,
        model: SamModel,
        planes: list[Plane],
        store: EmbeddingStore,
        train: list[AnnotatedObject],
        val: list[AnnotatedObject],
        recipe: PromptRecipe,
        *,
        batch_size: int,
        iou_loss_weight: float,
        train_prompt_encoder: bool,
        seed: int,
    ) -> None:
        import torch

        self.model = model
        self.planes = planes
        self.store = store
        self.train = train
        self.val = val
        self.recipe = recipe
        self.batch_size = int(batch_size)
        self.iou_loss_weight = float(iou_loss_weight)
        self.parts = trained_parts(train_prompt_encoder)
        self.rng = np.random.default_rng(seed + 1)
        self.generator = torch.Generator().manual_seed(seed)
        self.decoder = BatchDecoder(model, planes, store, train_prompt_encoder)
        self.shapes = [p.original_size for p in planes]
        self.targets = self._targets()

    def _targets(self) -> TargetCrops:
        """Low-res targets of the training objects, computed once, kept as crops."""
        model = self.model
        targets = TargetCrops(len(self.train), model.low_res_size)
        by_plane: dict[int, list[int]] = {}
        for i, obj in enumerate(self.train):
            by_plane.setdefault(obj.plane, []).append(i)
        for plane, ids in by_plane.items():
            crops = low_res_target_crops(
                [self.train[i] for i in ids],
                self.shapes[plane],
                self.planes[plane].input_size,
                model.img_size,
                model.low_res_size,
            )
            for i, (crop, offset) in zip(ids, crops):
                targets.put(i, crop, offset)
        return targets

    # -- TrainingTask -----------------------------------------------------------------------
    def parameters(self) -> Iterator[torch.nn.Parameter]:
        for part in self.parts:
            yield from getattr(self.model.sam, part).parameters()

    def batches(self, epoch: int) -> Iterator[DecoderBatch]:
        """A pass over the training objects in random order, ``batch_size`` at a time.

        With embeddings on disk, objects of one plane are kept together (few reads).
        Each batch gets one prompt kind of the recipe, drawn at random.
        """
        rng = self.rng
        order = rng.permutation(len(self.train))
        if not self.store.in_memory:
            plane_order = rng.permutation(len(self.planes))
            rank = np.argsort(plane_order)
            order = order[np.argsort(rank[[self.train[i].plane for i in order]], kind="stable")]
        kinds = self.recipe.kinds
        for first in range(0, len(order), self.batch_size):
            ids = order[first : first + self.batch_size]
            objects = [self.train[i] for i in ids]
            kind = kinds[int(rng.integers(len(kinds)))]
            shapes = [self.shapes[o.plane] for o in objects]
            prompts = sample_prompts(objects, kind, self.recipe, rng, shapes)
            yield DecoderBatch(ids, objects, prompts)

    def loss(self, batch: DecoderBatch) -> tuple[torch.Tensor, int]:
        """Dice + BCE (+ IoU-head MSE) of one batch, with the recipe's correction rounds."""
        import torch

        model, decoder = self.model, self.decoder
        target = self.targets.batch(batch.ids, model.device)
        points, boxes = decoder.prompt_tensors(batch.objects, batch.prompts)
        masks = decoder.mask_tensor(batch.objects, batch.prompts)
        logits, iou = decoder(batch.objects, points, boxes, mask_input=masks)
        per_mask = mask_losses(logits, target)
        # Single-mask output for every prompt; best of the three proposals
        # (SAM's ambiguity-aware loss) so multimask prediction is trained too.
        loss = (per_mask[:, 0] + per_mask[:, 1:].min(dim=1).values).mean()
        if self.iou_loss_weight:
            truth = actual_iou(logits.float(), target)
            loss = loss + self.iou_loss_weight * torch.mean((iou.float() - truth) ** 2)
        for _ in range(self.recipe.correction_rounds):
            xy, lab = correction_points(logits[:, 0], target, model.img_size, self.generator)
            if points is None:
                points = (xy, lab)
            else:
                points = (torch.cat([points[0], xy], 1), torch.cat([points[1], lab], 1))
            previous = logits[:, :1].detach().float()
            logits, iou = decoder(batch.objects, points, boxes, mask_input=previous)
            loss = loss + mask_losses(logits[:, :1], target).mean()
            if self.iou_loss_weight:
                truth = actual_iou(logits[:, :1].float(), target)
                loss = loss + self.iou_loss_weight * torch.mean((iou[:, :1].float() - truth) ** 2)
        return loss, len(batch.objects)

    def validate(self) -> dict[str, float]:
        """Mean Dice per prompt kind of the single-mask outputs at full size, and their mean.

        Validation prompts are deterministic (the exact box, one click at the
        object's most interior pixel, or the object shrunk by half of the
        recipe's ``mask_change`` as mask prompt); Dice is
        :func:`napari_seglab.metrics.foreground_dice`.
        Empty without validation objects.
        """
        import torch

        from ...device import autocast
        from ...metrics import foreground_dice

        if not self.val:
            return {}
        model, decoder = self.model, self.decoder
        threshold = float(model.sam.mask_threshold)
        kinds = self.recipe.kinds
        scores: dict[str, float] = {}
        with torch.inference_mode(), autocast(model.device):
            for kind in kinds:
                dices = []
                for start in range(0, len(self.val), self.batch_size):
                    chunk = self.val[start : start + self.batch_size]
                    shapes = [self.shapes[o.plane] for o in chunk]
                    prompts = validation_prompts(chunk, kind, shapes, self.recipe)
                    points, boxes = decoder.prompt_tensors(chunk, prompts)
                    masks = decoder.mask_tensor(chunk, prompts)
                    low, _ = decoder(chunk, points, boxes, mask_input=masks)
                    for obj, logits in zip(chunk, low[:, :1].float()):
                        plane = self.planes[obj.plane]
                        mask = upsample_logits(
                            logits[None],
                            plane.input_size,
                            plane.original_size,
                            model.img_size,
                            threshold,
                        )[0]
                        truth = obj.full_mask(plane.original_size)
                        dices.append(foreground_dice(mask, truth))
                scores[kind] = float(np.mean(dices))
        scores["mean"] = float(np.mean([scores[k] for k in kinds]))
        return scores

    def train_mode(self, training: bool) -> None:
        for part in self.parts:
            getattr(self.model.sam, part).train(training)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{part: state dict}`` of the trained parts (cloned)."""
        sam = self.model.sam
        return {
            part: {k: v.detach().clone() for k, v in getattr(sam, part).state_dict().items()}
            for part in self.parts
        }

    def restore(self, snapshot: dict[str, dict[str, Any]]) -> None:
        apply_decoder_weights(self.model, snapshot, source="<fine-tuning, best epoch>")
