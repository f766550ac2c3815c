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
whose weights this reads directly, so there is nothing to keep in sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

__all__ = ["BLOCK_ROWS", "LowResMasks", "PreparedImage", "decode", "prepare_image"]

#: Image tokens per block in the blocked passes (1 MiB per ``(rows, 256)`` float32 block).
BLOCK_ROWS = 1024


@dataclass(frozen=True)
class SecondLayerFold:
    """Prompt-independent pieces of the second layer's image projections.

    The second layer's token→image keys and values and image→token queries are
    fixed linear maps of the first layer's output ``LN_1(X' + A_1ᵀP_1)``, a
    per-row affine map of ``X'`` plus a low-rank update (see
    :func:`_second_layer_projections`). With ``W`` ``(3D, C)`` the three stacked
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


def _heads(attn: Attention) -> tuple[int, int]:
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
    heads, _ = _heads(t2i)
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


def _second_layer_projections(
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

    heads, per_head = _heads(attn)
    q = F.linear(queries, attn.q_proj.weight, attn.q_proj.bias) * (1.0 / math.sqrt(per_head))
    return q.view(-1, heads, per_head).transpose(0, 1)


def _folded_keys(attn: Attention, queries: torch.Tensor) -> torch.Tensor:
    """Token→image queries with the key projection folded in, ``(H*M, C)``.

    ``logits = folded @ imageᵀ`` are the scaled attention logits (the key bias
    cancels in the softmax).
    """
    import torch

    heads, per_head = _heads(attn)
    q = _token_queries(attn, queries)  # (H, M, d)
    c = attn.k_proj.weight.shape[1]
    return torch.bmm(q, attn.k_proj.weight.view(heads, per_head, c)).view(-1, c)


def _token_values(attn: Attention, context: torch.Tensor) -> torch.Tensor:
    """``(H*M, C)`` softmax-weighted image rows -> attention output ``(M, C)``.

    ``(softmax X) Wvᵀ + bv`` (rows of the softmax sum to one), then the output projection.
    """
    import torch

    heads, per_head = _heads(attn)
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

    heads, per_head = _heads(attn)
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


# -- masks -----------------------------------------------------------------------------------
class LowResMasks:
    """Low-resolution mask logits of the proposals, each computed when first asked for.

    A proposal's logits are its hypernetwork vector times the upscaled image
    features; the decoder computes the best-scoring one and keeps the features,
    so the others cost one matrix-vector product each if they are ever read.

    Parameters
    ----------
    features : list of ``(16·B, c'')``
        Upscaled features per block of ``B`` image tokens, rows
        ``[token, dy1, dx1, dy2, dx2]``.
    hyper : ``(K, c'')``
        Hypernetwork outputs of the returned mask tokens.
    grid : (int, int)
        ``(h, w)`` of the embedding grid.
    first : int, optional
        Proposal to compute at once.
    """

    def __init__(
        self,
        features: list[torch.Tensor],
        hyper: torch.Tensor,
        grid: tuple[int, int],
        first: int | None = None,
    ):
        self._features = features
        self._hyper = hyper
        self._grid = grid
        self._done: dict[int, torch.Tensor] = {}
        if first is not None:
            self.one(first)

    def __len__(self) -> int:
        return int(self._hyper.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(1, K, 4h, 4w)``."""
        h, w = self._grid
        return (1, len(self), 4 * h, 4 * w)

    def one(self, k: int) -> torch.Tensor:
        """Logits of proposal ``k`` in image order, ``(4h, 4w)``."""
        import torch

        if k not in self._done:
            h, w = self._grid
            flat = torch.cat([torch.mv(block, self._hyper[k]) for block in self._features])
            grid = flat.view(h, w, 2, 2, 2, 2)  # [y, x, dy1, dx1, dy2, dx2]
            self._done[k] = grid.permute(0, 2, 4, 1, 3, 5).reshape(4 * h, 4 * w)
        return self._done[k]

    def select(self, which: slice | list[int]) -> torch.Tensor:
        """Logits of some proposals, ``(1, k, 4h, 4w)``."""
        import torch

        indices = range(len(self))[which] if isinstance(which, slice) else which
        return torch.stack([self.one(int(k)) for k in indices])[None]

    def all(self) -> torch.Tensor:
        """All proposals, ``(1, K, 4h, 4w)`` (what ``MaskDecoder.forward`` returns)."""
        return self.select(slice(None))


