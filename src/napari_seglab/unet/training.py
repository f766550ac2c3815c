"""Training a MONAI network on image/label pairs.

:func:`train_events` is a generator: it yields one :class:`TrainingEvent` per
epoch (loss, validation Dice, elapsed seconds), checks a cancel flag after
every step, respects a time budget, keeps the weights of the best epoch and
returns the :class:`~napari_seglab.unet.model.SegmentationModel`.
:func:`train` runs it to the end.

An epoch is ``steps_per_epoch`` optimiser steps of ``batch_size`` patches
sampled around annotated pixels of every class; the validation Dice is the
mean foreground Dice on a held-out region, counting annotated pixels only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..device import autocast, autocast_dtype, resolve_device
from ..imaging import IntensityRecipe, channels_first
from . import architectures as arch
from . import data as udata
from .inference import sliding_window_probabilities
from .losses import IgnoreDiceCELoss
from .model import SegmentationModel

#: Epochs when neither ``max_epochs`` nor ``time_budget_s`` is given.
DEFAULT_MAX_EPOCHS = 30


@dataclass(frozen=True)
class TrainingEvent:
    """Progress after one epoch.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    max_epochs : int or None
        Epoch limit (None when only a time budget bounds training).
    loss : float
        Mean training loss of the epoch.
    val_dice : float or None
        Mean foreground Dice on the validation region (None without validation).
    seconds : float
        Seconds since training started.
    patches : int
        Patches trained on so far.
    best_epoch : int
        Epoch whose weights are kept.
    final : bool
        True for the last event (epoch limit, time budget).
    """

    epoch: int
    max_epochs: int | None
    loss: float
    val_dice: float | None
    seconds: float
    patches: int
    best_epoch: int
    final: bool = False

    def as_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "loss": self.loss,
            "val_dice": self.val_dice,
            "seconds": self.seconds,
            "patches": self.patches,
        }


def _is_set(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def foreground_dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean Dice over classes ``1..K-1`` on pixels whose target is not ignored (``== K``).

    Classes absent from both prediction and target are skipped; NaN when all are.
    """
    valid = target != num_classes
    scores = []
    for c in range(1, num_classes):
        p = (pred == c) & valid
        t = target == c
        denom = int(p.sum()) + int(t.sum())
        if denom:
            scores.append(2.0 * int((p & t).sum()) / denom)
    return float(np.mean(scores)) if scores else float("nan")


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
    architecture: str = "unet",
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
) -> Generator[TrainingEvent, None, SegmentationModel | None]:
    """Train a segmentation network, yielding a :class:`TrainingEvent` per epoch.

    Parameters
    ----------
    image : array or list of arrays
        ``(Y, X)``, ``(Z, Y, X)``, RGB ``(..., 3)`` or multi-channel (see
        ``channel_axis``); a list trains on several images.
    labels : int array or list of int arrays
        Same spatial shape as the image(s). Each value is a class;
        ``ignore_label`` marks unannotated pixels.
    spatial_dims : {2, 3}, optional
        Network dimensionality; default that of the labels. ``2`` on 3D stacks
        trains slice-wise on the annotated planes.
    architecture : str
        One of :data:`~napari_seglab.unet.architectures.ARCHITECTURE_NAMES`.
    network_kwargs : dict, optional
        Overrides of the architecture's default constructor arguments.
    patch_size : sequence of int, optional
        Training window, spatial order; default from the image and network.
    max_epochs, time_budget_s : optional
        Stop after this many epochs / seconds (whichever comes first); with
        neither, :data:`DEFAULT_MAX_EPOCHS`. The budget is checked every step.
    steps_per_epoch, batch_size : int, optional
        Optimiser steps per epoch and patches per step.
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
        Checked every step; when set, training stops and the best model so far
        is returned (None if no epoch finished).

    Yields
    ------
    TrainingEvent

    Returns
    -------
    SegmentationModel or None
        With the weights of the best epoch (highest validation Dice, or the
        last epoch without validation), on the CPU, in eval mode.
    """
    from monai.data import DataLoader, Dataset, list_data_collate

    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f"Expected max_epochs >= 1, got {max_epochs}.")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"Expected a positive time budget, got {time_budget_s} s.")
    if learning_rate <= 0:
        raise ValueError(f"Expected a positive learning rate, got {learning_rate}.")
    if initial_model is not None:
        architecture = initial_model.architecture
        intensity = intensity or initial_model.intensity
        rgb = initial_model.rgb if rgb is None else rgb
        channel_axis = initial_model.channel_axis if channel_axis is None else channel_axis
        spatial_dims = initial_model.spatial_dims if spatial_dims is None else spatial_dims
        patch_size = patch_size or initial_model.patch_size
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
    else:
        patch = arch.check_patch_size(patch_size, multiple, dims)

    device = resolve_device(device)
    batch = int(batch_size) if batch_size else (2 if dims == 3 else 8)
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")

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
    transform.set_random_state(seed=seed)
    dataset = Dataset([samples[i % len(samples)] for i in range(steps_per_epoch)], transform)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=list_data_collate)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = arch.build_network(architecture, dims, in_channels, num_classes, kwargs)
    if initial_model is not None:
        network.load_state_dict(initial_model.network.state_dict())
    network.to(device)
    loss_fn = IgnoreDiceCELoss(num_classes, ignore_index=num_classes).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)
    if max_epochs is None and time_budget_s is None:
        max_epochs = DEFAULT_MAX_EPOCHS

    history: list[dict] = []
    best_state = None
    best_score = -math.inf
    best_epoch = 0
    patches = 0
    start = time.perf_counter()
    epoch = 0
    while max_epochs is None or epoch < max_epochs:
        epoch += 1
        network.train()
        loss_sum = torch.zeros((), device=device)
        steps = 0
        stopped = out_of_time = False
        for batch_data in loader:
            if _is_set(cancel):
                stopped = True
                break
            x = batch_data["image"].as_tensor().to(device, non_blocking=True)
            y = batch_data["label"].as_tensor().to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                logits = network(x)
            loss = loss_fn(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()
            steps += 1
            patches += int(x.shape[0])
            if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
                out_of_time = True
                break
        if stopped:
            break
        mean_loss = float(loss_sum.item()) / max(steps, 1)
        val_dice = _validate(network, val_pairs, patch, num_classes, device, batch)
        score = val_dice if val_dice is not None and not math.isnan(val_dice) else None
        if score is None or score > best_score:
            best_score = score if score is not None else best_score
            best_epoch = epoch
            best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()
            }
        seconds = time.perf_counter() - start
        final = out_of_time or (max_epochs is not None and epoch >= max_epochs)
        event = TrainingEvent(
            epoch, max_epochs, mean_loss, val_dice, seconds, patches, best_epoch, final
        )
        history.append(event.as_dict())
        yield event
        if final or _is_set(cancel):
            break

    if best_state is None:
        return None
    network.load_state_dict(best_state)
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
        history=history,
    )


def _validate(network, val_pairs, patch, num_classes, device, batch) -> float | None:
    if not val_pairs:
        return None
    network.eval()
    scores = []
    for pair in val_pairs:
        probs = sliding_window_probabilities(
            network, pair.image, patch, overlap=0.25, batch_size=batch, device=device
        )
        pred = probs.argmax(axis=0)
        score = foreground_dice(pred, pair.target[0], num_classes)
        if not math.isnan(score):
            scores.append(score)
    network.train()
    return float(np.mean(scores)) if scores else None


def train(
    image,
    labels,
    *,
    callback: Callable[[TrainingEvent], None] | None = None,
    **kwargs,
) -> SegmentationModel:
    """Train a network to the end; see :func:`train_events` for the arguments.

    Parameters
    ----------
    callback : callable, optional
        Called with each :class:`TrainingEvent`.

    Returns
    -------
    SegmentationModel

    Raises
    ------
    RuntimeError
        If training was cancelled before the first epoch finished.
    """
    events = train_events(image, labels, **kwargs)
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            model = stop.value
            break
        if callback is not None:
            callback(event)
    if model is None:
        raise RuntimeError("Training was cancelled before the first epoch finished; no model.")
    return model
