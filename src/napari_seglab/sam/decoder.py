"""A faster inference path through SAM's mask decoder, with the same weights.

SAM's two-way transformer lets a handful of prompt tokens (``M`` ≈ 7) and the
``N = 64 × 64`` image tokens attend to each other. The reference code projects
all ``N`` image tokens to queries/keys/values (``N × C × D`` multiply-adds per
projection) although they only ever meet ``M`` tokens. Re-associating the
products, e.g. ``q (X Wkᵀ)ᵀ = (q Wk) Xᵀ`` and ``softmax(·) (X Wvᵀ) =
(softmax(·) X) Wvᵀ``, moves the projections onto the few tokens: each
cross-attention costs ``N × C × H × M`` instead of ``2 × N × C × D`` — about
2.3× fewer operations for a click, exactly the same function up to float
rounding. (Key biases of token→image attention add a constant per query row
and cancel in the softmax.)

:func:`decode` is used by :class:`~.prompt.PromptSegmenter` for inference;
training (decoder fine-tuning) keeps using the ``segment_anything`` modules,
whose weights this reads directly, so there is nothing to keep in sync.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import Attention

__all__ = ["decode"]


def _tokens_to_image(
    attn: Attention, queries: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
) -> torch.Tensor:
    """Attention of ``M`` tokens ``(M, C)`` over ``N`` image tokens ``(N, C)`` -> ``(M, C)``."""
    import torch
    import torch.nn.functional as F

    heads, inner = attn.num_heads, attn.internal_dim
    per_head = inner // heads
    m, c = queries.shape
    q = F.linear(queries, attn.q_proj.weight, attn.q_proj.bias)  # (M, D)
    q = q.view(m, heads, per_head).transpose(0, 1)  # (H, M, d)
    # (q_h Wk_h) X^T: the key projection moves onto the queries; the key bias cancels.
    folded = torch.bmm(q, attn.k_proj.weight.view(heads, per_head, c))  # (H, M, C)
    logits = folded.reshape(heads * m, c) @ image_keys.T  # (H*M, N)
    weights = torch.softmax(logits * (1.0 / math.sqrt(per_head)), dim=-1)
    context = (weights @ image_values).view(heads, m, c)  # (H, M, C)
    # (softmax X) Wv^T + bv  (rows of the softmax sum to one).
    values = torch.bmm(context, attn.v_proj.weight.view(heads, per_head, c).transpose(1, 2))
    values = values + attn.v_proj.bias.view(heads, 1, per_head)  # (H, M, d)
    out = values.transpose(0, 1).reshape(m, inner)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def _image_to_tokens(
    attn: Attention, image_queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Attention of ``N`` image tokens ``(N, C)`` over ``M`` tokens ``(M, C)`` -> ``(N, C)``."""
    import torch
    import torch.nn.functional as F

    heads, inner = attn.num_heads, attn.internal_dim
    per_head = inner // heads
    m, c = keys.shape
    n = image_queries.shape[0]
    k = F.linear(keys, attn.k_proj.weight, attn.k_proj.bias).view(m, heads, per_head)
    k = k.transpose(0, 1)  # (H, M, d)
    v = F.linear(values, attn.v_proj.weight, attn.v_proj.bias).view(m, heads, per_head)
    v = v.transpose(0, 1)  # (H, M, d)
    # X Wq_h^T k_h^T + bq_h k_h^T: the query projection moves onto the keys.
    folded = torch.bmm(k, attn.q_proj.weight.view(heads, per_head, c))  # (H, M, C)
    bias = (attn.q_proj.bias.view(heads, 1, per_head) * k).sum(-1)  # (H, M)
    logits = torch.addmm(bias.reshape(1, heads * m), image_queries, folded.reshape(-1, c).T)
    weights = torch.softmax(logits.view(n, heads, m) * (1.0 / math.sqrt(per_head)), dim=-1)
    # softmax_h v_h Wo_h^T summed over heads: the output projection moves onto the tokens.
    out_weight = attn.out_proj.weight.view(c, heads, per_head).permute(1, 2, 0)  # (H, d, C)
    projected = torch.bmm(v, out_weight).reshape(heads * m, c)  # (H*M, C)
    return torch.addmm(attn.out_proj.bias, weights.view(n, heads * m), projected)