def _first_upscaling(
    prepared: PreparedImage,
    rows: slice,
    states: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    right: torch.Tensor,
) -> torch.Tensor:
    """The first upscaling convolution of the transformer's output for a block of rows.

    Layer ``j`` updates the image tokens to ``z_j = image_{j-1} + A_jᵀP_j + b_j``
    (attention weights ``A_j``, values projected to the output ``P_j``) and
    normalises them, ``image_j = r_j (z_j - μ_j) Γ_j + β_j`` with per-row mean
    ``μ_j`` and inverse deviation ``r_j``: a per-row affine map. Unrolled, with
    ``ρ_j = r_j ⋯ r_{L-1}`` per row and ``T_j = Γ_j ⋯ Γ_{L-1} W``::

        Y = image_{L-1} W + b_W
          = ρ_0 X' T_0 + Σ_j ρ_j [A_jᵀ (P_j T_j) - μ_j 1ᵀT_j]
            + Σ_{j≥1} ρ_j (b_j + β_{j-1}) T_j + β_{L-1} W + b_W

    where ``X' = X + b_0`` (``X' T_0`` is prepared per image). The rest is one
    GEMM of width ``L (H M + 2) - 1`` instead of ``C``.

    Parameters
    ----------
    states : list of (A, μ, r)
        Per layer: attention weights ``(H*M, N)``, row means and inverse
        standard deviations ``(N, 1)`` of its ``norm4``.
    right : ``(L (H M + 2) - 1, C')``
        The matching right-hand factors (:func:`_upscaling_right`).

    Returns ``(rows, C')``, columns ``[dy, dx, o]``.
    """
    import torch

    rho = None
    parts: list[torch.Tensor] = []
    for index in range(len(states) - 1, -1, -1):
        weights, mean, rstd = states[index]
        rho = rstd[rows].T if rho is None else rho * rstd[rows].T  # (1, B)
        layer_parts = [weights[:, rows] * rho, rho * mean[rows].T]
        if index > 0:
            layer_parts.append(rho)
        parts[:0] = layer_parts
    base = torch.addcmul(prepared.last_shift, prepared.upscale_base[rows], rho.T)
    return base.addmm_(torch.cat(parts).T, right)


def _upscaling_right(
    decoder: MaskDecoder, prepared: PreparedImage, projections: list[torch.Tensor]
) -> torch.Tensor:
    """Right-hand factors of :func:`_first_upscaling`, in the order of its left rows."""
    import torch

    layers = decoder.transformer.layers
    parts = []
    for index, (layer, through) in enumerate(zip(layers, prepared.through)):
        parts += [projections[index] @ through, -through.sum(0, keepdim=True)]
        if index > 0:
            shift = layer.cross_attn_image_to_token.out_proj.bias + layers[index - 1].norm4.bias
            parts.append((shift @ through)[None])
    return torch.cat(parts)


def _upscale(upscaling: torch.nn.Sequential, first_conv: torch.Tensor) -> torch.Tensor:
    """SAM's ``output_upscaling`` after its first convolution, as plain GEMMs.

    Both transposed convolutions have kernel 2 and stride 2, so each is a
    per-pixel linear map to 2x2 sub-pixels. Keeping the layout
    ``(pixel, sub-pixel, channel)`` makes them matrix products and the
    ``LayerNorm2d`` a plain layer norm over the last axis.

    Parameters
    ----------
    first_conv : ``(B, 4·c)``
        Output of the first transposed convolution, columns ``[dy, dx, o]``.

    Returns
    -------
    ``(16·B, c'')`` features, rows ``[token, dy1, dx1, dy2, dx2]``.
    """
    import torch
    import torch.nn.functional as F

    _conv1, norm, act1, conv2, act2 = upscaling
    mid, out = conv2.weight.shape[:2]
    x = act1(F.layer_norm(first_conv.view(-1, mid), (mid,), norm.weight, norm.bias, norm.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(mid, 4 * out)
    return act2(torch.addmm(conv2.bias.repeat(4), x, w2)).view(-1, out)


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
    heads, per_head = _heads(i2t)
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
            image_keys, image_values, image_queries = _second_layer_projections(
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
        heads, per_head = _heads(i2t)
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
    right = _upscaling_right(decoder, prepared, projections)
    features = [
        _upscale(decoder.output_upscaling, _first_upscaling(prepared, rows, states, right))
        for rows in blocks
    ]
    best = int(iou[0].argmax())
    return LowResMasks(features, hyper, prepared.grid, first=best), iou
