"""Refine hard label maps (semantic classes or instances) with the dense CRF.

Hard labels become soft unaries: a pixel keeps its label with probability
``confidence`` and spreads the rest over the other classes.

* ``mode="instance"``: each object is refined on its own, as object versus
  everything else, inside its bounding box plus a margin of two kernel widths.
  Memory and time follow the objects, not the volume. Results are combined so
  that no object ever takes a pixel another object keeps: a pixel an object
  gives up becomes background, and background pixels claimed by several
  objects go to the one with the highest marginal probability (a tie leaves
  background). Label values are never changed; an object the CRF empties
  is removed. The result does not depend on the order of the objects.
* ``mode="semantic"``: one multi-class CRF over the whole image (tiled for big
  volumes), one class per distinct label value (0 included).
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..jobs import CancelCheck, CancelLike, Stopwatch, run_to_end
from ._engine import CrfProgress, block_margin, tiled_crf
from ._features import IntensityScaler
from ._inputs import check_labels, check_spacing, image_channels, object_regions
from ._params import (
    DEFAULT_BILATERAL_WEIGHT,
    DEFAULT_INTENSITY_SIGMA,
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_BLOCK_VOXELS,
    DEFAULT_SMOOTHNESS_WEIGHT,
    CrfParameters,
)
from ._refine import class_dtype
from ._safety import verify_changes

#: Default probability that a pixel's given label is right.
DEFAULT_CONFIDENCE = 0.7
MODES = ("instance", "semantic")


def _check_confidence(confidence: float) -> float:
    if not 0.5 < float(confidence) < 1.0:
        raise ValueError(f"Expected 0.5 < confidence < 1, got {confidence!r}.")
    return float(confidence)


def _grow(sl: tuple[slice, ...], margin: tuple[int, ...], shape: tuple[int, ...]):
    return tuple(
        slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(sl, margin, shape)
    )


def _instance_steps(
    labels, channels, scaler, spacing, params, confidence, max_voxels, check, clock, verify
):
    shape = labels.shape
    margin = block_margin(params, spacing)
    objects = object_regions(labels)  # sparse ids (3e9, 2**40) need no list by the largest id
    out = labels.copy()
    claims: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    total = max(len(objects), 1) * params.iterations
    for index, (value, bbox) in enumerate(objects):
        crop = _grow(bbox, margin, shape)
        inside = labels[crop] == value
        foreground = np.where(inside, np.float32(confidence), np.float32(1.0 - confidence))
        probs = np.stack([1.0 - foreground, foreground])
        marginal = np.empty(inside.shape, dtype=np.float32)
        for event in tiled_crf(
            channels[(slice(None), *crop)],
            scaler,
            lambda read, probs=probs: probs[(slice(None), *read)],
            marginal,
            lambda q: q[1],
            spacing,
            params,
            max_block_voxels=max_voxels,
            cancel=check,
            clock=clock,
        ):
            done = index * params.iterations + round(event.done / event.total * params.iterations)
            yield CrfProgress(
                "refining",
                done,
                total,
                event.elapsed,
                message=f"object {value} ({index + 1}/{len(objects)}), {event.message}",
            )
        keep = marginal > 0.5
        if verify:  # undo what the image argues against, inside this object's crop
            intensities = scaler.apply(channels[(slice(None), *crop)])
            checked = verify_changes(
                keep.astype(np.uint8), inside.astype(np.uint8), intensities, spacing
            )
            keep = checked.astype(bool)
        out_crop = out[crop]
        out_crop[inside & ~keep] = 0
        wanted = keep & ~inside
        if wanted.any():
            local = np.nonzero(wanted)
            coords = tuple(c + s.start for c, s in zip(local, crop))
            claims.append(
                (
                    np.ravel_multi_index(coords, shape),
                    marginal[local],
                    np.full(local[0].size, value, dtype=labels.dtype),
                )
            )
    if claims:
        where, score, value = (np.concatenate(parts) for parts in zip(*claims))
        flat = out.reshape(-1)
        free = flat[where] == 0
        where, score, value = where[free], score[free], value[free]
        # Per pixel, the best claim wins; a tie between objects leaves background.
        order = np.lexsort((-score, where))
        where, score, value = where[order], score[order], value[order]
        first = np.ones(where.size, dtype=bool)
        first[1:] = where[1:] != where[:-1]
        tied = np.zeros(where.size, dtype=bool)
        tied[:-1] = ~first[1:] & (score[1:] == score[:-1])
        winner = first & ~tied
        flat[where[winner]] = value[winner].astype(out.dtype)
    return out


def _semantic_steps(
    labels, channels, scaler, spacing, params, confidence, max_voxels, check, clock, verify
):
    values = np.unique(labels)
    if values[0] != 0:
        values = np.concatenate([np.zeros(1, dtype=values.dtype), values])  # exact for uint64
    n_classes = values.size
    if n_classes == 1:
        return labels.copy()
    other = np.float32((1.0 - confidence) / (n_classes - 1))

    def probabilities_for(read):
        index = np.searchsorted(values, labels[read])
        probs = np.full((n_classes, *index.shape), other, dtype=np.float32)
        np.put_along_axis(probs, index[np.newaxis], np.float32(confidence), axis=0)
        return probs

    dtype = class_dtype(n_classes)
    classes = np.zeros(labels.shape, dtype=dtype)
    yield from tiled_crf(
        channels,
        scaler,
        probabilities_for,
        classes,
        lambda q: np.argmax(q, axis=0).astype(dtype),
        spacing,
        params,
        max_block_voxels=max_voxels,
        cancel=check,
        clock=clock,
    )
    if verify:
        given = np.searchsorted(values, labels).astype(dtype)
        verify_changes(classes, given, scaler.apply(channels), spacing)
    return values[classes]


def refine_labels_steps(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    mode: str = "instance",
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
    verify: bool = True,
    cancel: CancelLike = None,
) -> Generator[CrfProgress, None, np.ndarray]:
    """Generator form of :func:`refine_labels`: yields :class:`CrfProgress`, returns labels.

    A job in the sense of :mod:`napari_seglab.jobs`: ``cancel`` (a
    ``threading.Event`` or a callable returning True to stop) is checked before
    every mean-field iteration; when set, the generator raises
    :class:`~napari_seglab.jobs.JobCancelled`, returns nothing and leaves
    ``labels`` as it was.
    """
    clock = Stopwatch()
    check = CancelCheck(cancel)
    labels = check_labels(labels)
    if mode not in MODES:
        raise ValueError(f"Expected mode to be one of {MODES}, got {mode!r}.")
    confidence = _check_confidence(confidence)
    channels = image_channels(image, labels.shape, channel_axis)
    step_spacing = check_spacing(spacing, labels.ndim)
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
    run = _instance_steps if mode == "instance" else _semantic_steps
    result = yield from run(
        labels,
        channels,
        scaler,
        step_spacing,
        params,
        confidence,
        max_block_voxels,
        check,
        clock,
        verify,
    )
    return result


def refine_labels(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    mode: str = "instance",
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
    verify: bool = True,
) -> np.ndarray:
    """Refine a hard label map so that its boundaries follow the image's edges.

    Parameters
    ----------
    image : array
        Same layouts as :func:`refine`; spatial shape equal to ``labels``.
    labels : int array ``(Y, X)`` or ``(Z, Y, X)``
        0 is background. Instance labels (one value per object) or semantic
        classes. Not modified.
    confidence : float
        Probability, in ``(0.5, 1)``, that a pixel's given label is right;
        lower values let the image move boundaries further.
    mode : {"instance", "semantic"}
        ``"instance"`` refines each object inside its bounding box plus a
        margin (objects never merge, keep their values, may be removed when
        the CRF empties them); ``"semantic"`` runs one multi-class CRF.
    spacing, iterations, spatial_sigma, intensity_sigma, bilateral_weight, \
smoothness_sigma, smoothness_weight, channel_axis, intensity_range, max_block_voxels
        As in :func:`refine`.
    verify : bool
        As in :func:`refine`: a pixel's change (inside an object's crop in
        instance mode) is undone where its intensity is closer to its old
        class's local mean than to its new class's.

    Returns
    -------
    array, same shape and dtype as ``labels``
        Refined labels using only values present in ``labels``.
    """
    return run_to_end(
        refine_labels_steps(
            image,
            labels,
            confidence=confidence,
            mode=mode,
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
            verify=verify,
        )
    )
