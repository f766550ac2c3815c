"""Pairwise features of the dense CRF: positions and normalised intensities.

A Gaussian kernel over features ``f`` is ``exp(-|f_i - f_j|² / 2)``, so each
feature is the quantity divided by its kernel width: positions are
``index * spacing / sigma`` (physical units, so anisotropic voxels count
correctly) and intensities are ``normalised_intensity / intensity_sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging import percentile_range


@dataclass(frozen=True)
class IntensityScaler:
    """Per-channel linear map of raw intensities to ``[0, 1]`` (clipped).

    Fitted once on the whole image so that every tile and every object crop
    sees the same scale.

    Attributes
    ----------
    lo, hi : tuple of float
        Raw intensity mapped to 0 and 1, one value per channel.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        channels: np.ndarray,
        intensity_range: tuple[float, float] | None = None,
        percentiles: tuple[float, float] = (1.0, 99.8),
    ) -> IntensityScaler:
        """Fit on ``channels`` ``(C, *spatial)``.

        ``intensity_range`` (e.g. a CT window ``(level - width/2, level + width/2)``)
        applies to every channel; otherwise each channel's ``percentiles`` are used.
        """
        n = channels.shape[0]
        if intensity_range is not None:
            lo, hi = (float(v) for v in intensity_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(
                    f"Expected intensity_range (low, high) with low < high, got {intensity_range}."
                )
            return cls((lo,) * n, (hi,) * n)
        ranges = [percentile_range(channels[c], *percentiles) for c in range(n)]
        return cls(tuple(r[0] for r in ranges), tuple(r[1] for r in ranges))

    def apply(self, block: np.ndarray) -> np.ndarray:
        """``block`` ``(C, *spatial)`` as float32 in ``[0, 1]`` (a new array)."""
        out = np.array(block, dtype=np.float32)
        for c, (lo, hi) in enumerate(zip(self.lo, self.hi)):
            out[c] -= np.float32(lo)
            if hi > lo:
                out[c] /= np.float32(hi - lo)
            else:
                out[c] = 0.0
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(out, 0.0, 1.0, out=out)
        return out


def position_features(
    shape: tuple[int, ...], spacing: tuple[float, ...], sigma: float, extra: int = 0
) -> np.ndarray:
    """Scaled voxel positions, float32 ``(len(shape) + extra, *shape)``.

    Axis ``i`` holds ``index_i * spacing[i] / sigma``; ``extra`` uninitialised
    rows follow for the caller to fill (intensity features).
    """
    feats = np.empty((len(shape) + extra, *shape), dtype=np.float32)
    for axis, (n, step) in enumerate(zip(shape, spacing)):
        coords = np.arange(n, dtype=np.float32) * np.float32(step / sigma)
        view = [1] * len(shape)
        view[axis] = n
        feats[axis] = coords.reshape(view)
    return feats


def bilateral_features(
    intensities: np.ndarray,
    spacing: tuple[float, ...],
    spatial_sigma: float,
    intensity_sigma: float,
) -> np.ndarray:
    """Features of the appearance kernel, float32 ``(ndim + C, N)``, C-contiguous.

    Parameters
    ----------
    intensities : array, float32 ``(C, *spatial)``
        Normalised intensities in ``[0, 1]``.
    spacing : tuple of float
        Voxel size per spatial axis.
    spatial_sigma, intensity_sigma : float
        Kernel widths (physical units; normalised intensity).
    """
    shape = intensities.shape[1:]
    feats = position_features(shape, spacing, spatial_sigma, extra=intensities.shape[0])
    np.multiply(intensities, np.float32(1.0 / intensity_sigma), out=feats[len(shape) :])
    return feats.reshape(feats.shape[0], -1)


def gaussian_features(
    shape: tuple[int, ...], spacing: tuple[float, ...], sigma: float
) -> np.ndarray:
    """Features of the smoothness kernel, float32 ``(ndim, N)``, C-contiguous."""
    feats = position_features(shape, spacing, sigma)
    return feats.reshape(feats.shape[0], -1)
