"""Prompts derived from an existing mask: its box, its most interior pixel, a changed copy.

Refining a label with SAM (:mod:`.refine`) prompts with the object's own mask
plus the box and the interior point computed here; fine-tuning with the
``"mask"`` prompt kind (:mod:`.finetune.prompts`) draws its prompts through
the same functions from a shrunken or grown copy of the ground truth
(:func:`change_mask`), so a decoder tuned that way sees at training time what
refinement sends it.

Coordinates are napari's: ``(row, col)`` pixels of the mask's plane; boxes are
``(row0, col0, row1, col1)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["DEFAULT_BOX_MARGIN", "change_mask", "interior_point", "mask_box"]

#: Growth of a mask's bounding box on each side, as a fraction of the box size.
DEFAULT_BOX_MARGIN = 0.1


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the pixel of a non-empty ``(Y, X)`` mask farthest from its border.

    The maximum of the Euclidean distance transform (the image edge counts as
    border); the first such pixel in row-major order on ties. Computed on the
    mask's bounding box padded by one background pixel, which gives the same
    distances as the whole plane at a cost that follows the object's size.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("Expected a non-empty mask to take a point from, got an empty one.")
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    distance = ndi.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), crop.shape)
    return int(row + rows[0]), int(col + cols[0])


def mask_box(mask: np.ndarray, margin: float = DEFAULT_BOX_MARGIN) -> np.ndarray:
    """``(row0, col0, row1, col1)`` float64 around a non-empty ``(Y, X)`` mask.

    The box of the first and last rows and columns of the mask, grown on each
    side by ``margin`` times its height (rows) or width (columns), at least one
    pixel when ``margin > 0``, and clipped to the plane.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError(f"Expected a non-empty mask to take a box from, got {mask.shape} empty.")
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    dr = max(1.0, margin * (r1 - r0 + 1)) if margin > 0 else 0.0
    dc = max(1.0, margin * (c1 - c0 + 1)) if margin > 0 else 0.0
    height, width = mask.shape
    return np.array(
        [max(r0 - dr, 0), max(c0 - dc, 0), min(r1 + dr, height - 1), min(c1 + dc, width - 1)],
        dtype=np.float64,
    )


def change_mask(mask: np.ndarray, distance: float) -> np.ndarray:
    """``mask`` shrunk (``distance < 0``) or grown (``> 0``) by ``|distance|`` pixels.

    Pixels whose Euclidean distance to the border is more than ``|distance|``
    are kept (shrinking), or pixels within ``distance`` of the mask are added
    (growing). The work is done on the mask's box plus the growth, so the cost
    follows the object's size. A shrink that would empty the mask keeps its
    most interior pixel instead.

    Parameters
    ----------
    mask : bool array ``(Y, X)``
    distance : float
        Pixels; 0 returns a copy.

    Returns
    -------
    bool array ``(Y, X)``
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros_like(mask)
    if not mask.any() or distance == 0:
        return mask.copy()
    pad = int(np.ceil(abs(distance))) + 1
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[1])
    crop = mask[r0:r1, c0:c1]
    if distance > 0:
        changed = ndi.distance_transform_edt(~crop) <= distance
    else:
        inside = ndi.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
        changed = inside > -distance
        if not changed.any():
            changed = np.zeros_like(crop)
            changed[np.unravel_index(int(np.argmax(inside)), crop.shape)] = True
    out[r0:r1, c0:c1] = changed
    return out
