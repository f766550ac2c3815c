"""Training accuracy, sparse labels, time budget and cancel for napari_seglab.unet."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_seglab import data
from napari_seglab.jobs import JobCancelled
from napari_seglab.training_loop import EpochEvent
from napari_seglab.unet import predict, probabilities_to_labels, train, train_events
from napari_seglab.unet.losses import IgnoreDiceCELoss
from napari_seglab.unet.training import foreground_dice

TINY_2D = {"channels": [4, 8, 16]}
#: Epochs bound the accuracy tests; the time budget only caps a badly overloaded machine.
SAFETY_BUDGET_S = 400


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred > 0, truth > 0
    return 2.0 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum())


@pytest.mark.slow
def test_2d_model_reaches_dice_on_held_out_region():
    sample = data.nuclei_2d()
    cut = 192  # rows below the cut are never seen in training
    model = train(
        sample.image[:cut],
        sample.semantic[:cut],
        network_kwargs={"channels": [8, 16, 32, 64]},
        patch_size=(64, 64),
        max_epochs=6,
        time_budget_s=SAFETY_BUDGET_S,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
    )
    labels = probabilities_to_labels(predict(model, sample.image, device="cpu"), model.classes)
    assert labels.shape == sample.image.shape
    assert dice(labels[cut:], sample.semantic[cut:]) >= 0.9
    assert model.history
    assert model.history[-1]["validation"]["mean"] is not None


@pytest.mark.slow
def test_3d_model_reaches_dice_on_held_out_region():
    sample = data.nuclei_3d()
    cut = 96  # rows (Y) beyond the cut are held out
    model = train(
        sample.image[:, :cut],
        sample.semantic[:, :cut],
        spacing=sample.spacing,
        network_kwargs={"channels": [8, 16, 32]},
        max_epochs=10,
        time_budget_s=SAFETY_BUDGET_S,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
    )
    assert model.spatial_dims == 3
    assert model.patch_size == (16, 64, 64)  # anisotropic default from the spacing
    labels = probabilities_to_labels(predict(model, sample.image, device="cpu"), model.classes)
    assert dice(labels[:, cut:], sample.semantic[:, cut:]) >= 0.85


@pytest.mark.slow
def test_sparse_labels_do_not_teach_background_where_unannotated():
    """Half of the nuclei are never painted: with an ignore value they still come out."""
    sample = data.nuclei_2d()
    instances = sample.labels
    painted = (instances % 2 == 1) & (instances > 0)  # odd objects annotated
    unpainted = (instances % 2 == 0) & (instances > 0)  # even objects left blank
    far_from_objects = ndi.distance_transform_edt(instances == 0) > 3
    sparse = np.zeros(instances.shape, np.uint8)  # 0 = not annotated (napari's empty)
    sparse[far_from_objects] = 1  # background scribbles
    sparse[painted] = 2  # foreground
    # unannotated background next to objects and the unpainted objects stay 0

    model = train(
        sample.image,
        sparse,
        ignore_label=0,
        network_kwargs={"channels": [8, 16, 32, 64]},
        patch_size=(64, 64),
        max_epochs=8,
        time_budget_s=SAFETY_BUDGET_S,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
    )
    assert model.classes == (1, 2)
    labels = probabilities_to_labels(predict(model, sample.image, device="cpu"), model.classes)
    assert set(np.unique(labels)) <= {1, 2}
    recall_unpainted = (labels[unpainted] == 2).mean()
    assert recall_unpainted >= 0.8
    # and the annotated background stays background
    assert (labels[far_from_objects] == 1).mean() >= 0.95


def test_loss_ignores_unannotated_pixels_exactly():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 16, 16)).float()
    target[:, :, :, 8:] = 3  # ignore index = num_classes
    loss = IgnoreDiceCELoss(3, ignore_index=3)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.count_nonzero(logits.grad[..., 8:]) == 0
    assert torch.count_nonzero(logits.grad[..., :8]) > 0

    # Changing the logits of ignored pixels does not change the loss.
    other = logits.detach().clone()
    other[..., 8:] = torch.randn_like(other[..., 8:]) * 10
    again = IgnoreDiceCELoss(3, ignore_index=3)(other, target)
    assert torch.allclose(loss.detach(), again)


def test_loss_of_fully_ignored_batch_is_finite():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    target = torch.full((1, 1, 8, 8), 2.0)
    loss = IgnoreDiceCELoss(2, ignore_index=2)(logits, target)
    assert torch.isfinite(loss)


def test_foreground_dice_counts_annotated_pixels_only():
    target = np.array([[0, 1, 2, 2]])
    pred = np.array([[0, 1, 1, 0]])
    assert foreground_dice(pred, target, num_classes=2) == pytest.approx(1.0)


def _small_sample():
    sample = data.nuclei_2d(shape=(64, 64), n_objects=6)
    return sample.image, sample.semantic


def test_train_events_yields_per_epoch_and_returns_best_model():
    image, labels = _small_sample()
    gen = train_events(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        augment=False,
        device="cpu",
    )
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            model = stop.value
            break
    assert [e.epoch for e in events] == [1, 2, 3]
    assert events[-1].final
    assert not events[0].final
    assert all(isinstance(e, EpochEvent) for e in events)
    assert all(e.samples == 4 * e.epoch for e in events)
    assert all(np.isfinite(e.loss) and e.elapsed >= 0 for e in events)
    assert events[-1].best_epoch in (1, 2, 3)
    assert [h["epoch"] for h in model.history] == [1, 2, 3]
    assert not model.network.training
    assert next(model.network.parameters()).device.type == "cpu"


def test_cancel_before_first_epoch_raises_without_a_model():
    image, labels = _small_sample()
    cancel = threading.Event()
    cancel.set()
    gen = train_events(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
        cancel=cancel,
    )
    with pytest.raises(JobCancelled, match="before the first epoch") as stop:
        next(gen)
    assert stop.value.partial is None
    with pytest.raises(RuntimeError, match="cancelled"):
        train(
            image, labels, network_kwargs=TINY_2D, patch_size=(32, 32), device="cpu", cancel=cancel
        )


def test_cancel_after_an_epoch_keeps_the_trained_model():
    image, labels = _small_sample()
    cancel = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        cancel.set()

    model = train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=50,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
        cancel=cancel,
        callback=on_event,
    )
    assert len(seen) == 1
    assert len(model.history) == 1


def test_cancelled_job_carries_the_best_model_as_partial():
    image, labels = _small_sample()
    cancel = threading.Event()
    gen = train_events(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=50,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
        cancel=cancel,
    )
    first = next(gen)
    second = next(gen)
    cancel.set()
    with pytest.raises(JobCancelled) as stop:
        next(gen)
    model = stop.value.partial
    assert [h["epoch"] for h in model.history] == [1, 2]
    assert [h["loss"] for h in model.history] == [first.loss, second.loss]
    assert not model.network.training
    assert f"best epoch ({second.best_epoch})" in str(stop.value)


def test_time_budget_stops_training():
    image, labels = _small_sample()
    model = train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        time_budget_s=1e-3,
        steps_per_epoch=50,
        batch_size=2,
        device="cpu",
    )
    # The budget is checked after every step: one step, one (partial) epoch.
    assert len(model.history) == 1
    assert model.history[0]["samples"] == 2


def test_training_does_not_modify_inputs():
    image, labels = _small_sample()
    image_before, labels_before = image.copy(), labels.copy()
    train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        device="cpu",
    )
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(labels, labels_before)


def test_same_seed_gives_same_weights():
    image, labels = _small_sample()
    kwargs = {
        "network_kwargs": TINY_2D,
        "patch_size": (32, 32),
        "max_epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "device": "cpu",
        "seed": 3,
    }
    a = train(image, labels, **kwargs)
    b = train(image, labels, **kwargs)
    for (name, pa), pb in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_slicewise_training_on_annotated_planes_of_a_stack():
    sample = data.nuclei_3d(shape=(8, 64, 64), n_objects=6)
    labels = np.full(sample.labels.shape, 255, np.uint8)  # 255 = not annotated
    labels[2] = sample.semantic[2]
    labels[5] = sample.semantic[5]
    model = train(
        sample.image,
        labels,
        spatial_dims=2,
        ignore_label=255,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
    )
    assert model.spatial_dims == 2
    assert model.slicewise
    probs = predict(model, sample.image, device="cpu")
    assert probs.shape == (2, 8, 64, 64)
    # plane by plane: plane 3 alone gives the same probabilities
    np.testing.assert_allclose(
        probs[:, 3], predict(model, sample.image[3], device="cpu"), atol=1e-6
    )


def test_rgb_and_channel_axis_inputs():
    image, labels = _small_sample()
    rgb = np.stack([image, image // 2, image // 3], axis=-1)
    model = train(
        rgb,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        device="cpu",
    )
    assert model.rgb
    assert model.in_channels == 3
    assert predict(model, rgb, device="cpu").shape == (2, 64, 64)

    stacked = np.stack([image, image[::-1]], axis=0)  # (C, Y, X)
    model = train(
        stacked,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        device="cpu",
    )
    assert model.channel_axis == 0
    assert model.in_channels == 2
    assert predict(model, stacked, device="cpu").shape == (2, 64, 64)


def test_list_of_pairs_and_multiclass_labels():
    a = data.nuclei_2d(shape=(64, 64), n_objects=6, seed=1)
    b = data.nuclei_2d(shape=(48, 80), n_objects=6, seed=2)
    multi = [np.where(s.labels > 0, 1 + (s.labels % 2), 0).astype(np.uint8) for s in (a, b)]
    model = train(
        [a.image, b.image],
        multi,
        network_kwargs=TINY_2D,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
    )
    assert model.classes == (0, 1, 2)
    probs = predict(model, b.image, device="cpu")
    assert probs.shape == (3, 48, 80)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("architecture", ["basicunet", "segresnet", "swinunetr", "dynunet"])
def test_other_architectures_train_and_predict(architecture):
    image, labels = _small_sample()
    small = {
        "basicunet": {"features": [4, 4, 8, 16, 32, 4]},
        "segresnet": {
            "init_filters": 4,
            "blocks_down": [1, 1, 1],
            "blocks_up": [1, 1],
            "num_groups": 2,
            "norm": ["GROUP", {"num_groups": 2}],
        },
        "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1]},
        "dynunet": {"filters": [4, 8, 16, 32]},
    }[architecture]
    kwargs = {
        "architecture": architecture,
        "network_kwargs": small,
        "patch_size": (64, 64) if architecture == "swinunetr" else (32, 32),
        "max_epochs": 1,
        "steps_per_epoch": 1,
        "batch_size": 2,
        "device": "cpu",
    }
    if architecture == "swinunetr" and importlib.util.find_spec("einops") is None:
        with pytest.raises(RuntimeError, match="einops"):
            train(image, labels, **kwargs)
        return
    model = train(image, labels, **kwargs)
    assert model.architecture == architecture
    assert predict(model, image, device="cpu").shape == (2, 64, 64)
