"""Turning image/label layers into MONAI training data.

Steps, each a small function:

1. :func:`as_pairs` accepts one ``(image, labels)`` pair or lists of them.
2. :func:`infer_layout` works out RGB / channel axis from the shapes.
3. :func:`find_classes` reads the class values from the labels (the ignore
   value excluded) and rejects empty or single-class annotations.
4. :func:`encode_labels` maps label values to class indices ``0..K-1``;
   ignored (unannotated) pixels and padding become ``K`` (:data:`IGNORE`
   offset), which the loss and the patch sampler skip.
5. :func:`split_validation` holds out the labels of the end of the longest axis.
6. :func:`prepare_sample` pads small images (``SpatialPadd``) and indexes the
   voxels of each class (``ClassesToIndicesd``) once;
   :func:`training_transforms` samples patches centred on every annotated
   class (``RandCropByLabelClassesd``) and augments them in 2D or 3D;
   :func:`untracked_batches` runs that pipeline without MONAI's metadata tracking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass

import numpy as np

#: Most distinct label values treated as classes; more usually means instance labels.
MAX_CLASSES = 16
#: Largest number of voxel indices kept per class for patch sampling.
MAX_SAMPLES_PER_CLASS = 200_000


@dataclass
class PreparedPair:
    """One training image with its encoded target.

    Attributes
    ----------
    image : array, ``(C, *spatial)`` float32
        Normalised network input.
    target : array, ``(1, *spatial)`` float32
        Class index per pixel, ``num_classes`` where the loss must not look.
    """

    image: np.ndarray
    target: np.ndarray


def as_pairs(image, labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalise the ``image``/``labels`` arguments to a list of pairs."""
    if isinstance(image, (list, tuple)) or isinstance(labels, (list, tuple)):
        if not (isinstance(image, (list, tuple)) and isinstance(labels, (list, tuple))):
            raise ValueError(
                "Pass either one image and one labels array, or two lists of the same length; "
                f"got {type(image).__name__} and {type(labels).__name__}."
            )
        if len(image) != len(labels) or not image:
            raise ValueError(
                f"Expected as many label arrays as images (at least one), got {len(image)} "
                f"images and {len(labels)} label arrays."
            )
        return [(np.asarray(i), np.asarray(lab)) for i, lab in zip(image, labels)]
    return [(np.asarray(image), np.asarray(labels))]


def infer_layout(
    image_shape: Sequence[int],
    labels_shape: Sequence[int],
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
) -> tuple[bool, int | None]:
    """Decide how the image's axes relate to the labels' axes.

    Returns
    -------
    rgb : bool
        The image's last axis is RGB(A) colour.
    channel_axis : int or None
        Axis of the image holding channels (non-RGB multi-channel data).

    Raises
    ------
    ValueError
        If the spatial shapes of image and labels cannot be matched.
    """
    image_shape, labels_shape = tuple(image_shape), tuple(labels_shape)
    if len(labels_shape) not in (2, 3):
        raise ValueError(
            f"Expected 2D (Y, X) or 3D (Z, Y, X) labels, got labels of shape {labels_shape}."
        )
    if channel_axis is not None:
        rest = list(image_shape)
        if not -len(rest) <= channel_axis < len(rest):
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {image_shape}."
            )
        del rest[channel_axis]
        if tuple(rest) != labels_shape:
            raise ValueError(
                f"Image of shape {image_shape} without channel axis {channel_axis} does not match "
                f"labels of shape {labels_shape}."
            )
        return False, channel_axis % len(image_shape)
    if image_shape == labels_shape and not rgb:
        return False, None
    if rgb is not False and image_shape[:-1] == labels_shape and image_shape[-1] in (3, 4):
        return True, None
    if rgb is not True and image_shape[1:] == labels_shape:
        return False, 0
    raise ValueError(
        f"Image of shape {image_shape} does not match labels of shape {labels_shape}: expected "
        "the same spatial shape, optionally with a trailing RGB axis or a leading channel axis."
    )


