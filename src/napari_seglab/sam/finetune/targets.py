"""Training targets: each object's mask in the frame of SAM's low-resolution logits.

Computed once per object before training and kept as small crops
(:class:`TargetCrops`), so the memory follows the objects' sizes, not the
images'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import AnnotatedObject

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TargetCrops", "low_res_target_crops", "low_res_targets"]


def low_res_target_crops(
    objects: list[AnnotatedObject],
    shape: tuple[int, int],
    input_size: tuple[int, int],
    img_size: int,
    low_res: int,
) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Each object's mask in the frame of SAM's low-resolution logits, as a crop.

    The mask is resized like the image (bilinear, long side to ``img_size``,
    as ``F.interpolate(..., align_corners=False)`` does it), padded to
    ``img_size`` and area-averaged to ``low_res``: values are the object's
    coverage of each low-res cell, in ``[0, 1]``. Only the cells around the
    object are computed, so the cost follows the object's size, not the image's.

    Returns
    -------
    list of (array ``(h, w)`` float32, (row, col))
        The crop of the ``(low_res, low_res)`` target that holds the object,
        and the crop's top-left cell.
    """
    factor = img_size // low_res
    if factor * low_res != img_size:
        raise ValueError(f"Expected img_size divisible by low_res, got {img_size}, {low_res}.")
    height, width = shape
    in_h, in_w = input_size
    margin = 2
    out = []
    for obj in objects:
        r0, c0 = obj.offset
        padded = np.pad(obj.mask.astype(np.float64), margin)
        axes = []
        for start, extent, size, new in (
            (r0, obj.mask.shape[0], height, in_h),
            (c0, obj.mask.shape[1], width, in_w),
        ):
            scale = size / new  # torch's source step for an explicit output size
            first = max(0, int(np.floor((start - 1 + 0.5) / scale - 0.5)))
            last = min(new, int(np.ceil((start + extent + 0.5) / scale - 0.5)) + 1)
            cell0, cell1 = first // factor, min(low_res, -(-last // factor))
            dst = np.arange(cell0 * factor, cell1 * factor)
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
            i0 = np.floor(src).astype(np.int64)
            i1 = i0 + (i0 < size - 1)
            weight = src - i0
            # Index into the padded crop; anything beyond it is background.
            local0 = np.clip(i0 - start + margin, 0, padded.shape[len(axes)] - 1)
            local1 = np.clip(i1 - start + margin, 0, padded.shape[len(axes)] - 1)
            axes.append((cell0, cell1, dst < new, local0, local1, weight))
        (y_cell0, y_cell1, y_in, y0, y1, wy), (x_cell0, x_cell1, x_in, x0, x1, wx) = axes
        top = (1 - wx) * padded[np.ix_(y0, x0)] + wx * padded[np.ix_(y0, x1)]
        bottom = (1 - wx) * padded[np.ix_(y1, x0)] + wx * padded[np.ix_(y1, x1)]
        resized = (1 - wy)[:, None] * top + wy[:, None] * bottom
        resized *= y_in[:, None] & x_in[None, :]  # zero padding beyond the resized image
        cells = resized.reshape(y_cell1 - y_cell0, factor, x_cell1 - x_cell0, factor).mean((1, 3))
        out.append((cells.astype(np.float32), (y_cell0, x_cell0)))
    return out


def low_res_targets(
    objects: list[AnnotatedObject],
    shape: tuple[int, int],
    input_size: tuple[int, int],
    img_size: int,
    low_res: int,
) -> torch.Tensor:
    """Full ``(n, low_res, low_res)`` float32 targets (see :func:`low_res_target_crops`)."""
    import torch

    full = torch.zeros((len(objects), low_res, low_res))
    for k, (crop, (r, c)) in enumerate(
        low_res_target_crops(objects, shape, input_size, img_size, low_res)
    ):
        full[k, r : r + crop.shape[0], c : c + crop.shape[1]] = torch.from_numpy(crop)
    return full


class TargetCrops:
    """Low-res training targets stored as their non-zero crops (float16).

    A full ``(n, 256, 256)`` float32 stack would cost 256 KiB per object for
    published models; objects cover a small part of the frame, so crops keep
    thousands of objects in a few MiB.
    """

    def __init__(self, n: int, size: int):
        self.size = size
        self.crops: list[Any] = [None] * n
        self.offsets: list[tuple[int, int]] = [(0, 0)] * n

    def put(self, i: int, crop: np.ndarray, offset: tuple[int, int]) -> None:
        import torch

        self.crops[i] = torch.from_numpy(crop).half()
        self.offsets[i] = (int(offset[0]), int(offset[1]))

    def batch(self, ids: Sequence[int], device: torch.device) -> torch.Tensor:
        """``(B, 1, L, L)`` float32 targets of objects ``ids`` on ``device``."""
        import torch

        out = torch.zeros((len(ids), 1, self.size, self.size))
        for row, i in enumerate(ids):
            crop = self.crops[i]
            r, c = self.offsets[i]
            out[row, 0, r : r + crop.shape[0], c : c + crop.shape[1]] = crop.float()
        return out.to(device)