def _upscale_and_project(
    upscaling: torch.nn.Sequential, image: torch.Tensor, hyper: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """SAM's ``output_upscaling`` followed by the hypernetwork product, as plain GEMMs.

    Both transposed convolutions have kernel 2 and stride 2, so each is a
    per-pixel linear map to 2x2 sub-pixels. Keeping the layout
    ``(pixel, sub-pixel, channel)`` makes them matrix products, the
    ``LayerNorm2d`` a plain layer norm over the last axis, and leaves only the
    ``K`` output masks to be rearranged into image order.

    Returns ``(1, K, 4h, 4w)`` mask logits.
    """
    import torch
    import torch.nn.functional as F

    conv1, norm, act1, conv2, act2 = upscaling
    n, c = image.shape
    mid = conv1.weight.shape[1]
    out = conv2.weight.shape[1]
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * mid)  # (C, [dy, dx, o])
    x = torch.addmm(conv1.bias.repeat(4), image, w1).view(n * 4, mid)
    x = act1(F.layer_norm(x, (mid,), norm.weight, norm.bias, norm.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(mid, 4 * out)
    x = act2(torch.addmm(conv2.bias.repeat(4), x, w2)).view(n * 16, out)
    k = hyper.shape[0]
    masks = (x @ hyper.T).view(h, w, 2, 2, 2, 2, k)  # (y, x, dy1, dx1, dy2, dx2, K)
    masks = masks.permute(6, 0, 2, 4, 1, 3, 5).reshape(1, k, 4 * h, 4 * w)
    return masks


def decode(
    decoder: MaskDecoder,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask: bool,
    *,
    image_tokens: torch.Tensor | None = None,
    pe_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same outputs as ``MaskDecoder.forward`` for one prompt, computed faster.

    Parameters
    ----------
    decoder : segment_anything.modeling.MaskDecoder
    image_embedding : ``(1, C, h, w)``
    image_pe : ``(1, C, h, w)``
    sparse : ``(1, P, C)`` prompt tokens
    dense : ``(1, C, h, w)`` dense prompt embedding
    multimask : bool
    image_tokens, pe_tokens : ``(h*w, C)``, optional
        ``image_embedding`` and ``image_pe`` already laid out as contiguous
        token rows (callers that prompt the same image repeatedly keep them);
        ``dense`` is still added.

    Returns
    -------
    low_res_masks : ``(1, K, 4h, 4w)``
    iou_predictions : ``(1, K)``
    """
    import torch
    import torch.nn.functional as F

    transformer = decoder.transformer
    c, h, w = image_embedding.shape[1:]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens, sparse[0]], dim=0)  # (M, C)
    if image_tokens is None:
        image_tokens = image_embedding[0].flatten(1).T.contiguous()
    image = image_tokens + dense[0].flatten(1).T  # (N, C), a new tensor
    pe = image_pe[0].flatten(1).T.contiguous() if pe_tokens is None else pe_tokens

    queries, query_pe = tokens, tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries[None], k=queries[None], v=queries[None])[0]
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q[None], k=q[None], v=queries[None])[0]
        queries = layer.norm1(queries)
        image_keys = image + pe
        attended = _tokens_to_image(
            layer.cross_attn_token_to_image, queries + query_pe, image_keys, image
        )
        queries = layer.norm2(queries + attended)
        queries = layer.norm3(queries + layer.mlp(queries))
        update = _image_to_tokens(
            layer.cross_attn_image_to_token, image_keys, queries + query_pe, queries
        )
        image = F.layer_norm(
            image + update, (c,), layer.norm4.weight, layer.norm4.bias, layer.norm4.eps
        )
    attended = _tokens_to_image(
        transformer.final_attn_token_to_image, queries + query_pe, image + pe, image
    )
    queries = transformer.norm_final_attn(queries + attended)

    first = 1 if multimask else 0
    count = decoder.num_mask_tokens - 1 if multimask else 1
    mask_tokens = queries[1 + first : 1 + first + count]
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[first + i](mask_tokens[i]) for i in range(count)]
    )  # (K, C/8)
    masks = _upscale_and_project(decoder.output_upscaling, image, hyper, h, w)
    iou = decoder.iou_prediction_head(queries[0:1])[:, first : first + count]
    return masks, iou