class TooManyClasses(ValueError):
    """The labels hold more distinct values than classes; probably instance labels.

    Front ends catch it to name their own way of training on ``labels > 0``
    (the widget's checkbox, ``seglab train --binary``).
    """


def find_classes(labels: Sequence[np.ndarray], ignore_label: int | None = None) -> tuple[int, ...]:
    """Sorted label values that act as classes (``ignore_label`` excluded).

    Raises
    ------
    ValueError
        If no pixel is annotated, only one class is present, or there are more
        than :data:`MAX_CLASSES` values (probably instance labels).
    """
    values: set[int] = set()
    for lab in labels:
        if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
            raise ValueError(f"Expected integer labels, got dtype {lab.dtype}.")
        values.update(int(v) for v in np.unique(lab))
    if ignore_label is not None:
        values.discard(int(ignore_label))
    classes = tuple(sorted(values))
    if not classes:
        raise ValueError(
            f"The labels hold no annotated pixels: every pixel has the ignore value "
            f"{ignore_label}. Paint at least two classes (for example background and object)."
        )
    if len(classes) == 1:
        ignore = "" if ignore_label is None else f" (ignore value {ignore_label} excluded)"
        raise ValueError(
            f"The labels hold a single class (value {classes[0]}){ignore}; training needs at "
            "least two classes, for example background 0 and objects 1."
        )
    if len(classes) > MAX_CLASSES:
        raise TooManyClasses(
            f"The labels hold {len(classes)} distinct values, expected at most {MAX_CLASSES} "
            "classes. For instance labels (one value per object) train on `labels > 0`."
        )
    return classes


def encode_labels(
    labels: np.ndarray, classes: Sequence[int], ignore_label: int | None = None
) -> np.ndarray:
    """Map label values to class indices; ignored pixels become ``len(classes)``.

    Returns
    -------
    array, same shape as ``labels``, uint8
    """
    classes_arr = np.asarray(classes)
    index = np.searchsorted(classes_arr, labels).astype(np.uint8)
    valid = np.isin(labels, classes_arr)
    index[~valid] = len(classes)
    if ignore_label is None and not valid.all():  # pragma: no cover - classes come from labels
        raise ValueError("Labels hold values that are not classes.")
    return index


