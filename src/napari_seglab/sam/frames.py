"""The one conversion between an image's frame and SAM's model frames.

napari speaks ``(row, col)`` pixels of the original plane; SAM works in
``(x, y)`` of the *input frame* (the plane resized so that its long side is
``img_size``, then padded at the bottom and right to ``img_size`` square) and
produces masks in the *low-resolution frame* (``low_res`` square logits over
the padded input). Prompting (:mod:`.prompt`) and fine-tuning
(:mod:`.finetune`) both convert through these functions, so the two cannot
disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "MASK_PROMPT_LOGIT",
    "input_size",
    "mask_to_logits",
    "to_model_xy",
    "upsample_logits",
]

#: Logit magnitude used when a binary mask becomes a mask prompt (logit of 0.999).
MASK_PROMPT_LOGIT = 6.9


def input_size(shape: tuple[int, int], img_size: int) -> tuple[int, int]:
    """``(Y, X)`` of a plane of ``shape`` resized so that its long side is ``img_size``.

    The arithmetic of ``segment_anything``'s ``ResizeLongestSide.get_preprocess_shape``
    (a test checks that they agree).
    """
    height, width = int(shape[0]), int(shape[1])
    scale = img_size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_model_xy(
    rows_cols: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """``(..., 2)`` ``(row, col)`` pixels -> SAM ``(x, y)`` in the resized input frame.

    Parameters
    ----------
    rows_cols : array ``(..., 2)``
        Points ``(row, col)``; a box ``(row0, col0, row1, col1)`` is two points.
    original_size, input_size : (int, int)
        ``(Y, X)`` of the plane and of the resized plane.

    Returns
    -------
    array ``(..., 2)`` float64
    """
    (old_h, old_w), (new_h, new_w) = original_size, input_size
    xy = np.asarray(rows_cols, dtype=np.float64)[..., ::-1].copy()
    xy[..., 0] *= new_w / old_w
    xy[..., 1] *= new_h / old_h
    return xy


def upsample_logits(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
    threshold: float = 0.0,
) -> np.ndarray:
    """SAM's mask postprocessing: low-res logits -> full-size masks of the plane.

    Resize to the padded input (bilinear), crop the padding, resize to the
    plane (bilinear) and threshold, as ``Sam.postprocess_masks`` does.

    Parameters
    ----------
    low_res : tensor ``(1, K, L, L)``
    input_size, original_size : (int, int)
        ``(Y, X)`` of the resized and of the original plane.
    img_size : int
        Side of the padded input frame.
    threshold : float
        Logit above which a pixel is in the mask.

    Returns
    -------
    array ``(K, Y, X)`` bool
    """
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        low = low_res.float()
        up = F.interpolate(low, (img_size, img_size), mode="bilinear", align_corners=False)
        up = up[..., : input_size[0], : input_size[1]]
        up = F.interpolate(up, tuple(original_size), mode="bilinear", align_corners=False)
        return (up[0] > threshold).cpu().numpy()


def mask_to_logits(
    mask: np.ndarray, input_size: tuple[int, int], img_size: int, low_res: int
) -> np.ndarray:
    """A full-size mask ``(Y, X)`` (bool or labels > 0) as low-res prompt logits ``(L, L)``.

    The mask is resized like the image, padded, averaged down to ``low_res``
    and mapped to ``±MASK_PROMPT_LOGIT``.
    """
    import torch
    import torch.nn.functional as F

    in_h, in_w = input_size
    with torch.inference_mode():
        m = torch.as_tensor(np.asarray(mask) > 0, dtype=torch.float32)[None, None]
        m = F.interpolate(m, (in_h, in_w), mode="bilinear", align_corners=False)
        m = F.pad(m, (0, img_size - in_w, 0, img_size - in_h))
        m = F.interpolate(m, (low_res, low_res), mode="area")
        p = m.clamp(1e-3, 1 - 1e-3)
        logits = torch.log(p / (1 - p)).clamp(-MASK_PROMPT_LOGIT, MASK_PROMPT_LOGIT)
    return logits[0, 0].numpy()
