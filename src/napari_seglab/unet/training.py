"""Training a segmentation network on image/label pairs, through the shared training loop.

The network is a model family of :mod:`.families` (``family=``): a MONAI
network (``"unet"`` ...) or DeepLabV3+ (``"deeplabv3plus"``).

:func:`train_events` is a job (see :mod:`napari_seglab.jobs`): it describes
the U-Net as a :class:`UNetTask` and runs
:func:`napari_seglab.training_loop.training_loop` on it, which yields one
:class:`~napari_seglab.training_loop.EpochEvent` per epoch (loss, validation
Dice as ``validation["mean"]``, elapsed seconds, patches as ``samples``),
checks the cancel flag before every step, respects a time budget and keeps
the weights of the best epoch. The job returns the
:class:`~napari_seglab.unet.model.SegmentationModel`; when cancelled it raises
:class:`~napari_seglab.jobs.JobCancelled` whose ``partial`` is the best model
so far (None before the first epoch finished). :func:`train` runs it to the end.

An epoch is ``steps_per_epoch`` optimiser steps of ``batch_size`` patches
sampled around annotated pixels of every class; the validation Dice is the
mean foreground Dice on a held-out region, counting annotated pixels only
(:func:`napari_seglab.metrics.mean_dice`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Sequence

import numpy as np
import torch

from ..device import resolve_device
from ..imaging import IntensityRecipe, channels_first, check_finite
from ..jobs import JobCancelled, run_to_end
from ..metrics import mean_dice
from ..training_loop import EpochEvent, LoopSettings, train_to_model
from . import architectures as arch
from . import data as udata
from . import families
from .inference import sliding_window_probabilities
from .losses import IgnoreDiceCELoss
from .model import SegmentationModel

__all__ = ["DEFAULT_MAX_EPOCHS", "UNetTask", "foreground_dice", "train", "train_events"]

#: Epochs when neither ``max_epochs`` nor ``time_budget_s`` is given.
DEFAULT_MAX_EPOCHS = 30


def foreground_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean Dice over classes ``1..K-1`` on pixels whose target is not ignored (``== K``).

    ``pred`` and ``target`` are encoded class indices of the same shape (the
    training encoding, where ``K = num_classes`` marks unannotated pixels).
    Classes absent from both prediction and target are skipped; NaN when all are.
    """
    return mean_dice(pred, target, classes=range(1, num_classes), ignore_label=num_classes)


