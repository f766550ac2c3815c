"""The ``"mask2former"`` model family: panoptic segmentation with Mask2Former (optional extra).

Mask2Former (Cheng et al., CVPR 2022) predicts a set of segments, each a mask
with a class, and gives semantic, instance and panoptic output from one
network. The network is Hugging Face ``transformers``'
``Mask2FormerForUniversalSegmentation`` (Apache-2.0) with a Swin backbone
built from a config: **randomly initialised, nothing is downloaded**. It is
an optional extra: ``pip install "napari-seglab[mask2former]"``.

Train it through the shared API, ``napari_seglab.unet.train(image, labels,
family="mask2former", network_kwargs={"things": [1, 2]})``, or
:func:`train` here (``things=`` directly). Labels are a class image (the
objects of thing classes are then its connected components) or
:class:`~.mask2former_data.PanopticLabels` (class and instance images); see
:mod:`.mask2former_data`. The network is 2D: 3D stacks train on their
annotated planes and predict plane by plane, an object keeping its id from
plane to plane where it overlaps its predecessor of the same class
(:func:`link_instances`, the linking of Mask R-CNN). Patch sides are
multiples of 32 (the Swin backbone's stride).
Every class, background (0) included, is a stuff class unless listed in
``things``; the validation score is the panoptic quality over the non-background
classes of a held-out strip.

:func:`predict_events` gives a :class:`~napari_seglab.unet.postprocess.Prediction`:
semantic ``probabilities`` ``(C, *spatial)`` (class probabilities of the
queries weighted by their masks), ``labels`` (class per pixel) and
``instances`` (ids from 1 for objects of thing classes, 0 on stuff), from
``transformers``' panoptic post-processing. From-scratch training needs many
annotations and, for useful sizes, a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import torch

from ..jobs import CancelCheck, ProgressEvent, Stopwatch, run_to_end
from . import mask2former_data as m2d
from .mask2former_data import PanopticLabels
from .mask2former_net import (
    INSTALL_HINT,
    KIND,
    MULTIPLE,
    Mask2FormerTask,
    build_network,
    mask2former_defaults,
    network_settings,
    predict_plane,
    require_transformers,
)

__all__ = [
    "INSTALL_HINT",
    "KIND",
    "MULTIPLE",
    "PanopticLabels",
    "build_network",
    "mask2former_defaults",
    "predict_events",
    "predict_plane",
    "train",
    "train_events",
]


def train_events(
    image,
    labels,
    *,
    family: str = "mask2former",
    spatial_dims: int | None = None,
    pretrained: bool = False,
    network_kwargs: dict | None = None,
    patch_size=None,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    learning_rate: float = 1e-3,
    ignore_label: int | None = None,
    validation_fraction: float = 0.2,
    augment: bool = True,
    intensity=None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    spacing=None,
    initial_model=None,
    device="auto",
    seed: int = 0,
    cancel=None,
    **unused: Any,
):
    """Train Mask2Former, yielding an :class:`~napari_seglab.training_loop.EpochEvent` per epoch.

    The keywords are those of :func:`napari_seglab.unet.training.train_events`
    (which hands ``family="mask2former"`` over to this job), with these
    differences:

    Parameters
    ----------
    labels : int array, PanopticLabels, or a list of them
        A class image ``(Y, X)`` / ``(Z, Y, X)`` (thing objects are then its
        connected components) or :class:`PanopticLabels` (class and instance
        images). A list pairs with a list of images.
    spatial_dims : {2, None}
        The network is 2D; 3D stacks train on their annotated planes.
    network_kwargs : dict, optional
        Overrides of :func:`mask2former_defaults`, e.g. ``{"things": [1, 2]}``.
    patch_size : (int, int), optional
        Crop size, multiples of 32; default the plane size rounded up, at most 256.
    batch_size, steps_per_epoch : int, optional
        Crops per step (default 2) and steps per epoch (default 16).
    validation_fraction : float
        Bottom share of each plane held out; the validation score (``"mean"``)
        is the panoptic quality of the non-background classes there.

    Returns
    -------
    SegmentationModel
        ``architecture == "mask2former"``, ``network_kwargs`` with ``things``;
        the best epoch's weights, on the CPU, in eval mode.

    Raises
    ------
    ImportError
        Without ``transformers`` (naming :data:`INSTALL_HINT`).
    ValueError
        Bad inputs or settings (``pretrained=True``, 3D networks, patch sides).
    JobCancelled
        With the best model so far as ``partial`` (None before the first epoch).
    """
    require_transformers()
    from ..device import resolve_device
    from ..training_loop import LoopSettings, train_to_model
    from ..unet.model import SegmentationModel

    given = sorted(k for k, v in unused.items() if v is not None and k != "architecture")
    if given:
        raise ValueError(
            f"{', '.join(given)}: not a setting of the 'mask2former' family "
            "(Swin backbone settings go in network_kwargs['backbone'])."
        )
    if pretrained:
        raise ValueError(
            "pretrained=True: the 'mask2former' family has no pinned, hash-checked pretrained "
            "weights; it trains from random initialisation (pretrained=False)."
        )
    if spatial_dims not in (None, 2):
        raise ValueError(
            f"The 'mask2former' family is 2D, got spatial_dims={spatial_dims}: 3D stacks train "
            "on their planes (spatial_dims=2 or None)."
        )
    if max_epochs is None and time_budget_s is None:
        max_epochs = 30
    settings = LoopSettings(
        learning_rate=learning_rate, max_epochs=max_epochs, time_budget_s=time_budget_s
    )
    settings.check()
    if initial_model is not None:
        kwargs = network_settings(initial_model.network_kwargs)
        intensity = intensity or initial_model.intensity
        rgb = initial_model.rgb if rgb is None else rgb
        channel_axis = initial_model.channel_axis if channel_axis is None else channel_axis
    else:
        kwargs = network_settings(network_kwargs)
    data = _prepare(image, labels, kwargs["things"], ignore_label, rgb, channel_axis, intensity)
    classes = data["classes"]
    if initial_model is not None and tuple(initial_model.classes) != classes:
        raise ValueError(
            f"The initial model predicts classes {list(initial_model.classes)} but the labels "
            f"hold classes {list(classes)}."
        )
    thing_index = [classes.index(t) for t in kwargs["things"] if t in classes]
    stuff_index = [i for i in range(len(classes)) if i not in thing_index]
    patch = _patch(patch_size, data["planes"])
    train_planes, val_planes = [], []
    for plane in data["planes"]:
        top, bottom = m2d.split_validation(plane, validation_fraction, MULTIPLE)
        train_planes.append(top)
        if bottom is not None:
            val_planes.append(bottom)
    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(2, data["in_channels"], len(classes), kwargs)
    if initial_model is not None:
        network.load_state_dict(initial_model.network.state_dict())
    network.to(device)
    task = Mask2FormerTask(
        network,
        train_planes,
        val_planes,
        patch,
        batch_size or 2,
        steps_per_epoch or 16,
        thing_index,
        stuff_index=stuff_index,
        device=device,
        augment=augment,
        seed=seed,
    )

    def finished(history: list[dict]):
        network.to("cpu").eval()
        return SegmentationModel(
            network=network,
            architecture="mask2former",
            network_kwargs=kwargs,
            spatial_dims=2,
            in_channels=data["in_channels"],
            classes=classes,
            patch_size=tuple(patch),
            intensity=data["recipe"],
            rgb=data["rgb"],
            channel_axis=data["channel_axis"],
            spacing=None if spacing is None else tuple(float(s) for s in spacing),
            slicewise=data["ndim"] == 3,
            history=list(history),
        )

    return (yield from train_to_model(task, settings, finished, device=device, cancel=cancel))


def train(image, labels, *, things=(), callback: Callable | None = None, **kwargs):
    """Train to the end; ``things`` goes into ``network_kwargs`` (see :func:`train_events`)."""
    network_kwargs = dict(kwargs.pop("network_kwargs", None) or {})
    network_kwargs["things"] = list(things)
    return run_to_end(
        train_events(image, labels, network_kwargs=network_kwargs, **kwargs), callback
    )


def predict_events(
    model,
    image,
    *,
    channel_axis: int | None = None,
    slicewise: bool | None = None,
    device="auto",
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    link_iou: float = 0.5,
    cancel=None,
    **unused: Any,
) -> Generator[ProgressEvent, None, Any]:
    """Panoptic prediction job: one event per plane, then a ``Prediction``.

    Parameters
    ----------
    model : SegmentationModel
        A ``"mask2former"`` model.
    image : array
        In the model's layout (:meth:`SegmentationModel.describe_input`); a 3D
        stack runs plane by plane (also with a model trained on 2D images,
        unless ``slicewise=False``). Not modified.
    score_threshold : float
        Queries whose class score is at most this are dropped.
    overlap_threshold : float
        A query keeps its segment only if at least this share of its mask is
        visible after overlaps are resolved (``transformers``'
        ``overlap_mask_area_threshold``).
    link_iou : float
        On a stack, an object keeps the id of the object of the same class on
        the plane before that it overlaps with at least this IoU
        (:func:`link_instances`, as Mask R-CNN links its planes).
    unused :
        Keywords of the other families' prediction (``overlap``, ``batch_size``,
        ``spacing``, ``min_size`` ...): not used here; ``tta`` or ``mc_dropout``
        set is a ``ValueError``.

    Returns
    -------
    Prediction
        ``probabilities`` ``(C, *spatial)`` float32, ``labels`` (class values,
        0 where no segment), ``instances`` int32 (objects of thing classes,
        ids from 1, linked across the planes of a stack).
    """
    require_transformers()
    from ..device import resolve_device
    from ..unet.postprocess import Prediction

    asked = [k for k in ("tta", "mc_dropout") if unused.get(k)]
    if asked:
        raise ValueError(
            f"{', '.join(asked)}: not available for the 'mask2former' family (its panoptic "
            "post-processing works on one forward pass)."
        )

    check = CancelCheck(cancel)
    clock = Stopwatch()
    # the network is 2D: a stack runs plane by plane unless slicewise=False is asked
    slicewise = True if slicewise is None else slicewise
    plane_by_plane = model.check_input(image, channel_axis=channel_axis, slicewise=slicewise)
    data = model.prepare_input(image, channel_axis=channel_axis)
    planes = [data[:, z] for z in range(data.shape[1])] if plane_by_plane else [data]
    device = resolve_device(device)
    network = model.network.to(device)
    things = network_settings(model.network_kwargs)["things"]
    thing_index = {model.classes.index(t) for t in things if t in model.classes}
    stuff_index = [i for i in range(len(model.classes)) if i not in thing_index]
    values = np.asarray(model.classes, dtype=np.int64)
    if not 0.0 < float(link_iou) <= 1.0:
        raise ValueError(f"Expected link_iou in (0, 1], got {link_iou!r}.")
    out_classes, out_instances, out_probs = [], [], []
    try:
        for done, plane in enumerate(planes):
            check.raise_if_set("Prediction")
            yield ProgressEvent("predicting", done, len(planes), clock.elapsed)
            index, instances, probs = predict_plane(
                network,
                plane,
                thing_index,
                stuff_index,
                device,
                score_threshold=score_threshold,
                overlap_threshold=overlap_threshold,
            )
            out_classes.append(np.where(index >= 0, values[np.maximum(index, 0)], 0))
            out_instances.append(instances)
            out_probs.append(probs)
    finally:
        model.network.to("cpu")
    check.raise_if_set("Prediction")
    yield ProgressEvent("predicting", len(planes), len(planes), clock.elapsed)
    if plane_by_plane:
        classes, probs = np.stack(out_classes), np.stack(out_probs, axis=1)
        instances = link_instances(classes, np.stack(out_instances), things, link_iou)
    else:
        classes, instances, probs = out_classes[0], out_instances[0], out_probs[0]
    return Prediction(
        probabilities=np.ascontiguousarray(probs, dtype=np.float32),
        labels=classes.astype(np.min_scalar_type(max(int(values.max()), 1))),
        instances=instances.astype(np.int32),
    )


def link_instances(
    classes: np.ndarray, instances: np.ndarray, things: Sequence[int], min_iou: float = 0.5
) -> np.ndarray:
    """Link per-plane object ids through a stack, class by class.

    Parameters
    ----------
    classes : array ``(Z, Y, X)``
        Class value per pixel.
    instances : array ``(Z, Y, X)`` int
        Object ids numbered per plane (0 none); each object has one class.
    things : sequence of int
        Class values whose objects are linked (other classes' ids are dropped).
    min_iou : float
        An object takes the id of the object of the same class on the plane
        before that it overlaps with at least this IoU
        (:func:`napari_seglab.sam.everything_labels.link_planes`); otherwise a new id.

    Returns
    -------
    array ``(Z, Y, X)`` int32
        Ids from 1, unique through the stack; the classes' ids follow each other
        (all ids of the first thing class, then the next).
    """
    from ..sam.everything_labels import link_planes

    out = np.zeros(instances.shape, np.int32)
    offset = 0
    for value in things:
        planes = [np.where((c == value) & (i > 0), i, 0) for c, i in zip(classes, instances)]
        records = [[{"id": int(v)} for v in np.unique(p) if v] for p in planes]
        if not any(records):
            continue
        linked, _ = link_planes(planes, records, min_iou=min_iou)
        out[linked > 0] = linked[linked > 0] + offset
        offset += int(linked.max())
    return out


def _prepare(image, labels, things, ignore_label, rgb, channel_axis, intensity) -> dict:
    """Check and normalise the training data; planes with encoded classes."""
    from ..imaging import IntensityRecipe, channels_first, check_finite
    from ..unet.data import infer_layout

    images = list(image) if isinstance(image, (list, tuple)) else [image]
    label_list = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if len(images) != len(label_list) or not images:
        raise ValueError(
            f"Expected as many label arrays as images (at least one), got {len(images)} "
            f"images and {len(label_list)} labels."
        )
    pairs = [
        (np.asarray(im), m2d.as_panoptic(lab, tuple(things), ignore_label))
        for im, lab in zip(images, label_list)
    ]
    layouts = set()
    for i, (im, lab) in enumerate(pairs):
        check_finite(im, what="image" if len(pairs) == 1 else f"image {i + 1} of {len(pairs)}")
        layouts.add(infer_layout(im.shape, lab.shape, rgb=rgb, channel_axis=channel_axis))
    if len(layouts) > 1:
        raise ValueError(f"All images must share one channel layout, got {sorted(layouts)}.")
    is_rgb, axis = layouts.pop()
    ndims = {lab.ndim for _, lab in pairs}
    if len(ndims) > 1:
        raise ValueError("Mixing 2D images and 3D stacks in one training set is not supported.")
    values = set()
    for _, lab in pairs:
        values.update(int(v) for v in np.unique(lab.classes))
    values.discard(ignore_label)
    values.add(0)
    classes = tuple(sorted(values))
    if len(classes) < 2:
        raise ValueError(
            f"The labels hold a single class ({classes[0]}); Mask2Former needs background and "
            "at least one class."
        )
    missing = sorted(set(things) - set(classes))
    if missing:
        raise ValueError(f"things {missing} do not occur in the labels (classes {list(classes)})")
    images_cf = [channels_first(im, rgb=is_rgb, channel_axis=axis) for im, _ in pairs]
    if len({im.shape[0] for im in images_cf}) > 1:
        raise ValueError("All images must have the same channel count.")
    recipe = IntensityRecipe.from_dict((intensity or IntensityRecipe("percentile")).to_dict())
    if not recipe.stats:
        recipe.fit(
            np.concatenate([im.reshape(-1)[:: max(im.size // 1_000_000, 1)] for im in images_cf])
        )

    def encode(image_cf, plane_labels):
        return m2d.encode_plane(image_cf, plane_labels, classes, ignore_label)

    planes = []
    for im, (_, lab) in zip(images_cf, pairs):
        planes.extend(m2d.training_planes(recipe.apply(im).astype(np.float32), lab, encode))
    if not planes:
        raise ValueError("The labels hold no annotated pixel.")
    return {
        "classes": classes,
        "planes": planes,
        "in_channels": images_cf[0].shape[0],
        "recipe": recipe,
        "rgb": is_rgb,
        "channel_axis": axis,
        "ndim": ndims.pop(),
    }


def _patch(patch_size, planes) -> tuple[int, int]:
    """The crop size: given (checked) or the largest plane rounded up to 32, at most 256."""
    if patch_size is not None:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 2 or any(p < MULTIPLE or p % MULTIPLE for p in patch):
            raise ValueError(
                f"patch_size: expected two multiples of {MULTIPLE} (Y, X), got {patch_size!r}"
            )
        return patch
    largest = np.max([p.classes.shape for p in planes], axis=0)
    return tuple(int(min(256, -(-int(s) // MULTIPLE) * MULTIPLE)) for s in largest)
