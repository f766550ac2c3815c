"""The ``"maskrcnn"`` model family: torchvision Mask R-CNN in the train/predict/save/load API.

Mask R-CNN detects objects and predicts a mask per object, so touching
objects come out as separate ids without a watershed step. It trains on an
*instance* label image (one id per object, 0 background) and predicts one;
it is 2D: a 3D stack trains on its annotated planes (planes holding at
least one object) and is predicted plane by plane with ids linked across
planes (:mod:`.maskrcnn_predict`). Every object in a trained plane must be
labelled: an unlabelled object teaches the network "background".

This module is a family module of :mod:`napari_seglab.unet.families`:
``napari_seglab.unet.train(image, labels, family="maskrcnn", ...)`` hands
over to :func:`train_events` here, and the model it returns is a
:class:`~napari_seglab.unet.SegmentationModel` (``architecture ==
"maskrcnn"``, classes ``(0, 1)``, ``patch_size`` the training crop), saved
and loaded like every family's (``torch.load(weights_only=True)``).
``predict_and_split`` returns its instance labels, ``predict`` the object
probability.

Training uses the shared :func:`napari_seglab.training_loop.training_loop`
(AdamW, time budget, epochs, cancel, best epoch), on random crops with
per-object targets (:mod:`.maskrcnn_data`); the validation score is the F1
at IoU 0.5 of the objects predicted on a held-out strip
(:func:`napari_seglab.metrics.instances`). From-scratch training needs many
annotated objects and, for real images, a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Sequence

import numpy as np

from ..training_loop import EpochEvent, LoopSettings, train_to_model
from .maskrcnn_data import CropSampler, InstancePlane, instance_planes, split_plane
from .maskrcnn_net import build_maskrcnn, maskrcnn_settings
from .maskrcnn_predict import detect_planes, predict_events

__all__ = ["KIND", "MaskRcnnTask", "build_network", "predict_events", "train_events"]

#: What prediction gives (see :mod:`napari_seglab.unet.families`).
KIND = "instance"
#: Epochs when neither ``max_epochs`` nor ``time_budget_s`` is given.
DEFAULT_MAX_EPOCHS = 30
#: Largest default training crop side.
DEFAULT_CROP = 256


def build_network(spatial_dims: int, in_channels: int, out_channels: int, kwargs: dict):
    """The family hook: a random Mask R-CNN (2D only; ``out_channels`` counts background)."""
    if int(spatial_dims) != 2:
        raise ValueError(
            f"The 'maskrcnn' family is 2D, got spatial_dims={spatial_dims}: stacks are trained "
            "and predicted plane by plane."
        )
    return build_maskrcnn(in_channels, out_channels, kwargs)


class MaskRcnnTask:
    """Mask R-CNN as a :class:`~napari_seglab.training_loop.TrainingTask`.

    Parameters
    ----------
    network : torchvision MaskRCNN
        On ``device``.
    sampler : CropSampler
        Training crops.
    steps, batch_size : int
        Optimiser steps per epoch and crops per step.
    val_planes : list of InstancePlane
        Held-out strips (may be empty: no validation).
    device : torch.device
    """

    def __init__(self, network, sampler, steps, batch_size, val_planes, device):
        self.network = network
        self.sampler = sampler
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.val_planes = list(val_planes)
        self.device = device
        self.done = 0

    def parameters(self):
        return self.network.parameters()

    def batches(self, epoch: int) -> Iterable:
        return (self.sampler.batch(self.batch_size) for _ in range(self.steps))

    def loss(self, batch):
        """Sum of Mask R-CNN's five losses; RuntimeError when it is NaN or ±Inf."""
        import torch

        images, targets = batch
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        losses = self.network(images, targets)
        loss = sum(value.float() for value in losses.values())
        self.done += 1
        if not bool(torch.isfinite(loss.detach())):
            raise RuntimeError(
                f"Training stopped at step {self.done}: the Mask R-CNN loss became "
                f"{float(loss.detach()):g} ({', '.join(losses)}). Try a lower learning rate."
            )
        return loss, len(images)

    def validate(self) -> dict[str, float]:
        """``{"mean": F1 at IoU 0.5}`` over the held-out strips, ``{}`` without any."""
        from ..metrics import instances
        from .instance_paste import paint_instances

        scores = []
        for plane in self.val_planes:
            found = detect_planes(self.network, [plane.image], self.device)[0]
            ids, _ = paint_instances(
                found["scores"], found["boxes"], found["masks"], plane.ids.shape
            )
            scores.append(float(instances(ids, plane.ids, thresholds=())["f1"]))
        return {"mean": float(np.mean(scores))} if scores else {}

    def train_mode(self, training: bool) -> None:
        self.network.train(training)

    def snapshot(self):
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def restore(self, snapshot) -> None:
        self.network.load_state_dict(snapshot)


