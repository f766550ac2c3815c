"""SAM's mask decoder for a batch of single-point prompts on one image (segment everything).

The same re-associated computation as :func:`.decoder.decode` (see there for the
algebra), with a leading batch axis over prompts and no row blocks: the
image-side work of the first layer is prepared once per image
(:func:`.decoder_prepare.prepare_image`), each prompt then costs a few
GEMMs of width ``H·M`` (heads × tokens) instead of the full-width projections
that ``MaskDecoder.forward`` repeats for every prompt over a copy of the
embedding. The transformer and the IoU head run first (:func:`decode_tokens`);
the upscaling, the expensive half, runs only for the prompts and proposals a
caller still wants (:func:`decode_masks`), e.g. those whose predicted IoU
passed a filter.

Shapes: ``B`` prompts, ``M`` tokens per prompt (output tokens + prompt
tokens), ``H`` heads of width ``d``, ``N = h·w`` image tokens, ``C`` channels,
``K`` returned proposals (3 with ``multimask``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .decoder_prepare import PreparedImage, attention_heads

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

__all__ = ["TokenState", "decode_masks", "decode_tokens"]


@dataclass
class TokenState:
    """What :func:`decode_tokens` keeps for :func:`decode_masks`.

    Attributes
    ----------
    iou : ``(B, K)``
        Predicted IoU of each returned proposal.
    hyper : ``(B, K, c'')``
        Hypernetwork outputs of the returned mask tokens.
    states : list of (weights ``(B, H*M, N)``, mean ``(B, N, 1)``, rstd ``(B, N, 1)``)
        Per layer: image→token attention weights and the row statistics of its ``norm4``.
    projections : list of ``(B, H*M, C)``
        Per layer: the image→token values projected to the output.
    """

    iou: torch.Tensor
    hyper: torch.Tensor
    states: list
    projections: list


def _self_attention(
    layer: TwoWayAttentionBlock, queries: torch.Tensor, query_pe: torch.Tensor
) -> torch.Tensor:
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    return layer.norm1(queries)


def _queries(attn: Attention, tokens: torch.Tensor) -> torch.Tensor:
    """Scaled per-head query projection ``(B, M, C)`` -> ``(B, H, M, d)``."""
    import torch.nn.functional as F

    heads, per_head = attention_heads(attn)
    q = F.linear(tokens, attn.q_proj.weight, attn.q_proj.bias) * (1.0 / math.sqrt(per_head))
    return q.view(q.shape[0], q.shape[1], heads, per_head).transpose(1, 2)


def _head_major(per_head: torch.Tensor) -> torch.Tensor:
    """``(B, H, M, d)`` -> ``(H, B*M, d)`` contiguous."""
    b, h, m, d = per_head.shape
    return per_head.transpose(0, 1).reshape(h, b * m, d)


def _merge(attn: Attention, per_head: torch.Tensor) -> torch.Tensor:
    """``(B, H, M, d)`` -> ``(B, M, C)`` through the output projection."""
    import torch.nn.functional as F

    b, _, m, _ = per_head.shape
    merged = per_head.transpose(1, 2).reshape(b, m, -1)
    return F.linear(merged, attn.out_proj.weight, attn.out_proj.bias)


def _keys_values(
    attn: Attention, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image→token attention on the token side: keys ``(B, H, M, d)``, values ``(B, H*M, C)``."""
    import torch
    import torch.nn.functional as F

    heads, per_head = attention_heads(attn)
    b, m, c = keys.shape
    k = F.linear(keys, attn.k_proj.weight, attn.k_proj.bias) * (1.0 / math.sqrt(per_head))
    k = k.view(b, m, heads, per_head).transpose(1, 2)
    v = F.linear(values, attn.v_proj.weight, attn.v_proj.bias).view(b, m, heads, per_head)
    out_weight = attn.out_proj.weight.view(c, heads, per_head).permute(1, 2, 0)  # (H, d, C)
    projected = torch.matmul(v.transpose(1, 2), out_weight)  # (B, H, M, C)
    return k, projected.reshape(b, heads * m, c)


def _image_to_token_weights(keys: torch.Tensor, image_queries: torch.Tensor) -> torch.Tensor:
    """Softmax over the ``M`` tokens of ``keys @ image_queries`` -> ``(B, H*M, N)``."""
    import torch

    weights = torch.softmax(torch.matmul(keys, image_queries), dim=2)  # (B, H, M, N)
    b, h, m, n = weights.shape
    return weights.reshape(b, h * m, n)


