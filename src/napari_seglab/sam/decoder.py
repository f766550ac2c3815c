"""A faster inference path through SAM's mask decoder, with the same weights.

SAM's two-way transformer lets a handful of prompt tokens (``M`` ≈ 7) and the
``N = 64 × 64`` image tokens attend to each other, then upscales the image
tokens into mask logits. :func:`decode` computes exactly the function of
``MaskDecoder.forward`` (up to float rounding) with far less work and memory
traffic:

1. **Re-association.** ``q (X Wkᵀ)ᵀ = (q Wk) Xᵀ`` and ``softmax(·) (X Wvᵀ) =
   (softmax(·) X) Wvᵀ`` move the projections onto the few tokens: a
   cross-attention costs ``N × C × H × M`` instead of ``2 × N × C × D``. Key
   biases of token→image attention add a constant per query row and cancel in
   the softmax.
2. **Prompt-independent work is done once per image** (:func:`prepare_image`):
   the first layer's image projections, and the image tokens through the
   second layer's projections and through the first upscaling convolution. A
   layer norm is a per-row affine map, so the second layer's projections
   (:func:`_second_layer_projections`) and the first upscaling convolution of
   the transformer's output (:func:`_first_upscaling`) are those prepared
   products plus narrow low-rank terms from the image→token attentions.
3. **Only what is read is computed.** The final token→image attention runs for
   the output tokens that are returned, not for the prompt tokens (SAM
   discards their outputs); each proposal's full logits are laid out only when
   asked for (:class:`LowResMasks`).
4. **Row blocks.** Every step on the image side is per token except the
   softmaxes over all tokens, so the image tokens are processed in blocks of
   :data:`BLOCK_ROWS` rows between those softmaxes: the large intermediates
   (e.g. the ``(16 N, 32)`` upscaled features) never exist whole. This bounds
   the working memory; it did not change the time on the development machine.

Softmaxes over the few tokens run along a middle axis of an ``(H, M, N)``
array, which is an order of magnitude faster than along a short last axis.

Training (decoder fine-tuning) keeps using the ``segment_anything`` modules,
whose weights this reads directly, so there is nothing to keep in sync. The
module layout it reads is that of the segment-anything release in
:data:`.compat.VERIFIED_VERSION`.

Modules: :mod:`.decoder_prepare` (the per-image work, step 2),
:mod:`.decoder_masks` (upscaling and :class:`~.decoder_masks.LowResMasks`,
steps 2-3) and this one (the prompt tokens through the transformer, step 1
and 4, and :func:`decode`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .decoder_masks import LowResMasks, first_upscaling, upscale, upscaling_right
from .decoder_prepare import (
    PreparedImage,
    attention_heads,
    prepare_image,
    second_layer_projections,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

__all__ = ["BLOCK_ROWS", "LowResMasks", "PreparedImage", "decode", "prepare_image"]

#: Image tokens per block in the blocked passes (1 MiB per ``(rows, 256)`` float32 block).
BLOCK_ROWS = 1024


# -- token side ------------------------------------------------------------------------------
def _self_attention(
    layer: TwoWayAttentionBlock, queries: torch.Tensor, query_pe: torch.Tensor
) -> torch.Tensor:
    """Self-attention of the ``(M, C)`` tokens and ``norm1``, as in ``TwoWayAttentionBlock``."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries[None], k=queries[None], v=queries[None])[0]
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q[None], k=q[None], v=queries[None])[0]
    return layer.norm1(queries)


def _token_queries(attn: Attention, queries: torch.Tensor) -> torch.Tensor:
    """Scaled per-head query projection of ``(M, C)`` tokens -> ``(H, M, d)``."""
    import torch.nn.functional as F

    heads, per_head = attention_heads(attn)
    q = F.linear(queries, attn.q_proj.weight, attn.q_proj.bias) * (1.0 / math.sqrt(per_head))
    return q.view(-1, heads, per_head).transpose(0, 1)


def _folded_keys(attn: Attention, queries: torch.Tensor) -> torch.Tensor:
    """Token→image queries with the key projection folded in, ``(H*M, C)``.

    ``logits = folded @ imageᵀ`` are the scaled attention logits (the key bias
    cancels in the softmax).
    """
    import torch

    heads, per_head = attention_heads(attn)
    q = _token_queries(attn, queries)  # (H, M, d)
    c = attn.k_proj.weight.shape[1]
    return torch.bmm(q, attn.k_proj.weight.view(heads, per_head, c)).view(-1, c)


