"""Degraded inputs and simple scores for showing what the CRF does.

Used by the CRF tests, ``benchmarks/bench_crf.py`` and the figures in
``docs/crf.md``; the project-wide metrics live in :mod:`napari_seglab.metrics`.

Degradation recipe (documented in ``docs/crf.md``): start from the one-hot
foreground of the ground truth, shift it by ``shift`` voxels, blur it with a
Gaussian of ``blur`` physical units, add independent Gaussian noise of standard
deviation ``noise`` and clip to ``[0.02, 0.98]``. The result looks like the
soft, misplaced boundaries of a network trained on too little data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def degrade_probabilities(
    labels: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    blur: float = 2.0,
    shift: tuple[int, ...] | None = None,
    noise: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """Blurred, shifted, noisy foreground probabilities, float32 ``(2, *spatial)``.

    Parameters
    ----------
    labels : array ``(Y, X)`` or ``(Z, Y, X)``
        Ground truth; every non-zero value is foreground.
    spacing : tuple of float, optional
        Voxel size; ``blur`` is in the same unit. Default 1 per axis.
    blur : float
        Gaussian blur width (physical units).
    shift : tuple of int, optional
        Shift in voxels per axis; default 2 voxels along the last two axes.
    noise : float
        Standard deviation of the added noise.
    seed : int
        Seed of the noise.
    """
    ndim = labels.ndim
    spacing = (1.0,) * ndim if spacing is None else tuple(spacing)
    shift = (0,) * (ndim - 2) + (2, 2) if shift is None else tuple(shift)
    foreground = (np.asarray(labels) > 0).astype(np.float32)
    foreground = ndi.shift(foreground, shift, order=0, mode="constant", cval=0.0)
    p = ndi.gaussian_filter(foreground, [blur / s for s in spacing])
    p += np.random.default_rng(seed).normal(0.0, noise, size=p.shape).astype(np.float32)
    np.clip(p, 0.02, 0.98, out=p)
    return np.stack([1.0 - p, p]).astype(np.float32)


def blobby_labels(
    labels: np.ndarray,
    grow: float = 3.0,
    close: int = 2,
    *,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """SAM-like instance masks: each object grown by ``grow`` units, then smoothed.

    Objects grow by ``grow`` physical units (``spacing``; default voxels) into
    the background, never into each other (:func:`skimage.segmentation.expand_labels`),
    and each mask is closed with a cross of radius ``close`` voxels where it
    does not touch another object, so boundaries are rounder and wider than the
    real edges. Label values are kept.
    """
    from skimage.segmentation import expand_labels

    spacing = (1.0,) * np.ndim(labels) if spacing is None else tuple(spacing)
    grown = expand_labels(np.asarray(labels), distance=grow, spacing=spacing)
    if close <= 0:
        return grown
    structure = ndi.iterate_structure(ndi.generate_binary_structure(labels.ndim, 1), close)
    out = grown.copy()
    for value in np.unique(grown[grown > 0]):
        closed = ndi.binary_closing(grown == value, structure=structure)
        out[closed & (out == 0)] = value
    return out


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two foreground masks (non-zero is foreground; 1 when both are empty)."""
    from ..metrics import mean_dice

    score = mean_dice(np.asarray(prediction) > 0, np.asarray(truth) > 0, classes=(1,))
    return 1.0 if np.isnan(score) else score


def boundary_f_score(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    tolerance: float = 1.0,
    spacing: tuple[float, ...] | None = None,
) -> float:
    """Boundary F-score of two foreground masks (Csurka et al., 2013).

    A boundary voxel counts as matched when the other mask's boundary lies
    within ``tolerance`` physical units. Boundaries are the foreground voxels
    with a background face neighbour; the score is the harmonic mean of
    boundary precision and recall (1 when both masks are empty).
    """
    spacing = (1.0,) * np.ndim(truth) if spacing is None else tuple(spacing)

    def edge(mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask) > 0
        return mask & ~ndi.binary_erosion(mask, border_value=1)

    pred_edge, true_edge = edge(prediction), edge(truth)
    if not pred_edge.any() and not true_edge.any():
        return 1.0
    if not pred_edge.any() or not true_edge.any():
        return 0.0
    to_true = ndi.distance_transform_edt(~true_edge, sampling=spacing)
    to_pred = ndi.distance_transform_edt(~pred_edge, sampling=spacing)
    precision = float((to_true[pred_edge] <= tolerance).mean())
    recall = float((to_pred[true_edge] <= tolerance).mean())
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)
