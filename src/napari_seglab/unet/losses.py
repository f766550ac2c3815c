"""Dice + cross-entropy loss that skips unannotated pixels.

MONAI's ``DiceCELoss`` has no ignore index; ``DiceLoss`` has one and torch's
``CrossEntropyLoss`` has one, so :class:`IgnoreDiceCELoss` combines those two.
Pixels whose target equals ``ignore_index`` (unannotated pixels of sparse
labels, and padding) contribute to neither term.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss


class IgnoreDiceCELoss(torch.nn.Module):
    """``DiceLoss(softmax) + CrossEntropy`` with an ignore index.

    Parameters
    ----------
    num_classes : int
        Output channels of the network.
    ignore_index : int
        Target value to skip; :mod:`napari_seglab.unet.data` uses ``num_classes``.

    Call with logits ``(B, K, *spatial)`` and targets ``(B, 1, *spatial)`` of
    class indices (any dtype); returns a scalar.
    """

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, ignore_index=self.ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        dice = self.dice(logits, target)
        labels = target[:, 0]
        valid = labels != self.ignore_index
        ce = torch.nn.functional.cross_entropy(
            logits, labels.masked_fill(~valid, 0), reduction="none"
        )
        ce = (ce * valid).sum() / valid.sum().clamp_min(1)
        return dice + ce
