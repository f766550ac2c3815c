"""Refine class probabilities into labels that follow the image's edges."""

from __future__ import annotations

import math
import warnings
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
from ._safety import (
    WARN_CONFIDENCE,
    confident_change_fraction,
    keep_confident_pixels,
    restore_objects,
    verify_changes,
)

#: Default input probability at or above which a pixel keeps its input class (None: off;
#: measured in ``docs/crf.md``: no safer once changes are verified, and it costs gains).
DEFAULT_KEEP_CONFIDENT = None
#: Default fraction of confident input pixels the CRF may change before a warning.
DEFAULT_WARN_FRACTION = 0.03


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
    keep_confident: float | None = DEFAULT_KEEP_CONFIDENT,
    keep_objects: bool = True,
    verify: bool = True,
    warn_fraction: float | None = DEFAULT_WARN_FRACTION,
    cancel: CancelLike = None,
) -> Generator[CrfProgress, None, np.ndarray]:
    """Generator form of :func:`refine`: yields :class:`CrfProgress`, returns the labels.

    A job in the sense of :mod:`napari_seglab.jobs`. Inputs are validated
    before the first event is yielded (on the first ``next``). ``cancel`` (a
    ``threading.Event`` or a callable returning True to stop) is checked before
    every mean-field iteration; when set, the generator raises
    :class:`~napari_seglab.jobs.JobCancelled` and nothing is returned.
    A warning (``RuntimeWarning``) is issued before the result is returned when
    the CRF changed more than ``warn_fraction`` of the confident input pixels.
    """
    clock = Stopwatch()
    check = CancelCheck(cancel)
    probs = check_probabilities(probabilities)
    spatial = probs.shape[1:]
    channels = image_channels(image, spatial, channel_axis)
    step_spacing = check_spacing(spacing, len(spatial))
    _check_fraction("keep_confident", keep_confident, 0.5)
    _check_fraction("warn_fraction", warn_fraction, 0.0)
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
    intensities = scaler.apply(channels) if verify else None
    _guard(labels, probs, intensities, step_spacing, keep_confident, keep_objects, warn_fraction)
    return labels


def _check_fraction(name: str, value: float | None, low: float) -> None:
    if value is not None and not (math.isfinite(value) and low <= value <= 1.0):
        raise ValueError(f"Expected {name} in [{low:g}, 1] or None, got {value!r}.")


def input_classes(probs: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The input's class (``argmax``, ties to the lower class) and confidence per pixel.

    Parameters
    ----------
    probs : float32 array ``(K, *spatial)``, ``K >= 2``
    dtype : numpy dtype of the class map

    Returns
    -------
    given : array ``(*spatial)`` of ``dtype``
    confidence : float32 array ``(*spatial)``, the largest probability
    """
    if probs.shape[0] == 2:
        given = (probs[1] > probs[0]).astype(dtype)  # argmax, ties to class 0
    else:
        given = np.argmax(probs, axis=0).astype(dtype)
    return given, probs.max(axis=0)


def warn_if_changed(changed: float, warn_fraction: float | None, keep_confident_at) -> None:
    """The ``RuntimeWarning`` of :func:`refine` when ``changed`` exceeds ``warn_fraction``."""
    if warn_fraction is None or changed <= warn_fraction:
        return
    kept = (
        f" (pixels at or above keep_confident={keep_confident_at:g} kept their class)"
        if keep_confident_at is not None
        else ""
    )
    warnings.warn(
        f"CRF refinement changed {100 * changed:.1f} % of the pixels whose input "
        f"probability is at least {WARN_CONFIDENCE:g} (more than warn_fraction="
        f"{warn_fraction:g}){kept}. Check that the image and the probabilities are "
        "aligned; otherwise lower bilateral_weight and smoothness_weight.",
        RuntimeWarning,
        stacklevel=3,
    )


def _guard(
    labels, probs, intensities, spacing, keep_confident_at, keep_objects, warn_fraction
) -> None:
    """Apply the no-harm guards of :mod:`._safety` to ``labels`` (in place) and warn.

    ``intensities`` (normalised channels) is ``None`` when changes are not verified.
    """
    if (
        keep_confident_at is None
        and not keep_objects
        and warn_fraction is None
        and intensities is None
    ):
        return
    given, confidence = input_classes(probs, labels.dtype)
    if warn_fraction is not None:
        changed = confident_change_fraction(labels, given, confidence)
        warn_if_changed(changed, warn_fraction, keep_confident_at)
    if intensities is not None:
        verify_changes(labels, given, intensities, spacing)
    if keep_objects:
        restore_objects(labels, given, spacing)
    if keep_confident_at is not None:
        keep_confident_pixels(labels, given, confidence, keep_confident_at)


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
    keep_confident: float | None = DEFAULT_KEEP_CONFIDENT,
    keep_objects: bool = True,
    verify: bool = True,
    warn_fraction: float | None = DEFAULT_WARN_FRACTION,
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
    keep_confident : float or None
        Pixels whose largest input probability is at least this keep their
        input class (``argmax`` of ``probabilities``); in ``[0.5, 1]``. ``None``
        (default) lets the CRF change every pixel (changes are still verified).
    keep_objects : bool
        Class 0 is background. An object of the input (a connected region of
        one other class, ``argmax`` of ``probabilities``) whose core (pixels at
        least 2 finest voxels from its edge) the CRF would mostly remove (more
        than half of it) is kept as the input had it: the CRF may move an
        object's edge, not erase it. Specks without a core (noise) may still go.
    verify : bool
        Undo a change where the image argues against it: where the pixel's
        intensity is closer to its input class's local mean than to its new
        class's (means of the refined classes in a box reaching 30 finest
        voxels; a tie keeps the change).
        Stops the CRF from shrinking an object into its own interior; needs
        about 32 bytes per voxel (greyscale) while it runs, after the CRF.
    warn_fraction : float or None
        Issue a ``RuntimeWarning`` when the CRF's own result differs from the
        input's class on more than this fraction of the pixels whose largest
        input probability is at least 0.9 (before ``keep_confident`` applies):
        a sign of misaligned inputs or too strong kernels. ``None``: no check.

    Returns
    -------
    array, same spatial shape, uint8 (int32 for more than 256 classes)
        Index of the most probable class per pixel (0 for the first class).

    Notes
    -----
    The defaults were chosen so that refinement does not lower the Dice of
    degraded maps of real images by more than 0.02 while still correcting
    maps that are too large (the table in ``docs/crf.md``). Pass
    ``keep_confident=None, keep_objects=False, verify=False`` and
    ``spatial_sigma`` for the plain dense CRF.
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
            keep_confident=keep_confident,
            keep_objects=keep_objects,
            verify=verify,
            warn_fraction=warn_fraction,
        )
    )
