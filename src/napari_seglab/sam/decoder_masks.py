"""From the decoder transformer's output to mask logits (see :mod:`.decoder`).

:func:`first_upscaling` and :func:`upscale` run SAM's ``output_upscaling``
on a block of image tokens from the prepared per-image products plus narrow
low-rank terms; :class:`LowResMasks` holds the upscaled features and lays out
a proposal's logits only when it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from segment_anything.modeling import MaskDecoder

    from .decoder_prepare import PreparedImage

__all__ = ["LowResMasks", "first_upscaling", "upscale", "upscaling_right"]


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


def first_upscaling(
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
        The matching right-hand factors (:func:`upscaling_right`).

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


def upscaling_right(
    decoder: MaskDecoder, prepared: PreparedImage, projections: list[torch.Tensor]
) -> torch.Tensor:
    """Right-hand factors of :func:`first_upscaling`, in the order of its left rows."""
    import torch

    layers = decoder.transformer.layers
    parts = []
    for index, (layer, through) in enumerate(zip(layers, prepared.through)):
        parts += [projections[index] @ through, -through.sum(0, keepdim=True)]
        if index > 0:
            shift = layer.cross_attn_image_to_token.out_proj.bias + layers[index - 1].norm4.bias
            parts.append((shift @ through)[None])
    return torch.cat(parts)


def upscale(upscaling: torch.nn.Sequential, first_conv: torch.Tensor) -> torch.Tensor:
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