def split_validation(
    pair: PreparedPair, fraction: float, num_classes: int, patch_size: Sequence[int]
) -> tuple[PreparedPair, PreparedPair | None]:
    """Hold out the labels of the last ``fraction`` of the longest spatial axis.

    The training pair keeps the whole image (context for patches near the
    cut) but its held-out labels become the ignore index. The validation pair
    is the held-out region plus half a patch of context before the cut (the
    context pixels are ignored when scoring), so that windows see real
    neighbours rather than padding.

    The split is kept only when the training part still holds every class and
    the held-out part holds annotated foreground; otherwise everything trains
    and ``None`` is returned for validation.
    """
    if fraction <= 0:
        return pair, None
    if fraction >= 1:
        raise ValueError(f"Expected 0 <= validation_fraction < 1, got {fraction}.")
    spatial = pair.target.shape[1:]
    axis = int(np.argmax(spatial))
    cut = round(spatial[axis] * (1.0 - fraction))
    if cut <= 0 or cut >= spatial[axis]:
        return pair, None
    ignore = num_classes

    def region(start: int, stop: int | None) -> tuple[slice, ...]:
        index = [slice(None)] * (len(spatial) + 1)
        index[axis + 1] = slice(start, stop)
        return tuple(index)

    held_out = pair.target[region(cut, None)]
    kept = pair.target[region(0, cut)]
    kept_present = set(np.unique(kept).tolist())
    held_present = set(np.unique(held_out).tolist())
    if not set(range(num_classes)) <= kept_present or not (held_present - {0, ignore}):
        return pair, None
    train_target = pair.target.copy()
    train_target[region(cut, None)] = ignore
    start = max(cut - int(patch_size[axis]) // 2, 0)
    val_target = pair.target[region(start, None)].copy()
    val_target[region(0, cut - start)] = ignore
    train = PreparedPair(pair.image, train_target)
    val = PreparedPair(pair.image[region(start, None)], val_target)
    return train, val


def sampling_ratios(pairs: Sequence[PreparedPair], num_classes: int) -> list[float]:
    """Equal patch-centre probability for each class present; none for ignored pixels."""
    present = set()
    for pair in pairs:
        present.update(np.unique(pair.target).tolist())
    return [1.0 if c in present else 0.0 for c in range(num_classes)] + [0.0]


def training_transforms(
    patch_size: Sequence[int],
    num_classes: int,
    *,
    num_samples: int,
    augment: bool = True,
    ratios: Sequence[float] | None = None,
):
    """MONAI pipeline from a data dict to ``num_samples`` augmented patches.

    The input dict comes from :func:`prepare_sample` (padded to at least the
    patch size, class indices precomputed). Patch centres are drawn per class with
    ``ratios`` (the ignore index ``num_classes`` gets 0).

    Augmentations (``augment=True``), for 2D and 3D alike: flips on every axis,
    90° rotations in the (Y, X) plane when the patch is square there, a small
    random affine (rotation, scaling), elastic deformation (2D), intensity
    scaling/shift, gamma and Gaussian noise.

    Returns
    -------
    monai.transforms.Compose
    """
    from monai import transforms as mt

    patch = tuple(int(p) for p in patch_size)
    ndim = len(patch)
    keys = ["image", "label"]
    steps = [
        _label_class_crops(
            keys=keys,
            label_key="label",
            spatial_size=patch,
            ratios=list(ratios) if ratios is not None else [1.0] * num_classes + [0.0],
            num_classes=num_classes + 1,
            num_samples=num_samples,
            indices_key="label_cls_indices",
            warn=False,
        ),
    ]
    if augment:
        steps += [mt.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(ndim)]
        if patch[-1] == patch[-2]:
            steps.append(mt.RandRotate90d(keys=keys, prob=0.5, spatial_axes=(ndim - 2, ndim - 1)))
        rotate = (0.0, 0.0, np.pi / 12) if ndim == 3 else np.pi / 12
        steps.append(
            mt.RandAffined(
                keys=keys,
                prob=0.2,
                rotate_range=rotate,
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="reflection",
            )
        )
        if ndim == 2:
            steps.append(
                mt.Rand2DElasticd(
                    keys=keys,
                    spacing=max(patch) // 4,
                    magnitude_range=(0.5, 2.0),
                    prob=0.1,
                    mode=("bilinear", "nearest"),
                    padding_mode="reflection",
                )
            )
        steps += [
            mt.RandScaleIntensityd(keys=["image"], factors=0.15, prob=0.5),
            mt.RandShiftIntensityd(keys=["image"], offsets=0.1, prob=0.5),
            mt.RandAdjustContrastd(keys=["image"], gamma=(0.8, 1.25), prob=0.2),
            mt.RandGaussianNoised(keys=["image"], std=0.03, prob=0.2),
        ]
    return mt.Compose(steps)


def _label_class_crops(**kwargs):
    """``RandCropByLabelClassesd`` that slices tensors directly when metadata tracking is off.

    The centres come from MONAI's own ``randomize`` (same random draws); the
    window is MONAI's (``SpatialCrop`` with ``roi_center``: start
    ``max(centre - size // 2, 0)``), cut by plain indexing instead of one
    ``SpatialCrop`` per patch. With tracking on (or lazy) it is MONAI's transform.
    """
    from monai.data import get_track_meta
    from monai.transforms import RandCropByLabelClassesd
    from monai.utils import convert_to_tensor, fall_back_tuple

    class LabelClassCrops(RandCropByLabelClassesd):
        def __call__(self, data, lazy=None):
            if get_track_meta() or lazy or self.lazy:
                return super().__call__(data, lazy)
            d = dict(data)
            self.randomize(
                d.get(self.label_key), d.pop(self.indices_key, None), d.get(self.image_key)
            )
            out = [dict(d) for _ in range(self.cropper.num_samples)]
            for i in range(self.cropper.num_samples):
                for key in set(d).difference(self.keys):
                    out[i][key] = deepcopy(d[key])
            for key in self.key_iterator(d):
                img = convert_to_tensor(d[key], track_meta=False)
                size = fall_back_tuple(self.cropper.spatial_size, default=img.shape[1:])
                for i, centre in enumerate(self.cropper.centers):
                    starts = [max(int(c) - s // 2, 0) for c, s in zip(centre, size)]
                    window = tuple(slice(a, a + s) for a, s in zip(starts, size))
                    out[i][key] = img[(slice(None), *window)]
            return out

    return LabelClassCrops(**kwargs)


def prepare_sample(pair: PreparedPair, patch_size: Sequence[int], num_classes: int) -> dict:
    """Deterministic part of the pipeline, run once per training image.

    Pads image (zeros) and target (ignore index) up to ``patch_size`` with
    ``SpatialPadd`` and precomputes the voxel indices of every class with
    ``ClassesToIndicesd`` (capped at :data:`MAX_SAMPLES_PER_CLASS`).

    Returns
    -------
    dict
        ``image`` ``(C, *spatial)`` and ``label`` ``(1, *spatial)`` float32
        tensors, ``label_cls_indices`` list of int64 numpy arrays of flat indices.
    """
    import torch
    from monai import transforms as mt

    patch = tuple(int(p) for p in patch_size)
    pipeline = mt.Compose(
        [
            mt.SpatialPadd(keys=["image"], spatial_size=patch, mode="constant", value=0.0),
            mt.SpatialPadd(keys=["label"], spatial_size=patch, mode="constant", value=num_classes),
            mt.ClassesToIndicesd(
                keys="label",
                num_classes=num_classes + 1,
                max_samples_per_class=MAX_SAMPLES_PER_CLASS,
            ),
        ]
    )
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(pair.image, dtype=np.float32)),
        "label": torch.from_numpy(np.ascontiguousarray(pair.target, dtype=np.float32)),
    }
    out = pipeline(sample)
    # numpy indices: MONAI draws the same centres from them, 8x faster than from tensors
    out["label_cls_indices"] = [np.asarray(i) for i in out["label_cls_indices"]]
    return out


def untracked_batches(loader: Iterable[dict]) -> Iterator[dict]:
    """Iterate ``loader`` with MONAI's metadata tracking off while each batch is made.

    MONAI transforms turn tensors into ``MetaTensor`` and record an affine and
    the applied operations per patch; training reads only the arrays, and on
    small networks that bookkeeping costs about as much as cropping (it made
    U-Net training on the CPU about 20 % slower than a plain loop). The
    arrays are the same either way (same random draws, same values).

    ``monai.data.set_track_meta`` is process-global: it is switched off only
    inside each ``next()`` on the loader and restored before the batch is
    handed out, so code running between steps sees the setting it had. (With
    a ``num_workers=0`` loader the transforms run in this thread; MONAI code
    running in another thread during a fetch would see the setting off.)

    Yields
    ------
    dict
        The loader's batches; their tensors are plain ``torch.Tensor`` where the
        transforms made them (``MetaTensor`` inputs passed through untouched may remain).
    """
    from monai.data import get_track_meta, set_track_meta

    end = object()
    iterator = None
    while True:
        previous = get_track_meta()
        set_track_meta(False)
        try:
            if iterator is None:
                iterator = iter(loader)
            batch = next(iterator, end)
        finally:
            set_track_meta(previous)
        if batch is end:
            return
        yield batch
