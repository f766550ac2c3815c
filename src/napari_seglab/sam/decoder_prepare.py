"""The mask decoder's prompt-independent work for one image (see :mod:`.decoder`).

:func:`prepare_image` computes, once per image embedding and dense prompt,
everything :func:`~.decoder.decode` needs that does not depend on the clicks:
the first layer's image projections, the image tokens through the second
layer's projections (:class:`SecondLayerFold`) and through the first
upscaling convolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import Attention

__all__ = [
    "PreparedImage",
    "SecondLayerFold",
    "attention_heads",
    "prepare_image",
    "second_layer_projections",
]


@dataclass(frozen=True)
class SecondLayerFold:
    """Prompt-independent pieces of the second layer's image projections.

    The second layer's token→image keys and values and image→token queries are
    fixed linear maps of the first layer's output ``LN_1(X' + A_1ᵀP_1)``, a
    per-row affine map of ``X'`` plus a low-rank update (see
    :func:`second_layer_projections`). With ``W`` ``(3D, C)`` the three stacked
    projection weights (keys, values, queries) and ``Γ_1``, ``β_1`` the first
    ``norm4``'s weight and bias:

    Attributes
    ----------
    base : ``(3D, N)``
        ``(X' Γ_1 Wᵀ)ᵀ`` with ``X'`` = :attr:`PreparedImage.first_residual`.
    shift : ``(3D, N)``
        What does not scale with the norm: ``β_1 Wᵀ``, the positional encoding
        through the key and query weights, and the value and query biases (the
        key bias cancels in the softmax).
    through : ``(C, 3D)``
        ``Γ_1 Wᵀ``.
    column_sums : ``(1, 3D)``
        ``1ᵀ Γ_1 Wᵀ``.
    """

    base: torch.Tensor
    shift: torch.Tensor
    through: torch.Tensor
    column_sums: torch.Tensor


@dataclass(frozen=True)
class PreparedImage:
    """Prompt-independent decoder tensors for one image embedding and dense prompt.

    ``N = h·w`` image tokens (row-major over the grid), ``C`` channels, ``H``
    heads of width ``d`` in the cross-attentions, ``C'`` = 4 × the channels
    after the first upscaling convolution.

    Attributes
    ----------
    grid : (int, int)
        ``(h, w)`` of the embedding grid.
    pe : ``(N, C)``
        Positional encoding of the grid.
    first_keys : ``(H, d, N)``
        First layer, token→image attention: per-head key projection of
        ``tokens + pe`` (without its bias, which cancels in the softmax).
    first_values : ``(H, N, d)``
        First layer, token→image attention: per-head value projection of ``tokens``.
    first_queries : ``(H, d, N)``
        First layer, image→token attention: per-head query projection of ``tokens + pe``.
    first_residual : ``(N, C)``
        Image embedding plus the dense prompt embedding plus the output bias of
        the first image→token attention.
    through : tuple of ``(C, C')``
        The first upscaling convolution ``W`` (as a matrix) behind the
        ``norm4`` weights of layers ``j, ..., L-1``: ``T_j = Γ_j ⋯ Γ_{L-1} W``.
    upscale_base : ``(N, C')``
        ``first_residual @ T_0``.
    last_shift : ``(C',)``
        ``β_{L-1} W + b_W``: the last ``norm4`` bias through ``W``, plus its bias.
    second : SecondLayerFold or None
        For decoders of two or more layers.
    """

    grid: tuple[int, int]
    pe: torch.Tensor
    first_keys: torch.Tensor
    first_values: torch.Tensor
    first_queries: torch.Tensor
    first_residual: torch.Tensor
    through: tuple[torch.Tensor, ...]
    upscale_base: torch.Tensor
    last_shift: torch.Tensor
    second: SecondLayerFold | None = None


def attention_heads(attn: Attention) -> tuple[int, int]:
    """``(H, d)``: number of heads and per-head width of ``attn``."""
    return attn.num_heads, attn.internal_dim // attn.num_heads


def _per_head_rows(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(N, H*d)`` -> ``(H, d, N)`` contiguous."""
    return x.T.reshape(heads, -1, x.shape[0]).contiguous()


def _conv1_matrix(upscaling: torch.nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """The first transposed convolution as ``(C, 4·c)`` weights and ``(4·c,)`` bias.

    Columns are ordered ``[dy, dx, o]`` (sub-pixel, then output channel).
    """
    conv1 = upscaling[0]
    c, mid = conv1.weight.shape[:2]
    return conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * mid), conv1.bias.repeat(4)


def prepare_image(
    decoder: MaskDecoder,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    dense: torch.Tensor,
    *,
    image_tokens: torch.Tensor | None = None,
    pe_tokens: torch.Tensor | None = None,
) -> PreparedImage:
    """The decoder's prompt-independent work for one image (and dense prompt).

    Parameters
    ----------
    decoder : segment_anything.modeling.MaskDecoder
    image_embedding, image_pe : ``(1, C, h, w)``
    dense : ``(1, C, h, w)``
        The dense prompt embedding: ``prompt_encoder.no_mask_embed`` broadcast
        when there is no mask prompt (then the result serves every click on
        this image), else the embedded mask prompt.
    image_tokens, pe_tokens : ``(h*w, C)``, optional
        ``image_embedding`` and ``image_pe`` already laid out as token rows.

    Returns
    -------
    PreparedImage
        Valid while the decoder weights, the embedding and ``dense`` are unchanged.
    """
    import torch.nn.functional as F

    layers = decoder.transformer.layers
    first = layers[0]
    h, w = image_embedding.shape[-2:]
    if image_tokens is None:
        image_tokens = image_embedding[0].flatten(1).T
    pe = image_pe[0].flatten(1).T.contiguous() if pe_tokens is None else pe_tokens
    # Token rows must be contiguous: a sum of transposed views keeps their column-major layout.
    tokens = (image_tokens + dense[0].flatten(1).T).contiguous()
    keys = tokens + pe
    t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    heads, _ = attention_heads(t2i)
    weight, bias = _conv1_matrix(decoder.output_upscaling)
    through = [weight]
    for layer in reversed(layers):
        through.insert(0, layer.norm4.weight[:, None] * through[0])
    residual = tokens + i2t.out_proj.bias
    values = F.linear(tokens, t2i.v_proj.weight, t2i.v_proj.bias)
    return PreparedImage(
        grid=(int(h), int(w)),
        pe=pe,
        first_keys=_per_head_rows(F.linear(keys, t2i.k_proj.weight), heads),
        first_values=_per_head_rows(values, heads).transpose(1, 2).contiguous(),
        first_queries=_per_head_rows(F.linear(keys, i2t.q_proj.weight, i2t.q_proj.bias), heads),
        first_residual=residual,
        through=tuple(through[:-1]),
        upscale_base=residual @ through[0],
        last_shift=layers[-1].norm4.bias @ weight + bias,
        second=_fold_second_layer(decoder, residual, pe) if len(layers) > 1 else None,
    )


def _fold_second_layer(
    decoder: MaskDecoder, residual: torch.Tensor, pe: torch.Tensor
) -> SecondLayerFold:
    """:class:`SecondLayerFold` for the image tokens ``residual`` ``(N, C)`` (see there)."""
    import torch

    first, second = decoder.transformer.layers[:2]
    t2i, i2t = second.cross_attn_token_to_image, second.cross_attn_image_to_token
    weight = torch.cat([t2i.k_proj.weight, t2i.v_proj.weight, i2t.q_proj.weight])  # (3D, C)
    inner = t2i.k_proj.weight.shape[0]
    through = first.norm4.weight[:, None] * weight.T  # (C, 3D)
    positional = pe @ weight.T
    positional[:, inner : 2 * inner] = 0.0  # values carry no positional encoding
    bias = torch.cat([torch.zeros_like(t2i.k_proj.bias), t2i.v_proj.bias, i2t.q_proj.bias])
    shift = positional + (first.norm4.bias @ weight.T + bias)
    return SecondLayerFold(
        base=(residual @ through).T.contiguous(),
        shift=shift.T.contiguous(),
        through=through,
        column_sums=through.sum(0, keepdim=True),
    )


def second_layer_projections(
    fold: SecondLayerFold,
    weights: torch.Tensor,
    projected: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The second layer's image keys, values and queries, each ``(H, d, N)``.

    The first layer's output is ``r (X' + AᵀP - μ) Γ_1 + β_1`` (per-row mean
    ``μ`` and inverse deviation ``r``), so its projection through ``W`` is::

        r X'Γ_1Wᵀ + (r Aᵀ) (P Γ_1Wᵀ) - r μ 1ᵀΓ_1Wᵀ + shift

    one GEMM of width ``H M + 1`` on top of the prepared :class:`SecondLayerFold`
    instead of three of width ``H M`` over the whole image.

    Parameters
    ----------
    weights, projected : ``(H*M, N)``, ``(H*M, C)``
        The first image→token attention's weights and projected values.
    mean, rstd : ``(N, 1)``
        Row statistics of the first layer's ``norm4``.
    """
    import torch

    scale = rstd.T  # (1, N)
    left = torch.cat([weights * scale, -scale * mean.T])  # (HM + 1, N)
    right = torch.cat([projected @ fold.through, fold.column_sums])  # (HM + 1, 3D)
    stacked = torch.addcmul(fold.shift, fold.base, scale).addmm_(right.T, left)
    keys, values, queries = stacked.view(3, heads, -1, stacked.shape[1])
    return keys, values, queries