class UNetTask:
    """The U-Net as a :class:`~napari_seglab.training_loop.TrainingTask`.

    Parameters
    ----------
    network : torch.nn.Module
        On ``device``; outputs ``(B, K, *spatial)`` logits.
    loader : iterable of dict
        MONAI DataLoader yielding ``{"image": (B, C, *patch), "label": (B, 1, *patch)}``.
    num_classes : int
        ``K``; label value ``K`` marks unannotated pixels.
    val_pairs : list of PreparedPair
        Held-out regions (may be empty: then there is no validation).
    patch : sequence of int
        Validation window size, spatial order.
    batch_size : int
        Validation windows per forward pass.
    device : torch.device
        Where the network runs.
    """

    def __init__(self, network, loader, num_classes, val_pairs, patch, batch_size, device):
        self.network = network
        self.loader = loader
        self.num_classes = int(num_classes)
        self.val_pairs = list(val_pairs)
        self.patch = tuple(patch)
        self.batch_size = int(batch_size)
        self.device = device
        self.loss_fn = IgnoreDiceCELoss(num_classes, ignore_index=num_classes).to(device)
        self.steps = 0

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        return self.network.parameters()

    def batches(self, epoch: int) -> Iterable[dict]:
        return udata.untracked_batches(self.loader)  # no MetaTensor bookkeeping: faster

    def loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Loss of one batch; raises RuntimeError when it is NaN or ±Inf.

        Training cannot recover from a non-finite loss (the next step writes
        NaN into the weights), so it stops there with an error instead of
        producing a NaN model.
        """
        x = batch["image"].as_subclass(torch.Tensor).to(self.device, non_blocking=True)
        y = batch["label"].as_subclass(torch.Tensor).to(self.device, non_blocking=True)
        logits = self.network(x)  # under the loop's autocast (CUDA only)
        if self.device.type == "cuda":
            with torch.autocast("cuda", enabled=False):  # the loss in fp32
                loss = self.loss_fn(logits.float(), y)
        else:
            loss = self.loss_fn(logits.float(), y)
        self.steps += 1
        value = loss.detach()
        if not bool(torch.isfinite(value)):
            raise RuntimeError(
                f"Training stopped at step {self.steps}: the loss became {float(value):g}. "
                "Try a lower learning rate; the images hold only finite values, so the "
                "network diverged."
            )
        return loss, int(x.shape[0])

    def validate(self) -> dict[str, float]:
        """``{"mean": foreground Dice}`` over the held-out regions, ``{}`` without any."""
        scores = []
        for pair in self.val_pairs:
            probs = sliding_window_probabilities(
                self.network,
                pair.image,
                self.patch,
                overlap=0.25,
                batch_size=self.batch_size,
                device=self.device,
            )
            score = foreground_dice(probs.argmax(axis=0), pair.target[0], self.num_classes)
            if not math.isnan(score):
                scores.append(score)
        return {"mean": float(np.mean(scores))} if scores else {}

    def train_mode(self, training: bool) -> None:
        self.network.train(training)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(snapshot)


def _prepare(
    image,
    labels,
    *,
    spatial_dims: int | None,
    rgb: bool | None,
    channel_axis: int | None,
    ignore_label: int | None,
    intensity: IntensityRecipe | None,
):
    """Validate inputs and return normalised, encoded pairs plus the model layout."""
    pairs = udata.as_pairs(image, labels)
    for i, (im, _) in enumerate(pairs):
        check_finite(im, what="image" if len(pairs) == 1 else f"image {i + 1} of {len(pairs)}")
    layouts = {
        udata.infer_layout(i.shape, lab.shape, rgb=rgb, channel_axis=channel_axis)
        for i, lab in pairs
    }
    if len(layouts) > 1:
        raise ValueError(f"All images must share one channel layout, got {sorted(layouts)}.")
    is_rgb, axis = layouts.pop()
    data_dims = {lab.ndim for _, lab in pairs}
    if len(data_dims) > 1:
        raise ValueError("Mixing 2D images and 3D stacks in one training set is not supported.")
    data_dim = data_dims.pop()
    dims = data_dim if spatial_dims is None else int(spatial_dims)
    if dims not in (2, 3) or dims > data_dim:
        raise ValueError(
            f"Expected spatial_dims 2 or 3 (at most the labels' {data_dim} axes), "
            f"got {spatial_dims}."
        )
    slicewise = dims == 2 and data_dim == 3
    classes = udata.find_classes([lab for _, lab in pairs], ignore_label)
    images_cf = [channels_first(i, rgb=is_rgb, channel_axis=axis) for i, _ in pairs]
    in_channels = {im.shape[0] for im in images_cf}
    if len(in_channels) > 1:
        raise ValueError(
            f"All images must have the same channel count, got {sorted(in_channels)}."
        )
    recipe = intensity or IntensityRecipe("percentile")
    recipe = IntensityRecipe.from_dict(recipe.to_dict())
    if not recipe.stats:
        sample = (
            images_cf[0]
            if len(images_cf) == 1
            else np.concatenate(
                [im.reshape(-1)[:: max(im.size // 1_000_000, 1)] for im in images_cf]
            )
        )
        recipe.fit(sample)
    prepared = []
    for im, (_, lab) in zip(images_cf, pairs):
        target = udata.encode_labels(lab, classes, ignore_label)[np.newaxis]
        norm = recipe.apply(im)
        if slicewise:
            for z in range(target.shape[1]):
                if (target[:, z] != len(classes)).any():
                    prepared.append(udata.PreparedPair(norm[:, z], target[:, z]))
        else:
            prepared.append(udata.PreparedPair(norm, target))
    return prepared, classes, dims, slicewise, is_rgb, axis, in_channels.pop(), recipe


def train_events(
    image,
    labels,
    *,
    spatial_dims: int | None = None,
    family: str | None = None,
    architecture: str | None = None,
    encoder: str | None = None,
    pretrained: bool = False,
    network_kwargs: dict | None = None,
    patch_size: Sequence[int] | None = None,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    learning_rate: float = 1e-3,
    ignore_label: int | None = None,
    validation_fraction: float = 0.2,
    augment: bool = True,
    intensity: IntensityRecipe | None = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    initial_model: SegmentationModel | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    cancel=None,
) -> Generator[EpochEvent, None, SegmentationModel]:
    """Train a segmentation network, yielding an :class:`EpochEvent` per epoch.

    Parameters
    ----------
    image : array or list of arrays
        ``(Y, X)``, ``(Z, Y, X)``, RGB ``(..., 3)`` or multi-channel (see
        ``channel_axis``); a list trains on several images.
    labels : int array or list of int arrays
        Same spatial shape as the image(s). Each value is a class;
        ``ignore_label`` marks unannotated pixels.
    spatial_dims : {2, 3}, optional
        Network dimensionality; default that of the labels (2 for the 2D-only
        ``"deeplabv3plus"``). ``2`` on 3D stacks trains slice-wise on the
        annotated planes (prediction then runs plane by plane).
    family : str, optional
        One of :data:`~napari_seglab.unet.families.FAMILY_NAMES`: a MONAI
        network (``"unet"``, ``"basicunet"``, ``"segresnet"``, ``"swinunetr"``,
        ``"dynunet"``), ``"deeplabv3plus"``, or a family with its own module
        (``"maskrcnn"``: instance labels in, see
        :mod:`napari_seglab.models.maskrcnn`; the job is handed to that module
        with all these keywords); default ``"unet"``.
    architecture : str, optional
        The same names (the keyword before ``family``); give one of the two.
        With ``initial_model``, its family is used and both are ignored.
    encoder : str, optional
        DeepLabV3+ encoder (a segmentation-models-pytorch name; default
        ``"resnet34"``). Only for ``"deeplabv3plus"``.
    pretrained : bool
        DeepLabV3+ ResNet encoders from ImageNet weights, downloaded once into the
        cache (:func:`~.families.load_pretrained`); default random weights.
    network_kwargs : dict, optional
        Overrides of the family's default constructor arguments.
    patch_size : sequence of int, optional
        Training window, spatial order; default from the image and network.
    max_epochs, time_budget_s : optional
        Stop after this many epochs / seconds (whichever comes first); with
        neither, :data:`DEFAULT_MAX_EPOCHS`. The budget is checked every step.
    steps_per_epoch, batch_size : int, optional
        Optimiser steps per epoch and patches per step (DeepLabV3+: at least 2).
    learning_rate : float
        AdamW learning rate.
    ignore_label : int, optional
        Label value of unannotated pixels (skipped by loss and sampler).
    validation_fraction : float
        Share of the longest axis held out for the validation Dice (0: none).
    augment : bool
        Random flips, rotations, affine/elastic deformation, intensity, noise.
    intensity : IntensityRecipe, optional
        Normalisation (default percentile 1–99.8 fitted on the training data).
    rgb, channel_axis : optional
        Input layout; inferred from the shapes when not given.
    spacing : sequence of float, optional
        Voxel size (stored; DynUNet derives anisotropic strides from it).
    initial_model : SegmentationModel, optional
        Continue from this model's weights and settings (same classes and channels).
    device : str or torch.device
        ``"auto"`` picks CUDA > MPS > CPU.
    seed : int
        Seeds the weight initialisation and patch sampling.
    cancel : threading.Event or callable, optional
        Checked before every step.

    Yields
    ------
    EpochEvent
        ``validation["mean"]`` is the validation Dice (absent without
        validation), ``samples`` the patches trained on so far.

    Returns
    -------
    SegmentationModel
        With the weights of the best epoch (highest validation Dice, or the
        last epoch without validation), on the CPU, in eval mode; its
        ``history`` holds :meth:`EpochEvent.as_dict` of every epoch.

    Raises
    ------
    ValueError
        If an image holds NaN/±Inf values (their count and the index of the
        first one, napari axis order, are named), or the labels do not fit.
    RuntimeError
        If the loss becomes NaN/±Inf during training (no model is returned).
    JobCancelled
        When ``cancel`` is set; ``partial`` is the best model so far, or None
        when no epoch had finished.
    """
    keywords = dict(locals())  # the arguments, for a family with its own trainer
    name = (
        initial_model.architecture
        if initial_model is not None
        else families.resolve_family(family, architecture)
    )
    module = families.family_module(name)
    if module is not None:  # a family with its own trainer (Mask R-CNN ...): every keyword
        del keywords["image"], keywords["labels"], keywords["architecture"]
        return (yield from module.train_events(image, labels, **{**keywords, "family": name}))
    from monai.data import DataLoader, Dataset, list_data_collate

    if max_epochs is None and time_budget_s is None:
        max_epochs = DEFAULT_MAX_EPOCHS
    settings = LoopSettings(
        learning_rate=learning_rate,
        weight_decay=1e-5,
        max_epochs=max_epochs,
        time_budget_s=time_budget_s,
    )
    settings.check()
    if initial_model is not None:
        architecture = initial_model.architecture
        intensity = intensity or initial_model.intensity
        rgb = initial_model.rgb if rgb is None else rgb
        channel_axis = initial_model.channel_axis if channel_axis is None else channel_axis
        spatial_dims = initial_model.spatial_dims if spatial_dims is None else spatial_dims
        patch_size = patch_size or initial_model.patch_size
    else:
        architecture = families.resolve_family(family, architecture)
        network_kwargs = families.family_overrides(
            architecture, network_kwargs, encoder, pretrained
        )
        if spatial_dims is None and architecture == "deeplabv3plus":
            spatial_dims = 2
    prepared, classes, dims, slicewise, is_rgb, axis, in_channels, recipe = _prepare(
        image,
        labels,
        spatial_dims=spatial_dims,
        rgb=rgb,
        channel_axis=channel_axis,
        ignore_label=ignore_label,
        intensity=intensity,
    )
    num_classes = len(classes)
    if initial_model is not None:
        if tuple(initial_model.classes) != tuple(classes):
            raise ValueError(
                f"The initial model predicts classes {list(initial_model.classes)} but the labels "
                f"hold classes {list(classes)}."
            )
        if initial_model.in_channels != in_channels:
            raise ValueError(
                f"The initial model takes {initial_model.in_channels} channel(s), the images have "
                f"{in_channels}."
            )
        kwargs = dict(initial_model.network_kwargs)
    else:
        if spacing is not None and slicewise:
            spacing = tuple(spacing)[-2:]
        kwargs = arch.network_kwargs(architecture, dims, spacing=spacing, overrides=network_kwargs)
    multiple = arch.patch_multiple(architecture, kwargs, dims)
    shapes = np.array([p.target.shape[1:] for p in prepared])
    if patch_size is None:
        patch = arch.default_patch_size(shapes.max(axis=0), multiple, spacing=spacing)
        arch.check_image_size(shapes.max(axis=0), patch, multiple, architecture)
    else:
        patch = arch.check_patch_size(patch_size, multiple, dims)

    device = resolve_device(device)
    batch = int(batch_size) if batch_size else (2 if dims == 3 else 8)
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")
    if batch < families.MIN_BATCH.get(architecture, 1):
        raise ValueError(
            f"The {architecture!r} family trains on at least {families.MIN_BATCH[architecture]} "
            f"patches per step (its batch normalisation needs them), got batch_size={batch}."
        )

    train_pairs, val_pairs = [], []
    for pair in prepared:
        tr, va = udata.split_validation(pair, validation_fraction, num_classes, patch)
        train_pairs.append(tr)
        if va is not None:
            val_pairs.append(va)
    samples = [udata.prepare_sample(p, patch, num_classes) for p in train_pairs]
    if steps_per_epoch is None:
        voxels = sum(int(np.prod(p.target.shape[1:])) for p in train_pairs)
        steps_per_epoch = int(np.clip(math.ceil(2 * voxels / (np.prod(patch) * batch)), 8, 64))
    transform = udata.training_transforms(
        patch,
        num_classes,
        num_samples=batch,
        augment=augment,
        ratios=udata.sampling_ratios(train_pairs, num_classes),
    )
    dataset = Dataset([samples[i % len(samples)] for i in range(steps_per_epoch)], transform)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=list_data_collate)
    transform.set_random_state(seed=seed)  # after: MONAI's loader reseeds from torch's RNG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = arch.build_network(architecture, dims, in_channels, num_classes, kwargs)
    if initial_model is not None:
        network.load_state_dict(initial_model.network.state_dict())
    else:
        families.load_pretrained(network, kwargs, cancel=cancel)  # pretrained=True only
    network.to(device)
    task = UNetTask(network, loader, num_classes, val_pairs, patch, batch, device)

    def finished_model(history: list[dict]) -> SegmentationModel:
        network.to("cpu").eval()
        return SegmentationModel(
            network=network,
            architecture=architecture,
            network_kwargs=kwargs,
            spatial_dims=dims,
            in_channels=in_channels,
            classes=tuple(classes),
            patch_size=tuple(patch),
            intensity=recipe,
            rgb=is_rgb,
            channel_axis=axis,
            spacing=None if spacing is None else tuple(float(s) for s in spacing),
            slicewise=slicewise,
            history=list(history),
        )

    return (
        yield from train_to_model(task, settings, finished_model, device=device, cancel=cancel)
    )


def train(
    image,
    labels,
    *,
    callback: Callable[[EpochEvent], None] | None = None,
    **kwargs,
) -> SegmentationModel:
    """Train a network to the end; see :func:`train_events` for the arguments.

    Parameters
    ----------
    callback : callable, optional
        Called with each :class:`~napari_seglab.training_loop.EpochEvent`.

    Returns
    -------
    SegmentationModel
        Also when training was cancelled after an epoch finished: then the
        best model so far (the cancelled job's ``partial``).

    Raises
    ------
    JobCancelled
        If training was cancelled before the first epoch finished (no model).
    """
    try:
        return run_to_end(train_events(image, labels, **kwargs), callback)
    except JobCancelled as stop:
        if stop.partial is None:
            raise
        return stop.partial
