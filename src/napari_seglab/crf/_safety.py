"""Guards that keep a default CRF refinement from doing harm.

Measured on real images with degraded probability maps (``docs/crf.md``,
``docs/scripts/tune_crf_real.py``), a dense CRF with fixed kernels helps where
a map is too large but can hurt small or thin objects: a bilateral kernel much
wider than an object lets the background outvote it, and objects the input
holds only weakly disappear. The guards below, applied by
:func:`napari_seglab.crf.refine`:

* :func:`keep_confident_pixels`: pixels whose input probability is confident keep
  their input class;
* :func:`restore_objects`: an input object with a core (not a speck) whose
  core the CRF would mostly remove is kept as the input had it;
* :func:`verify_changes`: a change is undone where the image argues against
  it (the pixel's intensity is closer to its old class's local mean than to
  the new one's);
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
#: Reach (finest voxels) of the box over which :func:`verify_changes` takes local class means.
VERIFY_WIDTH_VOXELS = 30.0


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
    present = np.nonzero(np.bincount(given.ravel()))[0]  # linear time, unlike np.unique
    for cls in present[present > 0]:
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


def _cell_sums(volume: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """Sums of ``volume`` over cells of ``factor`` voxels per axis (zero-padded at the end)."""
    padded = np.pad(volume, [(0, -n % f) for n, f in zip(volume.shape, factor)])
    split = [d for n, f in zip(padded.shape, factor) for d in (n // f, f)]
    return padded.reshape(split).sum(axis=tuple(range(1, 2 * len(factor), 2)), dtype=np.float32)


def verify_cells(
    spacing: tuple[float, ...], width_voxels: float = VERIFY_WIDTH_VOXELS
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Cells and box of :func:`verify_changes`: voxels per cell and cells per box, per axis.

    Local means are summed on cells of about a quarter of the box's reach
    (cells start at index 0 of each axis); the box spans ``window`` cells
    centred on the pixel's cell. A region processed on its own gives the same
    sums for its inner part when it starts on a cell boundary and reaches
    ``window // 2`` cells beyond that part (``crf.refine_blockwise``).
    """
    reach = [width_voxels * float(min(spacing)) / s for s in spacing]
    factor = tuple(max(1, int(r // 4)) for r in reach)  # coarse cells: local means are smooth
    window = tuple(2 * max(1, round(r / f)) + 1 for r, f in zip(reach, factor))
    return factor, window


def box_sums(values: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    """Sum of ``values`` over a centred box of ``window`` elements per axis (zeros outside).

    Each sum is taken over its own box in a fixed order (not as a running
    sum), so it does not depend on where the array starts: a block with
    enough margin gives its inner part bit for bit what the whole array gives.
    """
    out = values
    for axis, width in enumerate(window):
        out = ndi.correlate1d(out, np.ones(width), axis=axis, mode="constant")
    return out


def verify_changes(
    refined: np.ndarray,
    given: np.ndarray,
    intensities: np.ndarray,
    spacing: tuple[float, ...],
    width_voxels: float = VERIFY_WIDTH_VOXELS,
) -> np.ndarray:
    """Undo the changes the image argues against (in place).

    A pixel the CRF moved from class ``a`` (in ``given``) to class ``b`` goes
    back to ``a`` when its intensity is closer (Euclidean over channels) to the
    local mean of class ``a`` than to that of class ``b`` (a tie, as on a flat
    image, keeps the change). Local means are taken over the pixels of each
    class in ``refined`` inside a box reaching about ``width_voxels`` finest
    voxels (in physical units per axis) from the pixel, so uneven illumination
    does not matter; the box is summed on cells of a quarter of its reach,
    which keeps the cost a small part of the CRF's.
    This stops the CRF's smoothing from shrinking an object into its own
    bright interior, while a rim of background wrongly included (a map that
    is too large) still goes.

    Parameters
    ----------
    refined, given : int arrays ``(*spatial)``
        Class maps after and before refinement.
    intensities : float32 array ``(C, *spatial)``
        Normalised image channels.
    spacing : tuple of float
        Voxel size per axis.
    width_voxels : float
        Width of the local means, in finest voxels.

    Returns
    -------
    array
        ``refined``.
    """
    changed = refined != given
    if not changed.any():
        return refined
    factor, window = verify_cells(spacing, width_voxels)
    where = np.flatnonzero(changed)
    cells = tuple(c // f for c, f in zip(np.unravel_index(where, refined.shape), factor))
    old, new = given.ravel()[where], refined.ravel()[where]
    values = [channel.ravel()[where] for channel in intensities]

    def local_sum(volume: np.ndarray) -> np.ndarray:
        """Sum of ``volume`` over the box around each changed pixel (coarse cells)."""
        return box_sums(_cell_sums(volume, factor), window)[cells]

    distance = {}
    for cls in np.union1d(np.unique(old), np.unique(new)):
        member = (refined == cls).astype(np.float32)
        weight = local_sum(member)
        total = np.zeros(where.size, dtype=np.float32)
        for channel, value in zip(intensities, values):
            total += (value - local_sum(channel * member) / np.maximum(weight, 1e-12)) ** 2
        total[weight <= 0] = np.inf  # no pixels of this class nearby: no evidence
        distance[cls] = total
    keep_new = np.zeros(old.shape, dtype=bool)
    for a in np.unique(old):
        for b in np.unique(new[old == a]):
            pair = (old == a) & (new == b)
            keep_new[pair] = distance[b][pair] <= distance[a][pair]
    refined[np.unravel_index(where, refined.shape)] = np.where(keep_new, new, old)
    return refined