def _token_values(attn: Attention, context: torch.Tensor) -> torch.Tensor:
    """``(H*M, C)`` softmax-weighted image rows -> attention output ``(M, C)``.

    ``(softmax X) Wvᵀ + bv`` (rows of the softmax sum to one), then the output projection.
    """
    import torch

    heads, per_head = attention_heads(attn)
    c = context.shape[1]
    values = torch.baddbmm(
        attn.v_proj.bias.view(heads, 1, per_head),
        context.view(heads, -1, c),
        attn.v_proj.weight.view(heads, per_head, c).transpose(1, 2),
    )  # (H, M, d)
    return _merge_heads(attn, values)


def _merge_heads(attn: Attention, per_head: torch.Tensor) -> torch.Tensor:
    """``(H, M, d)`` per-head outputs -> ``(M, C)`` through the output projection."""
    import torch.nn.functional as F

    m = per_head.shape[1]
    merged = per_head.transpose(0, 1).reshape(m, -1)
    return F.linear(merged, attn.out_proj.weight, attn.out_proj.bias)


def _token_keys_values(
    attn: Attention, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled per-head keys ``(H, M, d)`` and values projected to the output ``(H*M, C)``.

    The image→token update is ``Σ_h softmax_h v_h Wo_hᵀ``: the output
    projection moves onto the tokens (its bias is added separately).
    """
    import torch
    import torch.nn.functional as F

    heads, per_head = attention_heads(attn)
    m, c = keys.shape
    k = F.linear(keys, attn.k_proj.weight, attn.k_proj.bias) * (1.0 / math.sqrt(per_head))
    k = k.view(m, heads, per_head).transpose(0, 1)  # (H, M, d)
    v = F.linear(values, attn.v_proj.weight, attn.v_proj.bias).view(m, heads, per_head)
    out_weight = attn.out_proj.weight.view(c, heads, per_head).permute(1, 2, 0)  # (H, d, C)
    return k, torch.bmm(v.transpose(0, 1), out_weight).reshape(heads * m, c)


def _softmax_over_tokens(logits: torch.Tensor, heads: int) -> torch.Tensor:
    """``(H*M, B)`` image→token logits -> weights, softmax over the ``M`` tokens of each head."""
    import torch

    rows, cols = logits.shape
    return torch.softmax(logits.view(heads, rows // heads, cols), dim=1).view(rows, cols)


def _blocked_product(
    weights: torch.Tensor, blocks_of_rows: list[torch.Tensor], blocks: list[slice]
) -> torch.Tensor:
    """``weights @ image`` for ``weights`` ``(R, N)`` and the image as row blocks -> ``(R, C)``."""
    import torch

    product = torch.mm(weights[:, blocks[0]], blocks_of_rows[0])
    for rows, block in zip(blocks[1:], blocks_of_rows[1:]):
        product.addmm_(weights[:, rows], block)
    return product


# -- the decoder -----------------------------------------------------------------------------
def decode(
    decoder: MaskDecoder, prepared: PreparedImage, sparse: torch.Tensor, multimask: bool
) -> tuple[LowResMasks, torch.Tensor]:
    """Same outputs as ``MaskDecoder.forward`` for one prompt, computed faster.

    Parameters
    ----------
    decoder : segment_anything.modeling.MaskDecoder
    prepared : PreparedImage
        From :func:`prepare_image` for this decoder, embedding and dense prompt.
    sparse : ``(1, P, C)``
        Prompt tokens from the prompt encoder.
    multimask : bool
        Three proposals instead of one.

    Returns
    -------
    low_res_masks : LowResMasks
        ``(1, K, 4h, 4w)`` logits (:meth:`LowResMasks.all`); the best-scoring
        proposal is computed, the others on first access.
    iou_predictions : ``(1, K)``
    """
    import torch

    layers = decoder.transformer.layers
    final = decoder.transformer.final_attn_token_to_image
    n, c = prepared.first_residual.shape
    blocks = [slice(start, min(start + BLOCK_ROWS, n)) for start in range(0, n, BLOCK_ROWS)]
    pe = prepared.pe
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    query_pe = torch.cat([output_tokens, sparse[0]], dim=0)  # (M, C)
    # Only the IoU token and the returned mask tokens are read after the transformer.
    offset = 1 if multimask else 0
    count = decoder.num_mask_tokens - 1 if multimask else 1
    read = [0, *range(1 + offset, 1 + offset + count)]

    # The first layer meets the image only through the prepared projections.
    layer = layers[0]
    queries = _self_attention(layer, query_pe, query_pe)
    t2i = layer.cross_attn_token_to_image
    weights = torch.softmax(
        torch.bmm(_token_queries(t2i, queries + query_pe), prepared.first_keys), dim=-1
    )  # (H, M, N)
    queries = layer.norm2(queries + _merge_heads(t2i, torch.bmm(weights, prepared.first_values)))
    queries = layer.norm3(queries + layer.mlp(queries))
    i2t = layer.cross_attn_image_to_token
    heads, per_head = attention_heads(i2t)
    keys, projected = _token_keys_values(i2t, queries + query_pe, queries)
    first_weights = _softmax_over_tokens(
        torch.bmm(keys, prepared.first_queries).view(-1, n), heads
    )

    # Layer j's image→token update, one block of rows at a time, together with the logits
    # of the next token→image attention (which needs the tokens' self-attention first).
    # After the first layer, the second layer's projections come from the prepared fold.
    states: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    projections = [projected]
    image: list[torch.Tensor] = []  # the current image tokens, one tensor per block
    # Layer j's image→token weights, or its queries with the query projection folded in.
    given_weights: torch.Tensor | None = first_weights
    folded_q = query_bias = first_weights
    for index, layer in enumerate(layers):
        last = index + 1 == len(layers)
        use_fold = index == 0 and not last and prepared.second is not None
        if last:
            consumer = final
            folded = _folded_keys(final, queries[read] + query_pe[read])
        else:
            queries = _self_attention(layers[index + 1], queries, query_pe)
            consumer = layers[index + 1].cross_attn_token_to_image
            folded = None if use_fold else _folded_keys(consumer, queries + query_pe)
        norm = layer.norm4
        updated = []
        mean = first_weights.new_empty(n, 1)
        rstd = torch.empty_like(mean)
        weights = given_weights if given_weights is not None else torch.empty_like(first_weights)
        logits = None if folded is None else first_weights.new_empty(folded.shape[0], n)
        for number, rows in enumerate(blocks):
            if index == 0:
                z = torch.addmm(prepared.first_residual[rows], weights[:, rows].T, projected)
            else:
                block = image[number]  # not read again: updated in place
                if given_weights is None:
                    block_logits = torch.addmm(query_bias, folded_q, (block + pe[rows]).T)
                    weights[:, rows] = _softmax_over_tokens(block_logits, heads)
                z = block.addmm_(weights[:, rows].T, projected).add_(i2t.out_proj.bias)
            out, mean[rows], rstd[rows] = torch.native_layer_norm(
                z, (c,), norm.weight, norm.bias, norm.eps
            )
            updated.append(out)
            if logits is not None:
                logits[:, rows] = folded @ (out + pe[rows]).T
        states.append((weights, mean, rstd))
        image = updated
        after = None if last else layers[index + 1]
        if use_fold:
            image_keys, image_values, image_queries = second_layer_projections(
                prepared.second, weights, projected, mean, rstd, consumer.num_heads
            )
            q = _token_queries(consumer, queries + query_pe)
            attention = torch.softmax(torch.bmm(q, image_keys), dim=-1)  # (H, M, N)
            attended = _merge_heads(consumer, torch.bmm(attention, image_values.transpose(1, 2)))
        else:
            context = _blocked_product(torch.softmax(logits, dim=-1), image, blocks)
            if last:
                read_out = decoder.transformer.norm_final_attn(
                    queries[read] + _token_values(final, context)
                )
                break
            attended = _token_values(consumer, context)
        queries = after.norm2(queries + attended)
        queries = after.norm3(queries + after.mlp(queries))
        i2t = after.cross_attn_image_to_token
        heads, per_head = attention_heads(i2t)
        keys, projected = _token_keys_values(i2t, queries + query_pe, queries)
        projections.append(projected)
        if use_fold:
            logits = torch.bmm(keys, image_queries).view(-1, n)
            given_weights = _softmax_over_tokens(logits, heads)
        else:
            given_weights = None
            # X Wq_h^T k_h^T + bq_h k_h^T: the query projection moves onto the tokens.
            folded_q = torch.bmm(keys, i2t.q_proj.weight.view(heads, per_head, c)).view(-1, c)
            query_bias = (i2t.q_proj.bias.view(heads, 1, per_head) * keys).sum(-1).view(-1, 1)

    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[offset + i](read_out[1 + i]) for i in range(count)]
    )  # (K, c'')
    iou = decoder.iou_prediction_head(read_out[0:1])[:, offset : offset + count]

    # Upscaling and the hypernetwork product, block by block.
    right = upscaling_right(decoder, prepared, projections)
    features = [
        upscale(decoder.output_upscaling, first_upscaling(prepared, rows, states, right))
        for rows in blocks
    ]
    best = int(iou[0].argmax())
    return LowResMasks(features, hyper, prepared.grid, first=best), iou
