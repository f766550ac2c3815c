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
* :func:`restore_objects`: an input object with a core (not a speck) whose
  core the CRF would mostly remove is kept as the input had it;
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
#: Depth, in finest voxels, of an object's core (:func:`restore_objects`); a speck of
#: noise has none.
CORE_VOXELS = 2.0
#: An object whose core the CRF keeps less of than this is put back as it was.
KEEP_CORE_FRACTION = 0.5
#: Largest number of voxels :func:`object_scale` looks at (bigger inputs are strided).
SCALE_MAX_VOXELS = 2**21


def object_scale(
    foreground: np.ndarray, spacing: tuple[float, ...], max_voxels: int = SCALE_MAX_VOXELS
) -> float | None:
    """Typical thickness of the foreground objects, in physical units: volume over surface.

    The foreground probability is smoothed with a Gaussian of one finest voxel
    (so that isolated noisy pixels do not count as objects) and thresholded at
    0.5; the result is the foreground volume divided by the area of its
    boundary faces (voxel faces between foreground and background, in physical
    units; the array's border is not a boundary). A disc of radius ``R`` gives
    about ``0.39 R`` (its staircase outline is longer than the circle), a band of
    width ``w`` gives ``w / 2``. Linear in the number of voxels; inputs over
    ``max_voxels`` are strided evenly first.

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
        ``None`` when nothing (or everything) is foreground.
    """
    step = max(1, math.ceil((foreground.size / max_voxels) ** (1.0 / foreground.ndim)))
    view = foreground[(slice(None, None, step),) * foreground.ndim]
    grid = tuple(s * step for s in spacing)
    finest = float(min(spacing))
    smooth = ndi.gaussian_filter(
        np.asarray(view, dtype=np.float32), tuple(finest / g for g in grid)
    )
    mask = smooth > 0.5
    volume = float(np.count_nonzero(mask)) * math.prod(grid)
    surface = 0.0
    for axis in range(mask.ndim):
        face = math.prod(g for i, g in enumerate(grid) if i != axis)
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        surface += face * float(np.count_nonzero(mask[tuple(lo)] != mask[tuple(hi)]))
    if volume == 0 or surface == 0:
        return None
    return volume / surface


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
    np.copyto(refined, given, where=confidence >= threshold)
    return refined


def core_footprint(spacing: tuple[float, ...], depth: float) -> np.ndarray:
    """Offsets closer than ``depth`` (physical units): erosion by it keeps voxels at least
    ``depth`` from the background, as ``distance_transform_edt(...) >= depth`` would."""
    reach = [math.ceil(depth / s) for s in spacing]
    grids = np.meshgrid(*(np.arange(-r, r + 1) * s for r, s in zip(reach, spacing)), indexing="ij")
    inside = sum(g**2 for g in grids) < depth**2
    used = np.nonzero(inside)  # symmetric about the centre: trim empty outer rows
    return inside[tuple(slice(i.min(), i.max() + 1) for i in used)]


def restore_objects(
    refined: np.ndarray,
    given: np.ndarray,
    spacing: tuple[float, ...],
    core_voxels: float = CORE_VOXELS,
    keep_fraction: float = KEEP_CORE_FRACTION,
) -> np.ndarray:
    """Put back input objects whose core the CRF removed (in place).

    An object is a connected region (face connectivity) of one non-background
    class of ``given``; its core is the voxels at least ``core_voxels`` finest
    voxels from its edge (an object without a core, e.g. a noisy speck, is left
    to the CRF). When ``refined`` keeps less than ``keep_fraction`` of the core
    in the object's class, the object's voxels get the class back: the CRF may
    move an object's edge, not erase it. Objects that were too large keep their
    (correct) inner part in the core and stay as refined.

    Parameters
    ----------
    refined, given : int arrays ``(Y, X)`` or ``(Z, Y, X)``
        Class maps after and before refinement (0 is background).
    spacing : tuple of float
        Voxel size per axis.
    core_voxels : float
        Depth of the core, in finest voxels.
    keep_fraction : float
        Smallest fraction of the core the CRF must keep.

    Returns
    -------
    array
        ``refined``.
    """
    footprint = core_footprint(spacing, core_voxels * float(min(spacing)))
    for cls in np.unique(given):
        if cls == 0:
            continue
        mask = given == cls
        core = ndi.binary_erosion(mask, footprint, border_value=1)
        if not core.any():
            continue
        objects, n = ndi.label(mask)
        core_size = np.bincount(objects[core], minlength=n + 1)
        core_kept = np.bincount(objects[core & (refined == cls)], minlength=n + 1)
        lost = (core_size > 0) & (core_kept < keep_fraction * core_size)
        lost[0] = False
        if lost.any():
            refined[lost[objects]] = cls
    return refined
