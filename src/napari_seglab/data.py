"""Deterministic synthetic images with instance ground truth.

Two generators, used by tests, benchmarks, the demo and napari's sample data:

* :func:`nuclei_2d`: a fluorescence-like 2D image of nuclei, ``(Y, X)`` uint16.
* :func:`nuclei_3d`: an anisotropic 3D stack, ``(Z, Y, X)`` uint16, with a
  coarser Z spacing, depth attenuation and an axially elongated blur.

Both place ellipse(oid)s that may touch (each voxel belongs to at most one
object; an object takes the free voxels of its ellipsoid), then add per-object
brightness, blur, smooth uneven illumination, background and shot + read noise.
The same ``seed`` always gives the same arrays.

Two degraders turn ground truth into the imperfect inputs the CRF is meant to
fix (used by the CRF tests, ``benchmarks/bench_crf.py`` and the figures in
``docs/crf.md``):

* :func:`degrade_probabilities`: start from the one-hot foreground, shift it by
  ``shift`` voxels, blur it with a Gaussian of ``blur`` physical units, add
  Gaussian noise of standard deviation ``noise`` and clip to ``[0.02, 0.98]``:
  the soft, misplaced boundaries of a network trained on too little data.
* :func:`blobby_labels`: SAM-like instance masks, each object grown into the
  background and smoothed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class SyntheticSample:
    """An image with its instance ground truth.

    Attributes
    ----------
    image : array, ``(Y, X)`` or ``(Z, Y, X)``, uint16
    labels : array, same shape, int32; 0 is background, objects are 1..N
    spacing : tuple of float
        Physical size of a pixel/voxel per axis, in the image's axis order (µm).
    name : str
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    name: str

    @property
    def semantic(self) -> np.ndarray:
        """Foreground mask as uint8 labels (0 background, 1 object)."""
        return (self.labels > 0).astype(np.uint8)


def _place_objects(
    shape: tuple[int, ...],
    spacing: np.ndarray,
    n_objects: int,
    radius_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Rasterise ``n_objects`` random ellipsoids (radii in physical units)."""
    ndim = len(shape)
    labels = np.zeros(shape, dtype=np.int32)
    extent = np.asarray(shape) * spacing
    next_id = 1
    for _ in range(n_objects * 3):
        if next_id > n_objects:
            break
        radii = rng.uniform(*radius_range, size=ndim)
        if ndim == 3:
            radii[0] *= rng.uniform(0.8, 1.3)
        centre = rng.uniform(radii * 0.6, extent - radii * 0.6)
        rotation = _random_rotation(ndim, rng)
        lo = np.maximum(np.floor((centre - radii.max()) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((centre + radii.max()) / spacing).astype(int) + 1, shape)
        grids = np.meshgrid(
            *[(np.arange(a, b) + 0.0) * s - c for a, b, s, c in zip(lo, hi, spacing, centre)],
            indexing="ij",
        )
        coords = np.stack(grids, axis=-1) @ rotation
        inside = ((coords / radii) ** 2).sum(axis=-1) <= 1.0
        window = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
        free = inside & (window == 0)
        # Reject objects mostly hidden behind others: touching yes, swallowed no.
        if free.sum() < 0.6 * max(inside.sum(), 1) or inside.sum() < 8:
            continue
        window[free] = next_id
        next_id += 1
    return labels


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return q * np.sign(np.diag(r))


def _render(
    labels: np.ndarray,
    spacing: np.ndarray,
    blur_um: np.ndarray,
    rng: np.random.Generator,
    *,
    photons: float,
) -> np.ndarray:
    """Fluorescence-like rendering of ``labels`` into uint16."""
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.55, 1.0, size=n)])
    signal = brightness[labels]
    texture = ndi.gaussian_filter(rng.normal(size=labels.shape), 1.0)
    signal *= 1.0 + 0.25 * texture / (texture.std() + 1e-9)
    signal = ndi.gaussian_filter(signal, blur_um / spacing)
    # Smooth uneven illumination: a low-frequency field between ~0.5 and 1.
    coarse = ndi.gaussian_filter(rng.normal(size=labels.shape), np.asarray(labels.shape) / 4.0)
    coarse = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-9)
    illumination = 0.5 + 0.5 * coarse
    expected = photons * (0.08 + signal * illumination)
    counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    counts += rng.normal(100.0, 6.0, size=labels.shape)  # camera offset + read noise
    return np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def nuclei_2d(
    shape: tuple[int, int] = (256, 256), n_objects: int = 40, seed: int = 0
) -> SyntheticSample:
    """A 2D nuclei-like fluorescence image with touching objects.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(Y, X)``.
    n_objects : int
        Objects to place (fewer when the image is too crowded).
    seed : int
        Random seed; the output depends only on the arguments.

    Returns
    -------
    SyntheticSample
        ``image`` ``(Y, X)`` uint16, ``labels`` ``(Y, X)`` int32, spacing ``(1, 1)``.
    """
    rng = np.random.default_rng(seed)
    spacing = np.ones(2)
    labels = _place_objects(tuple(shape), spacing, n_objects, (7.0, 14.0), rng)
    image = _render(labels, spacing, np.array([1.5, 1.5]), rng, photons=400.0)
    return SyntheticSample(image, labels, (1.0, 1.0), "seglab nuclei 2D")


def nuclei_3d(
    shape: tuple[int, int, int] = (32, 128, 128),
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    n_objects: int = 24,
    seed: int = 0,
) -> SyntheticSample:
    """An anisotropic 3D stack of nuclei, ``(Z, Y, X)``.

    Objects are ellipsoids with physical radii of 4–8 µm, so with the default
    ``(2, 0.5, 0.5)`` µm spacing they span few planes but many pixels. The blur
    is axially elongated (as a widefield/confocal PSF) and the signal fades
    with depth.

    Parameters
    ----------
    shape : (int, int, int)
        Stack shape ``(Z, Y, X)``.
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in µm.
    n_objects : int
        Objects to place.
    seed : int
        Random seed.

    Returns
    -------
    SyntheticSample
        ``image`` uint16 and ``labels`` int32 of ``shape``; ``spacing`` as given.
    """
    rng = np.random.default_rng(seed)
    spacing_arr = np.asarray(spacing, dtype=float)
    labels = _place_objects(tuple(shape), spacing_arr, n_objects, (4.0, 8.0), rng)
    image = _render(labels, spacing_arr, np.array([1.6, 0.6, 0.6]), rng, photons=300.0)
    depth = np.linspace(1.0, 0.6, shape[0])[:, None, None]
    image = (image.astype(np.float32) * depth).astype(np.uint16)
    return SyntheticSample(image, labels, tuple(float(s) for s in spacing), "seglab nuclei 3D")


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