def _refuse(family_keywords: dict) -> None:
    """ValueError for keywords of the shared call that Mask R-CNN cannot honour."""
    unknown = sorted(set(family_keywords) - {"spatial_dims", "ignore_label"})
    if unknown:
        raise TypeError(f"Unexpected keyword(s) for the 'maskrcnn' family: {unknown}.")
    if family_keywords.get("ignore_label") is not None:
        raise ValueError(
            "The 'maskrcnn' family trains on fully annotated instance labels: ignore_label="
            f"{family_keywords['ignore_label']!r} is not supported (every object of a trained "
            "plane must be labelled; a stack trains only on its planes holding objects)."
        )
    dims = family_keywords.get("spatial_dims")
    if dims not in (None, 2):
        raise ValueError(
            f"The 'maskrcnn' family is 2D, got spatial_dims={dims}: stacks train plane by plane."
        )


def _prepare(image, labels, rgb, channel_axis, intensity):
    """Channels-first normalised planes, the layout and the fitted intensity recipe."""
    from ..imaging import IntensityRecipe, channels_first, check_finite
    from ..unet import data as udata

    pairs = udata.as_pairs(image, labels)
    layouts, planes, normalised = set(), [], []
    for i, (im, lab) in enumerate(pairs):
        check_finite(im, what="image" if len(pairs) == 1 else f"image {i + 1} of {len(pairs)}")
        if not np.issubdtype(lab.dtype, np.integer) or (lab.size and lab.min() < 0):
            raise ValueError(
                "Expected instance labels: non-negative integers, one id per object and 0 "
                f"background; got dtype {lab.dtype} with minimum {lab.min() if lab.size else '-'}."
            )
        layouts.add(udata.infer_layout(im.shape, lab.shape, rgb=rgb, channel_axis=channel_axis))
    if len(layouts) > 1:
        raise ValueError(f"All images must share one channel layout, got {sorted(layouts)}.")
    is_rgb, axis = layouts.pop()
    images_cf = [channels_first(im, rgb=is_rgb, channel_axis=axis) for im, _ in pairs]
    channels = {im.shape[0] for im in images_cf}
    if len(channels) > 1:
        raise ValueError(f"All images must have the same channel count, got {sorted(channels)}.")
    recipe = IntensityRecipe.from_dict((intensity or IntensityRecipe("percentile")).to_dict())
    if not recipe.stats:
        step = [max(im.size // 1_000_000, 1) for im in images_cf]
        recipe.fit(np.concatenate([im.reshape(-1)[::s] for im, s in zip(images_cf, step)]))
    for im, (_, lab) in zip(images_cf, pairs):
        normalised = recipe.apply(im).astype(np.float32)
        planes.extend(instance_planes(normalised, lab))
    if not any(plane.ids.any() for plane in planes):
        raise ValueError(
            "The labels hold no object: Mask R-CNN trains on instance labels (one id per "
            "object) of at least one plane."
        )
    return planes, is_rgb, axis, channels.pop(), recipe


def train_events(
    image,
    labels,
    *,
    family: str = "maskrcnn",
    encoder: str | None = None,
    pretrained: bool = False,
    network_kwargs: dict | None = None,
    patch_size: Sequence[int] | None = None,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.2,
    augment: bool = True,
    intensity=None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    initial_model=None,
    device="auto",
    seed: int = 0,
    cancel=None,
    **shared,
) -> Generator[EpochEvent, None, object]:
    """Train a Mask R-CNN on instance labels, yielding an :class:`EpochEvent` per epoch.

    The keywords are those of :func:`napari_seglab.unet.training.train_events`
    with these meanings here:

    Parameters
    ----------
    image, labels : array or lists of arrays
        Images ``(Y, X)`` / ``(Z, Y, X)`` (RGB or with ``channel_axis``) and
        instance labels of the same spatial shape (one id per object).
    encoder : str, optional
        Backbone (:data:`~.maskrcnn_net.BACKBONES`; default ``"resnet18"``),
        the same as ``network_kwargs={"backbone": ...}``.
    pretrained : bool
        Start the ResNet backbone from ImageNet weights, downloaded once into the
        plugin cache and checked (:mod:`.maskrcnn_weights`; the backbone's
        norm then defaults to ``"frozen"``). Offline, a FileNotFoundError names
        the path to place the file at.
    network_kwargs : dict, optional
        Overrides of :func:`~.maskrcnn_net.maskrcnn_defaults` (the ``"small"``
        backbone also narrows the FPN and heads: :data:`~.maskrcnn_net.SMALL_PRESET`).
    patch_size : (int, int), optional
        Training crop ``(H, W)``; default the plane size up to 256.
    batch_size : int, optional
        Crops per step (default 2).
    validation_fraction : float
        Share of each plane's longest axis held out for the validation F1.
    augment : bool
        Random flips, transposition and brightness/contrast of the crops.
    spatial_dims, ignore_label : optional
        Only None (or ``spatial_dims=2``): the family is 2D and needs every
        object labelled.

    Returns
    -------
    SegmentationModel
        Best epoch's weights (highest validation F1, else the last epoch), on
        the CPU, in eval mode; ``slicewise`` is True (stacks plane by plane).

    Raises
    ------
    ValueError
        Labels that are not instance labels or hold no object, or a keyword
        the family cannot honour.
    JobCancelled
        When ``cancel`` is set; ``partial`` is the best model so far or None.
    """
    import torch

    from ..device import resolve_device
    from ..unet.model import SegmentationModel

    _refuse(shared)
    if max_epochs is None and time_budget_s is None:
        max_epochs = DEFAULT_MAX_EPOCHS
    settings = LoopSettings(
        learning_rate=learning_rate, max_epochs=max_epochs, time_budget_s=time_budget_s
    )
    settings.check()
    if initial_model is not None:
        intensity = intensity or initial_model.intensity
        rgb = initial_model.rgb if rgb is None else rgb
        channel_axis = initial_model.channel_axis if channel_axis is None else channel_axis
        patch_size = patch_size or initial_model.patch_size
        kwargs = dict(initial_model.network_kwargs)
    else:
        kwargs = maskrcnn_settings(network_kwargs, encoder)
    weights = None
    if pretrained and initial_model is None:
        from .maskrcnn_weights import ensure_backbone_weights

        if "norm" not in (network_kwargs or {}):
            kwargs["norm"] = "frozen"  # the ImageNet statistics, as torchvision fine-tunes
        weights = ensure_backbone_weights(kwargs["backbone"])
    planes, is_rgb, axis, in_channels, recipe = _prepare(
        image, labels, rgb, channel_axis, intensity
    )
    if initial_model is not None and initial_model.in_channels != in_channels:
        raise ValueError(
            f"The initial model takes {initial_model.in_channels} channel(s), the images have "
            f"{in_channels}."
        )
    largest = np.max([p.ids.shape for p in planes], axis=0)
    crop = tuple(int(c) for c in (patch_size or np.minimum(largest, DEFAULT_CROP)))
    if len(crop) != 2 or min(crop) < 16:
        raise ValueError(f"Expected a 2D crop (H, W) of at least 16 px, got {patch_size}.")
    batch = int(batch_size) if batch_size else 2
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")
    train_planes: list[InstancePlane] = []
    val_planes: list[InstancePlane] = []
    for plane in planes:
        kept, held = split_plane(plane, validation_fraction)
        train_planes.append(kept)
        if held is not None:
            val_planes.append(held)
    if steps_per_epoch is None:
        pixels = sum(p.ids.size for p in train_planes)
        steps_per_epoch = int(np.clip(math.ceil(2 * pixels / (np.prod(crop) * batch)), 8, 64))
    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(2, in_channels, 2, kwargs)
    if weights is not None:
        from .maskrcnn_weights import load_backbone_weights

        load_backbone_weights(network, weights)
    if initial_model is not None:
        network.load_state_dict(initial_model.network.state_dict())
    network.to(device)
    sampler = CropSampler(train_planes, crop, augment, seed)
    task = MaskRcnnTask(network, sampler, steps_per_epoch, batch, val_planes, device)

    def finished(history: list[dict]):
        network.to("cpu").eval()
        return SegmentationModel(
            network=network,
            architecture="maskrcnn",
            network_kwargs=kwargs,
            spatial_dims=2,
            in_channels=in_channels,
            classes=(0, 1),
            patch_size=crop,
            intensity=recipe,
            rgb=is_rgb,
            channel_axis=axis,
            spacing=None if spacing is None else tuple(float(s) for s in spacing),
            slicewise=True,
            history=list(history),
        )

    return (yield from train_to_model(task, settings, finished, device=device, cancel=cancel))


def predict(model, image: np.ndarray, **kwargs) -> np.ndarray:
    """Instance labels ``(*spatial)`` int32 of ``image`` (:func:`predict_events` to the end)."""
    from ..jobs import run_to_end

    return run_to_end(predict_events(model, image, **kwargs)).instances
