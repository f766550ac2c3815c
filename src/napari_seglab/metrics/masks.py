"""Scores of two foreground masks: Dice and boundary F-score.

Used by the CRF tests, benchmarks and figures to show how far a refinement
moved boundaries; for per-class and instance scores see :mod:`.overlap` and
:mod:`.matching`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .overlap import mean_dice


def foreground_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two foreground masks (non-zero is foreground; 1 when both are empty)."""
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
