"""SAM's prompt encoder and mask decoder on a batch of objects from several planes.

segment_anything's ``MaskDecoder.predict_masks`` decodes every prompt against
one image embedding; fine-tuning draws objects from many planes at once, so
:func:`batched_predict_masks` decodes prompt ``i`` against embedding ``i``
with the decoder's own modules (gradients flow as usual), and
:class:`BatchDecoder` feeds it from the embedding store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..frames import mask_to_logits, to_model_xy
from .data import AnnotatedObject, Plane
from .prompts import PromptBatch
from .store import EmbeddingStore

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model import SamModel

__all__ = ["BatchDecoder", "batched_predict_masks"]


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


class BatchDecoder:
    """Runs SAM's prompt encoder and mask decoder on a batch of objects from several planes."""

    def __init__(
        self,
        model: SamModel,
        planes: list[Plane],
        store: EmbeddingStore,
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

    def mask_tensor(
        self, objects: list[AnnotatedObject], prompts: PromptBatch
    ) -> torch.Tensor | None:
        """Mask prompts as low-res logits ``(B, 1, L, L)`` (None without mask prompts).

        Each full-size mask goes through :func:`..frames.mask_to_logits` with its
        plane's geometry, as :meth:`PromptSegmenter.predict` converts a mask input.
        """
        import torch

        if prompts.masks is None:
            return None
        model = self.model
        logits = [
            mask_to_logits(
                mask, self.planes[o.plane].input_size, model.img_size, model.low_res_size
            )
            for o, mask in zip(objects, prompts.masks)
        ]
        return torch.as_tensor(np.stack(logits)[:, None], device=model.device)

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