def _update_image(
    image: torch.Tensor, weights: torch.Tensor, projected: torch.Tensor, norm, bias=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``norm(image + weightsᵀ projected [+ bias])`` with its row mean and rstd ``(B, N, 1)``."""
    import torch

    z = torch.baddbmm(image, weights.transpose(1, 2), projected)
    if bias is not None:
        z += bias
    c = z.shape[-1]
    return torch.native_layer_norm(z, (c,), norm.weight, norm.bias, norm.eps)


def _folded_projections(
    prepared: PreparedImage,
    weights: torch.Tensor,
    projected: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second layer's image keys, values, queries ``(B, H, d, N)`` from the prepared fold.

    The batched form of :func:`.decoder_prepare.second_layer_projections`.
    """
    import torch

    fold = prepared.second
    b = weights.shape[0]
    scale = rstd.transpose(1, 2)  # (B, 1, N)
    left = torch.cat([weights * scale, -scale * mean.transpose(1, 2)], dim=1)
    right = torch.cat([projected @ fold.through, fold.column_sums.expand(b, -1, -1)], dim=1)
    right = right.transpose(1, 2)  # (B, 3D, HM + 1)
    inner = fold.base.shape[0] // 3
    out = []
    for part in range(3):  # keys, values, queries: each contiguous (B, D, N)
        rows = slice(part * inner, (part + 1) * inner)
        projected_part = torch.addcmul(fold.shift[rows], fold.base[rows], scale)
        projected_part.baddbmm_(right[:, rows], left)
        out.append(projected_part.view(b, heads, -1, projected_part.shape[-1]))
    return out[0], out[1], out[2]


def _image_projections(
    t2i: Attention, i2t: Attention, image: torch.Tensor, pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A third or later layer's image keys, values, queries ``(B, H, d, N)``, directly."""
    import torch.nn.functional as F

    b, n, _ = image.shape
    heads = t2i.num_heads

    def per_head(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(b, heads, -1, n)

    keyed = image + pe
    keys = per_head(F.linear(keyed, t2i.k_proj.weight))  # the key bias cancels
    values = per_head(F.linear(image, t2i.v_proj.weight, t2i.v_proj.bias))
    queries = per_head(F.linear(keyed, i2t.q_proj.weight, i2t.q_proj.bias))
    return keys, values, queries


def decode_tokens(
    decoder: MaskDecoder, prepared: PreparedImage, sparse: torch.Tensor, multimask: bool = True
) -> TokenState:
    """The decoder's transformer and IoU head for ``B`` prompts on one prepared image.

    Parameters
    ----------
    decoder : segment_anything.modeling.MaskDecoder
    prepared : PreparedImage
        :func:`~.decoder_prepare.prepare_image` of this decoder and embedding,
        with the no-mask dense prompt.
    sparse : ``(B, P, C)``
        Prompt tokens from the prompt encoder.
    multimask : bool
        Three proposals per prompt instead of one.
    """
    import torch

    layers = decoder.transformer.layers
    final = decoder.transformer.final_attn_token_to_image
    b = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    query_pe = torch.cat([output_tokens.expand(b, -1, -1), sparse], dim=1)  # (B, M, C)
    offset = 1 if multimask else 0
    count = decoder.num_mask_tokens - 1 if multimask else 1
    read = [0, *range(1 + offset, 1 + offset + count)]

    first = layers[0]
    queries = _self_attention(first, query_pe, query_pe)
    t2i = first.cross_attn_token_to_image
    m = query_pe.shape[1]
    # The prepared per-head image tensors (H, d, N) are shared by all prompts: (H, B*M, .)
    # products read them once instead of broadcasting a copy per prompt.
    q = _head_major(_queries(t2i, queries + query_pe))
    weights = torch.softmax(torch.bmm(q, prepared.first_keys), dim=-1)  # (H, B*M, N)
    attended = torch.bmm(weights, prepared.first_values).view(-1, b, m, q.shape[-1])
    queries = first.norm2(queries + _merge(t2i, attended.transpose(0, 1)))
    queries = first.norm3(queries + first.mlp(queries))
    i2t = first.cross_attn_image_to_token
    keys, projected = _keys_values(i2t, queries + query_pe, queries)
    logits = torch.bmm(_head_major(keys), prepared.first_queries).view(-1, b, m, weights.shape[-1])
    weights = torch.softmax(logits, dim=2).transpose(0, 1).reshape(b, -1, logits.shape[-1])
    del logits
    image, mean, rstd = _update_image(
        prepared.first_residual.expand(b, -1, -1), weights, projected, first.norm4
    )
    states, projections = [(weights, mean, rstd)], [projected]
    for index in range(1, len(layers)):
        layer = layers[index]
        queries = _self_attention(layer, queries, query_pe)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if index == 1 and prepared.second is not None:
            image_keys, image_values, image_queries = _folded_projections(
                prepared, weights, projected, mean, rstd, t2i.num_heads
            )
        else:
            image_keys, image_values, image_queries = _image_projections(
                t2i, i2t, image, prepared.pe
            )
        attention = torch.softmax(
            torch.matmul(_queries(t2i, queries + query_pe), image_keys), dim=-1
        )
        attended = torch.matmul(attention, image_values.transpose(2, 3))
        queries = layer.norm2(queries + _merge(t2i, attended))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys, projected = _keys_values(i2t, queries + query_pe, queries)
        weights = _image_to_token_weights(keys, image_queries)
        del image_keys, image_values, image_queries, attention
        image, mean, rstd = _update_image(
            image, weights, projected, layer.norm4, i2t.out_proj.bias
        )
        states.append((weights, mean, rstd))
        projections.append(projected)

    # Final token→image attention, for the tokens that are read.
    tokens = queries[:, read] + query_pe[:, read]
    fh, fd = attention_heads(final)
    q = _queries(final, tokens)  # (B, H, R, d)
    c = tokens.shape[-1]
    folded = torch.matmul(q, final.k_proj.weight.view(fh, fd, c))  # (B, H, R, C)
    logits = torch.matmul(folded.flatten(1, 2), (image + prepared.pe).transpose(1, 2))
    context = torch.bmm(torch.softmax(logits, dim=-1), image).view(b, fh, len(read), c)
    del image, logits
    values = torch.matmul(context, final.v_proj.weight.view(fh, fd, c).transpose(1, 2))
    values = values + final.v_proj.bias.view(fh, 1, fd)
    read_out = decoder.transformer.norm_final_attn(queries[:, read] + _merge(final, values))

    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[offset + i](read_out[:, 1 + i]) for i in range(count)],
        dim=1,
    )  # (B, K, c'')
    iou = decoder.iou_prediction_head(read_out[:, 0])[:, offset : offset + count]
    return TokenState(
        iou=iou,
        hyper=hyper,
        states=states,
        projections=projections,
    )


def decode_masks(
    decoder: MaskDecoder,
    prepared: PreparedImage,
    state: TokenState,
    prompts: torch.Tensor,
    proposals: torch.Tensor,
) -> torch.Tensor:
    """Low-resolution logits of chosen proposals, ``(len(prompts), 4h, 4w)``.

    Parameters
    ----------
    state : TokenState
        From :func:`decode_tokens`.
    prompts, proposals : ``(R,)`` int64
        Prompt index in the batch and proposal index (0..K-1) of each mask wanted.
    """
    import torch

    from .decoder_masks import upscale

    h, w = prepared.grid
    layers = decoder.transformer.layers
    unique, inverse = torch.unique(prompts, return_inverse=True)
    u = len(unique)
    # Right-hand factors of the unrolled first upscaling convolution (decoder_masks).
    parts = []
    for index, (layer, through) in enumerate(zip(layers, prepared.through)):
        parts += [
            state.projections[index][unique] @ through,
            (-through.sum(0, keepdim=True)).expand(u, 1, -1),
        ]
        if index > 0:
            shift = layer.cross_attn_image_to_token.out_proj.bias + layers[index - 1].norm4.bias
            parts.append((shift @ through).expand(u, 1, -1))
    right = torch.cat(parts, dim=1)
    rho = None
    left: list[torch.Tensor] = []
    for index in range(len(layers) - 1, -1, -1):
        weights, mean, rstd = (t[unique] for t in state.states[index])
        r = rstd.transpose(1, 2)
        rho = r if rho is None else rho * r  # (U, 1, N)
        layer_left = [weights * rho, rho * mean.transpose(1, 2)]
        if index > 0:
            layer_left.append(rho)
        left[:0] = layer_left
    first_conv = torch.addcmul(prepared.last_shift, prepared.upscale_base, rho.transpose(1, 2))
    first_conv.baddbmm_(torch.cat(left, dim=1).transpose(1, 2), right)  # (U, N, C')
    features = upscale(decoder.output_upscaling, first_conv.flatten(0, 1))  # (U*16N, c'')
    features = features.view(u, -1, features.shape[-1])
    every = torch.bmm(features, state.hyper[unique].transpose(1, 2))  # (U, 16N, K)
    flat = every[inverse, :, proposals]  # (R, 16N)
    grid = flat.view(-1, h, w, 2, 2, 2, 2)  # [y, x, dy1, dx1, dy2, dx2]
    return grid.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, 4 * h, 4 * w)
