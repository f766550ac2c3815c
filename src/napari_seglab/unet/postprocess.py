"""From class probabilities to labels and objects, one way for the widget and the CLI.

:func:`predict_and_split_events` is the U-Net's whole "predict" job: class
probabilities by sliding windows (:func:`~.inference.predict_events`), the
most probable class per pixel (:func:`probabilities_to_labels`) and,
optionally, the split of every class into objects (:func:`to_instances`).
The voxel size used for the split is chosen in one place,
:func:`instance_spacing`: the spacing of the predicted image when given
(a layer's ``scale``, ``seglab predict --spacing``), else the model's
training spacing when it has one value per axis, else unit voxels.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..jobs import CancelCheck, ProgressEvent, Stopwatch, run_to_end
from .model import SegmentationModel

__all__ = [
    "INSTANCE_METHODS",
    "Prediction",
    "instance_spacing",
    "predict_and_split",
    "predict_and_split_events",
    "probabilities_to_labels",
    "to_instances",
]

#: Choices of ``instances``: no split, connected components, watershed split.
INSTANCE_METHODS = ("none", "connected", "watershed")


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_and_split` returns.

    Attributes
    ----------
    probabilities : array ``(C, *spatial)`` float32
        Channel ``i`` is the probability of label value ``model.classes[i]``.
    labels : array ``(*spatial)`` unsigned int
        Most probable class per pixel, as label values.
    instances : array ``(*spatial)`` int32 or None
        Objects numbered from 1 (None without a split).
    spacing : tuple of float or None
        Voxel size the split used (None: unit voxels or no split).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    instances: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None


def instance_spacing(
    model: SegmentationModel, ndim: int, spacing: Sequence[float] | None = None
) -> tuple[float, ...] | None:
    """Voxel size for splitting ``ndim``-D labels predicted by ``model``.

    Parameters
    ----------
    model : SegmentationModel
    ndim : int
        Spatial axes of the labels (2 or 3).
    spacing : sequence of float, optional
        The predicted image's voxel size, spatial axes in order (extra leading
        values, e.g. of a time axis, are dropped).

    Returns
    -------
    tuple of float or None
        ``spacing`` if given, else the model's training spacing if it has
        ``ndim`` values, else None (unit voxels).
    """
    if spacing is not None:
        values = tuple(float(s) for s in spacing)
        if len(values) < ndim:
            raise ValueError(f"Expected {ndim} spacing values for {ndim}D labels, got {values}.")
        return values[-ndim:]
    if model.spacing is not None and len(model.spacing) == ndim:
        return tuple(float(s) for s in model.spacing)
    return None


def predict_and_split_events(
    model: SegmentationModel,
    image: np.ndarray,
    *,
    instances: str = "none",
    spacing: Sequence[float] | None = None,
    min_size: int = 0,
    cancel=None,
    **predict_kwargs,
) -> Generator[ProgressEvent, None, Prediction]:
    """Predict ``image`` and turn the probabilities into labels (and objects), as a job.

    Parameters
    ----------
    model : SegmentationModel
    image : array
        Layer data in the model's layout (see :func:`~.inference.predict`).
    instances : {"none", "connected", "watershed"}
        How to split the labels into objects (see :func:`to_instances`).
        Families with their own module (``"maskrcnn"``) predict the objects
        themselves: ``instances`` is then not used and the result always
        holds them.
    spacing : sequence of float, optional
        Voxel size of ``image``'s spatial axes (see :func:`instance_spacing`).
    min_size : int
        Objects with fewer pixels are dropped from the split.
    cancel : threading.Event or callable, optional
        Checked after each batch of windows and before post-processing.
    **predict_kwargs
        Passed to :func:`~.inference.predict` (``device``, ``overlap``, ``tta``...).

    Yields
    ------
    ProgressEvent
        :class:`~.inference.PredictionProgress` per batch of windows, then one
        ``"labels"`` event (and one ``"instances"`` event with a split).

    Returns
    -------
    Prediction

    Raises
    ------
    JobCancelled
        When ``cancel`` was set; nothing is returned.
    """
    from .families import family_module
    from .inference import predict_events

    module = family_module(model.architecture)
    if module is not None:  # instance/panoptic families predict their own objects
        return (
            yield from module.predict_events(
                model, image, spacing=spacing, min_size=min_size, cancel=cancel, **predict_kwargs
            )
        )
    if instances not in INSTANCE_METHODS:
        raise ValueError(f"Unknown instances {instances!r}: expected one of {INSTANCE_METHODS}.")
    check = CancelCheck(cancel)
    clock = Stopwatch()
    probabilities = yield from predict_events(model, image, cancel=check, **predict_kwargs)
    check.raise_if_set("Prediction")
    yield ProgressEvent("labels", 0, 1, clock.elapsed)
    labels = probabilities_to_labels(probabilities, model.classes)
    if instances == "none":
        return Prediction(probabilities, labels)
    check.raise_if_set("Prediction")
    used = instance_spacing(model, labels.ndim, spacing)
    yield ProgressEvent("instances", 0, 1, clock.elapsed)
    objects = to_instances(
        labels, method=instances, background=model.classes[0], spacing=used, min_size=min_size
    )
    return Prediction(probabilities, labels, objects, used)


def predict_and_split(model: SegmentationModel, image: np.ndarray, **kwargs) -> Prediction:
    """:func:`predict_and_split_events` run to the end (same arguments)."""
    return run_to_end(predict_and_split_events(model, image, **kwargs))


def probabilities_to_labels(
    probabilities: np.ndarray, classes: Sequence[int] | None = None, *, chunk: int = 16
) -> np.ndarray:
    """Most probable class per pixel, as label values.

    Parameters
    ----------
    probabilities : array, ``(C, *spatial)``
    classes : sequence of int, optional
        Label value of each channel (``model.classes``); default ``0..C-1``.
    chunk : int
        Planes per step along the first spatial axis (bounds the memory of the
        temporary argmax).

    Returns
    -------
    array, ``(*spatial)``, the smallest unsigned integer dtype holding the values
    """
    probs = np.asarray(probabilities)
    if probs.ndim < 2:
        raise ValueError(f"Expected probabilities (C, *spatial), got shape {probs.shape}.")
    values = np.arange(probs.shape[0]) if classes is None else np.asarray(classes)
    if len(values) != probs.shape[0]:
        raise ValueError(
            f"Expected {probs.shape[0]} class values (one per channel), got {len(values)}."
        )
    dtype = np.min_scalar_type(int(values.max())) if values.min() >= 0 else np.int32
    out = np.empty(probs.shape[1:], dtype=dtype)
    lut = values.astype(dtype)
    for start in range(0, probs.shape[1], max(int(chunk), 1)):
        part = slice(start, start + chunk)
        out[part] = lut[np.argmax(probs[:, part], axis=0)]
    return out


def to_instances(
    labels: np.ndarray,
    *,
    method: str = "watershed",
    background: int = 0,
    spacing: Sequence[float] | None = None,
    h: float | None = None,
    min_size: int = 0,
) -> np.ndarray:
    """Split semantic labels into instances (one id per object, 0 background).

    Parameters
    ----------
    labels : array, ``(Y, X)`` or ``(Z, Y, X)``
        Semantic labels; every value except ``background`` is a class.
    method : {"watershed", "connected"}
        ``connected``: connected components per class.
        ``watershed``: touching objects are split by a watershed on the
        distance transform, seeded at its regional maxima at least ``h`` deep
        (h-maxima, so flat ridges of elongated objects give one seed, not many).
    spacing : sequence of float, optional
        Voxel size (distances are physical, for anisotropic stacks).
    h : float, optional
        How much deeper (in the units of ``spacing``) than the saddle towards
        a neighbour a distance maximum must be to seed its own object; larger
        values merge more. Default: half the finest voxel size.
    min_size : int
        Objects with fewer pixels are removed.

    Returns
    -------
    array, same shape, int32
        Objects numbered from 1, class by class.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as connected
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"Expected 2D (Y, X) or 3D (Z, Y, X) labels, got shape {labels.shape}.")
    if method not in ("watershed", "connected"):
        raise ValueError(f"Unknown method {method!r}: expected 'watershed' or 'connected'.")
    sampling = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if sampling.shape != (labels.ndim,):
        raise ValueError(
            f"Expected {labels.ndim} spacing values for labels of shape {labels.shape}, "
            f"got {tuple(np.ravel(spacing))}."
        )
    out = np.zeros(labels.shape, dtype=np.int32)
    offset = 0
    for value in np.unique(labels):
        if value == background:
            continue
        mask = labels == value
        if method == "connected":
            objects = connected(mask, connectivity=1)
        else:
            distance = ndi.distance_transform_edt(mask, sampling=sampling)
            depth = 0.5 * float(sampling.min()) if h is None else float(h)
            markers = connected(h_maxima(distance, depth))
            objects = watershed(-distance, markers, mask=mask)
        if min_size > 0:  # drop objects with fewer than min_size pixels
            sizes = np.bincount(objects.ravel())
            too_small = sizes < min_size
            too_small[0] = False
            objects = np.where(too_small[objects], 0, objects)
        ids = objects > 0
        if ids.any():
            relabelled, count = _relabel_sequential(objects)
            out[ids] = relabelled[ids] + offset
            offset += count
    return out


def _relabel_sequential(objects: np.ndarray) -> tuple[np.ndarray, int]:
    from skimage.segmentation import relabel_sequential

    relabelled, _forward, _ = relabel_sequential(objects)
    return relabelled, int(relabelled.max())
