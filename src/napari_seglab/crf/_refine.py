"""Refine class probabilities into labels that follow the image's edges."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..jobs import CancelCheck, CancelLike, Stopwatch, run_to_end
from ._engine import CrfProgress, tiled_crf
from ._features import IntensityScaler
from ._inputs import check_probabilities, check_spacing, image_channels
from ._params import (
    DEFAULT_BILATERAL_WEIGHT,
    DEFAULT_INTENSITY_SIGMA,
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_BLOCK_VOXELS,
    DEFAULT_SMOOTHNESS_WEIGHT,
    CrfParameters,
)


def class_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding class indices ``0 .. n_classes - 1``."""
    return np.dtype(np.uint8) if n_classes <= 256 else np.dtype(np.int32)


def refine_steps(
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    spatial_sigma: float | None = None,
    intensity_sigma: float = DEFAULT_INTENSITY_SIGMA,
    bilateral_weight: float = DEFAULT_BILATERAL_WEIGHT,
    smoothness_sigma: float | None = None,
    smoothness_weight: float = DEFAULT_SMOOTHNESS_WEIGHT,
    channel_axis: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    max_block_voxels: int = DEFAULT_MAX_BLOCK_VOXELS,
    cancel: CancelLike = None,
) -> Generator[CrfProgress, None, np.ndarray]:
    """Generator form of :func:`refine`: yields :class:`CrfProgress`, returns the labels.

    A job in the sense of :mod:`napari_seglab.jobs`. Inputs are validated
    before the first event is yielded (on the first ``next``). ``cancel`` (a
    ``threading.Event`` or a callable returning True to stop) is checked before
    every mean-field iteration; when set, the generator raises
    :class:`~napari_seglab.jobs.JobCancelled` and nothing is returned.
    """
    clock = Stopwatch()
    check = CancelCheck(cancel)
    probs = check_probabilities(probabilities)
    spatial = probs.shape[1:]
    channels = image_channels(image, spatial, channel_axis)
    step_spacing = check_spacing(spacing, len(spatial))
    params = CrfParameters(
        iterations=iterations,
        spatial_sigma=spatial_sigma,
        intensity_sigma=intensity_sigma,
        bilateral_weight=bilateral_weight,
        smoothness_sigma=smoothness_sigma,
        smoothness_weight=smoothness_weight,
    ).resolved(step_spacing)
    scaler = IntensityScaler.fit(channels, intensity_range)
    check.raise_if_set("CRF refinement")
    dtype = class_dtype(probs.shape[0])
    labels = np.zeros(spatial, dtype=dtype)
    yield from tiled_crf(
        channels,
        scaler,
        lambda read: probs[(slice(None), *read)],
        labels,
        lambda marginals: np.argmax(marginals, axis=0).astype(dtype),
        step_spacing,
        params,
        max_block_voxels=max_block_voxels,
        cancel=check,
        clock=clock,
    )
    return labels


def refine(
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    spatial_sigma: float | None = None,
    intensity_sigma: float = DEFAULT_INTENSITY_SIGMA,
    bilateral_weight: float = DEFAULT_BILATERAL_WEIGHT,
    smoothness_sigma: float | None = None,
    smoothness_weight: float = DEFAULT_SMOOTHNESS_WEIGHT,
    channel_axis: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    max_block_voxels: int = DEFAULT_MAX_BLOCK_VOXELS,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF.

    Parameters
    ----------
    image : array
        ``(Y, X)`` or ``(Z, Y, X)`` greyscale, ``(..., C)`` RGB / channels last,
        or ``(C, ...)`` channels first (or name ``channel_axis``); spatial shape
        equal to that of ``probabilities``. Intensities are scaled per channel to
        ``[0, 1]`` between the 1st and 99.8th percentile (or ``intensity_range``).
    probabilities : array ``(K, Y, X)`` or ``(K, Z, Y, X)``
        Per-class probabilities (softmax output, summing to 1 per pixel), or one
        foreground channel ``(1, ...)`` treated as binary.
    spacing : tuple of float, optional
        Voxel size ``(y, x)`` or ``(z, y, x)`` (napari layer ``scale``); all
        kernel widths are in the same physical unit. Default: 1 per axis.
    iterations : int
        Mean-field iterations.
    spatial_sigma : float, optional
        Bilateral kernel width (physical units); default 5 × the finest voxel size.
    intensity_sigma : float
        Bilateral intensity width on the normalised ``[0, 1]`` scale.
    bilateral_weight : float
        Strength of the bilateral (edge-following) kernel.
    smoothness_sigma : float, optional
        Smoothness kernel width (physical units); default 1 × the finest voxel size.
    smoothness_weight : float
        Strength of the smoothness kernel.
    channel_axis : int, optional
        Axis of ``image`` holding channels, when the layout is ambiguous.
    intensity_range : (float, float), optional
        Raw intensities mapped to 0 and 1, e.g. a CT window
        ``(level - width / 2, level + width / 2)``.
    max_block_voxels : int
        Largest block (overlap included) given to one dense CRF; bigger inputs
        are tiled with an overlap of two kernel widths. Peak memory is about
        240 bytes per block voxel for two classes (measured), on top of the inputs.

    Returns
    -------
    array, same spatial shape, uint8 (int32 for more than 256 classes)
        Index of the most probable class per pixel (0 for the first class).
    """
    return run_to_end(
        refine_steps(
            image,
            probabilities,
            spacing=spacing,
            iterations=iterations,
            spatial_sigma=spatial_sigma,
            intensity_sigma=intensity_sigma,
            bilateral_weight=bilateral_weight,
            smoothness_sigma=smoothness_sigma,
            smoothness_weight=smoothness_weight,
            channel_axis=channel_axis,
            intensity_range=intensity_range,
            max_block_voxels=max_block_voxels,
        )
    )
