"""Losses of decoder fine-tuning, and the correction clicks drawn from a prediction's errors.

All work on SAM's low-resolution logits ``(B, K, L, L)`` (``K`` mask tokens)
and targets ``(B, 1, L, L)`` with values in ``[0, 1]``. The soft Dice here is
a differentiable training loss; the Dice reported for validation is
:func:`napari_seglab.metrics.foreground_dice` of full-size masks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["actual_iou", "correction_points", "mask_losses"]


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each mask ``logits > 0`` with ``target > 0.5``, ``(B, K)`` (no gradient)."""
    pred = logits.detach() > 0
    truth = (target > 0.5).expand_as(pred)
    inter = (pred & truth).sum((-2, -1)).float()
    union = (pred | truth).sum((-2, -1)).float()
    return inter / union.clamp(min=1.0)


def correction_points(
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
