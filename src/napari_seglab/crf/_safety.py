"""Guards that keep a default CRF refinement from doing harm.

Measured on real images with degraded probability maps (``docs/crf.md``,
``docs/scripts/tune_crf_real.py``), a dense CRF with fixed kernels helps where
a map is too large but can hurt small or thin objects: a bilateral kernel much
wider than an object lets the background outvote it, and objects the input
holds only weakly disappear. The guards below, applied by
:func:`napari_seglab.crf.refine`:

* :func:`object_scale`: the typical depth of the input's objects, from which
  the automatic bilateral width is chosen (:meth:`CrfParameters.resolved`);
* :func:`keep_confident_pixels`: pixels whose input probability is confident keep
  their input class;
* :func:`restore_objects`: an input object with a real core (not a speck) that
  the CRF would remove entirely is kept as the input had it;
* :func:`confident_change_fraction`: how much of what the input is sure about
  the CRF wanted to change (a warning above a set fraction).

Arrays are ``(Y, X)`` or ``(Z, Y, X)`` class maps (index 0 is background) and
``(K, *spatial)`` probabilities.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

#: Input probability at or above which a pixel counts as confident for the warning.
WARN_CONFIDENCE = 0.9
#: Objects whose deepest voxel lies at least this many finest voxels from their edge
#: (a core, not a speck of noise) are never removed by :func:`restore_objects`.
CORE_VOXELS = 2.0
#: Largest number of voxels :func:`object_scale` looks at (bigger inputs are strided).
SCALE_MAX_VOXELS = 2**21


def object_scale(
    foreground: np.ndarray, spacing: tuple[float, ...], max_voxels: int = SCALE_MAX_VOXELS
) -> float | None:
    """Typical depth of the foreground objects, in physical units.

    The foreground probability is smoothed with a Gaussian of one finest voxel
    (so that isolated noisy pixels do not count as objects) and thresholded at
    0.5; the result is the mean distance of a foreground voxel to the nearest
    background voxel (a disc of radius ``R`` gives ``R / 3``, a band of width
    ``w`` gives ``w / 4``). Inputs over ``max_voxels`` are strided evenly first.

    Parameters
    ----------
    foreground : array ``(Y, X)`` or ``(Z, Y, X)``
        Probability of not being background (``1 - p[0]``).
    spacing : tuple of float
        Voxel size per axis.
    max_voxels : int
        Largest number of voxels measured.

    Returns
    -------
    float or None
        ``None`` when nothing is foreground.
    """
    step = max(1, math.ceil((foreground.size / max_voxels) ** (1.0 / foreground.ndim)))
    view = foreground[(slice(None, None, step),) * foreground.ndim]
    grid = tuple(s * step for s in spacing)
    finest = float(min(spacing))
    smooth = ndi.gaussian_filter(
        np.asarray(view, dtype=np.float32), tuple(finest / g for g in grid)
    )
    mask = smooth > 0.5
    if not mask.any():
        return None
    depth = ndi.distance_transform_edt(mask, sampling=grid)
    return float(depth[mask].mean())


def confident_change_fraction(
    refined: np.ndarray,
    given: np.ndarray,
    confidence: np.ndarray,
    threshold: float = WARN_CONFIDENCE,
) -> float:
    """Fraction of the confident pixels (``confidence >= threshold``) whose class changed.

    ``refined`` and ``given`` are class maps of the same shape, ``confidence``
    the input's largest class probability per pixel. 0 when no pixel is confident.
    """
    sure = confidence >= threshold
    count = int(np.count_nonzero(sure))
    if count == 0:
        return 0.0
    return float(np.count_nonzero((refined != given) & sure)) / count


def keep_confident_pixels(
    refined: np.ndarray, given: np.ndarray, confidence: np.ndarray, threshold: float
) -> np.ndarray:
    """Set ``refined`` back to ``given`` where ``confidence >= threshold`` (in place)."""
    sure = confidence >= threshold
    refined[sure] = given[sure]
    return refined


def restore_objects(
    refined: np.ndarray,
    given: np.ndarray,
    spacing: tuple[float, ...],
    core_voxels: float = CORE_VOXELS,
) -> np.ndarray:
    """Put back input objects that the CRF removed entirely (in place).

    An object is a connected region (face connectivity) of one non-background
    class of ``given``. When none of its voxels has that class in ``refined``
    and its deepest voxel lies at least ``core_voxels`` finest voxels from its
    edge (it has a core; single noisy pixels do not), its voxels get the class
    back. Objects the CRF only shrank or moved are left as refined.

    Parameters
    ----------
    refined, given : int arrays ``(Y, X)`` or ``(Z, Y, X)``
        Class maps after and before refinement (0 is background).
    spacing : tuple of float
        Voxel size per axis.
    core_voxels : float
        Smallest depth, in finest voxels, of an object that is put back.

    Returns
    -------
    array
        ``refined``.
    """
    depth_needed = core_voxels * float(min(spacing))
    smallest = 2**given.ndim  # fewer voxels cannot hold a core of two voxels
    for cls in np.unique(given):
        if cls == 0:
            continue
        objects, n = ndi.label(given == cls)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        kept = ndi.sum_labels(refined == cls, objects, index)
        sizes = ndi.sum_labels(np.ones(objects.shape, dtype=np.uint8), objects, index)
        gone = np.nonzero((kept == 0) & (sizes >= smallest))[0]
        if gone.size == 0:
            continue
        boxes = ndi.find_objects(objects)
        for i in gone:
            box = tuple(
                slice(max(s.start - 1, 0), min(s.stop + 1, n_axis))
                for s, n_axis in zip(boxes[i], given.shape)
            )
            inside = objects[box] == i + 1
            if ndi.distance_transform_edt(inside, sampling=spacing).max() >= depth_needed:
                refined[box][inside] = cls
    return refined
