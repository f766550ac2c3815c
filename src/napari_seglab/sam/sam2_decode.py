"""2D prompting with a SAM 2 model: prompt encoder and mask decoder on a cached embedding.

The same steps as ``sam2.SAM2ImagePredictor`` (``set_image`` after the image
encoder, then ``_predict``), written against :class:`~.sam2_model.Sam2Embedding`
so that embeddings come from the plugin's cache:

* the lowest-resolution level gets ``no_mem_embed`` added (the network was
  trained that way on single frames); the two higher levels are the
  ``conv_s0``/``conv_s1`` outputs already stored in the embedding;
* a box is two points with labels 2 and 3 placed before the clicks, and the
  prompt encoder is called with ``boxes=None`` (so a padding point is added),
  as the official predictor does;
* masks are upsampled from the low-resolution logits straight to the plane's
  size (SAM 2 stretches every plane to a square; there is no padding to crop).

:class:`~.prompt.PromptSegmenter` calls :func:`decode_sam2` when its model is
a :class:`~.sam2_model.Sam2Model`; coordinates arrive in SAM's ``(x, y)`` of
the ``img_size`` square frame (:func:`~.frames.to_model_xy` with
``input_size = (img_size, img_size)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .sam2_model import Sam2Embedding, Sam2Model

__all__ = ["LOW_RES_CLAMP", "decode_sam2", "image_features", "upsample_direct"]

#: The official predictor clamps the low-resolution logits it returns to ±32.
LOW_RES_CLAMP = 32.0


def image_features(
    model: Sam2Model, embedding: Sam2Embedding
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(image_embed (1, 256, h, w), [high_res_0, high_res_1])`` on the model's device."""
    net = model.net
    fpn = [t.to(model.device) for t in embedding.backbone_fpn]
    levels = fpn[-net.num_feature_levels :]
    image_embed = levels[-1]
    if net.directly_add_no_mem_embed:
        image_embed = image_embed + net.no_mem_embed.reshape(1, -1, 1, 1)
    return image_embed, levels[:-1]


def decode_sam2(
    model: Sam2Model,
    embedding: Sam2Embedding,
    points_xy: np.ndarray | None,
    labels: np.ndarray | None,
    box_xy: np.ndarray | None,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution logits and predicted IoUs for one prompt.

    Parameters
    ----------
    model : Sam2Model
    embedding : Sam2Embedding
        Of the current plane.
    points_xy : array ``(N, 2)`` or None
        ``(x, y)`` in the ``img_size`` square frame.
    labels : array ``(N,)`` or None
        1 positive, 0 negative.
    box_xy : array ``(4,)`` or None
        ``(x0, y0, x1, y1)`` in the same frame.
    mask_input : tensor ``(1, 1, L, L)`` or None
        Low-resolution logits (``L = img_size // 4``).
    multimask : bool
        Three proposals instead of one.

    Returns
    -------
    low_res : tensor ``(1, K, L, L)`` float32 (not clamped)
    iou : tensor ``(1, K)``
    """
    import torch

    device = model.device
    net = model.net
    coords = lab = None
    if points_xy is not None:
        coords = torch.as_tensor(points_xy, dtype=torch.float, device=device)[None]
        lab = torch.as_tensor(labels, dtype=torch.int, device=device)[None]
    if box_xy is not None:
        box_coords = torch.as_tensor(box_xy, dtype=torch.float, device=device).reshape(1, 2, 2)
        box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=device)
        coords = box_coords if coords is None else torch.cat([box_coords, coords], dim=1)
        lab = box_labels if lab is None else torch.cat([box_labels, lab], dim=1)
    with torch.inference_mode():
        image_embed, high_res = image_features(model, embedding)
        sparse, dense = net.sam_prompt_encoder(
            points=None if coords is None else (coords, lab), boxes=None, masks=mask_input
        )
        low_res, iou, _, _ = net.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=model.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=high_res,
        )
    return low_res.float(), iou.float()


def upsample_direct(
    low_res: torch.Tensor, original_size: tuple[int, int], threshold: float = 0.0
) -> np.ndarray:
    """SAM 2's postprocessing: ``(1, K, L, L)`` logits -> ``(K, Y, X)`` bool masks.

    One bilinear resize to the plane's size (``align_corners=False``), as
    ``SAM2Transforms.postprocess_masks`` without hole filling.
    """
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        up = F.interpolate(
            low_res.float(), tuple(original_size), mode="bilinear", align_corners=False
        )
        return (up[0] > threshold).cpu().numpy()
