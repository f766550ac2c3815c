"""Sliding-window prediction, progress/cancel and post-processing of napari_seglab.unet."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from napari_seglab import data
from napari_seglab.jobs import JobCancelled, ProgressEvent
from napari_seglab.unet import (
    PredictionCancelled,
    PredictionProgress,
    predict,
    predict_and_split,
    predict_and_split_events,
    predict_events,
    probabilities_to_labels,
    to_instances,
    train,
)
from napari_seglab.unet.inference import count_windows
from napari_seglab.unet.postprocess import instance_spacing

TINY = {"channels": [4, 8, 16]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    sample = data.nuclei_2d(shape=(64, 64), n_objects=6)
    return train(
        sample.image,
        sample.semantic,
        network_kwargs=TINY,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
    )


@pytest.fixture(scope="module")
def image():
    return data.nuclei_2d(shape=(70, 90), n_objects=8, seed=3).image


def run_events(gen, seen=None):
    events = [] if seen is None else seen
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_predict_matches_bare_monai_sliding_window(model, image):
    probs = predict(model, image, overlap=0.5, device="cpu", batch_size=3)
    assert probs.dtype == np.float32
    assert probs.shape == (2, 70, 90)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)

    x = torch.from_numpy(model.prepare_input(image))[None]
    with torch.no_grad():
        logits = sliding_window_inference(
            x,
            (32, 32),
            3,
            lambda w: torch.softmax(model.network(w), 1),
            overlap=0.5,
            mode="gaussian",
        )
    np.testing.assert_allclose(probs, logits[0].numpy(), atol=1e-6)


def test_flip_tta_is_flip_equivariant(model, image):
    # Two windows without overlap: flipping the image maps the windows onto each other.
    part = image[:32, :64]
    probs = predict(model, part, tta=True, overlap=0.0, device="cpu")
    flipped = predict(model, part[::-1, ::-1], tta=True, overlap=0.0, device="cpu")
    np.testing.assert_allclose(probs, flipped[:, ::-1, ::-1], atol=1e-5)
    plain = predict(model, part, overlap=0.0, device="cpu")
    assert (
        np.abs(
            plain - predict(model, part[::-1, ::-1], overlap=0.0, device="cpu")[:, ::-1, ::-1]
        ).max()
        > 1e-3
    )  # without TTA the network is not flip invariant


def test_predict_events_reports_progress_and_returns_the_same(model, image):
    expected = predict(model, image, device="cpu", batch_size=2)
    events, result = run_events(predict_events(model, image, device="cpu", batch_size=2))
    total = count_windows((70, 90), (32, 32), 0.5)
    assert all(isinstance(e, PredictionProgress) for e in events)
    assert [e.done for e in events] == list(range(2, total + 1, 2)) + (
        [total] if total % 2 else []
    )
    assert events[-1].done == events[-1].total == total
    np.testing.assert_array_equal(result, expected)


def test_predict_events_cancel_raises_job_cancelled(model, image):
    cancel = threading.Event()
    gen = predict_events(model, image, device="cpu", batch_size=1, cancel=cancel)
    first = next(gen)
    assert first.done == 1
    assert first.stage == "predicting"
    assert isinstance(first, ProgressEvent)
    cancel.set()
    events = []
    with pytest.raises(JobCancelled) as stop:
        run_events(gen, events)
    assert stop.value.partial is None
    assert len(events) <= 1  # at most the batch in flight when cancel was set


def test_predict_cancel_raises(model, image):
    assert PredictionCancelled is JobCancelled  # the former name, same class
    with pytest.raises(JobCancelled, match="Prediction was cancelled"):
        predict(model, image, device="cpu", cancel=lambda: True)


def test_predict_and_split_is_predict_then_labels_then_instances(model, image):
    events, result = run_events(
        predict_and_split_events(
            model, image, instances="watershed", spacing=(1.0, 2.0, 0.5), device="cpu"
        )
    )
    assert [e.stage for e in events[-2:]] == ["labels", "instances"]
    assert all(e.stage == "predicting" for e in events[:-2])
    probs = predict(model, image, device="cpu")
    np.testing.assert_array_equal(result.probabilities, probs)
    labels = probabilities_to_labels(probs, model.classes)
    np.testing.assert_array_equal(result.labels, labels)
    assert result.spacing == (2.0, 0.5)  # the image's spatial axes (leading axes dropped)
    np.testing.assert_array_equal(
        result.instances, to_instances(labels, method="watershed", spacing=(2.0, 0.5))
    )
    plain = predict_and_split(model, image, device="cpu")
    assert plain.instances is None
    with pytest.raises(ValueError, match="Unknown instances"):
        predict_and_split(model, image, instances="blobs", device="cpu")
    with pytest.raises(JobCancelled):
        predict_and_split(model, image, instances="connected", device="cpu", cancel=lambda: True)


def test_instance_spacing_prefers_the_image_then_the_model(model):
    assert instance_spacing(model, 2, (3.0, 4.0)) == (3.0, 4.0)
    assert model.spacing is None
    assert instance_spacing(model, 2) is None
    model_3d = dataclasses.replace(model, spacing=(2.0, 0.5, 0.5))
    assert instance_spacing(model_3d, 3) == (2.0, 0.5, 0.5)
    assert instance_spacing(model_3d, 2) is None  # no value per axis: unit voxels
    with pytest.raises(ValueError, match="spacing"):
        instance_spacing(model, 3, (1.0, 1.0))


def test_predict_events_reraises_errors(model):
    with pytest.raises(ValueError, match="model is 2D"):
        run_events(predict_events(model, np.zeros((3, 40, 40)), device="cpu"))


def test_image_smaller_than_patch_is_padded(model):
    small = data.nuclei_2d(shape=(20, 24), n_objects=2).image
    assert predict(model, small, device="cpu").shape == (2, 20, 24)


def test_bad_overlap_is_an_error(model, image):
    with pytest.raises(ValueError, match="overlap"):
        predict(model, image, overlap=1.0, device="cpu")


def test_probabilities_to_labels_maps_class_values():
    probs = np.zeros((3, 4, 5), np.float32)
    probs[0] = 0.5
    probs[1, :2] = 0.9
    probs[2, :, :1] = 0.95
    labels = probabilities_to_labels(probs, (1, 4, 7), chunk=1)
    assert labels.dtype == np.uint8
    expected = np.full((4, 5), 1)
    expected[:2] = 4
    expected[:, :1] = 7
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="Expected 3 class values"):
        probabilities_to_labels(probs, (1, 2))


def _two_touching_disks():
    yy, xx = np.mgrid[:40, :60]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    b = (yy - 20) ** 2 + (xx - 37) ** 2 <= 10**2
    return (a | b).astype(np.uint8)


def test_watershed_splits_touching_objects_connected_does_not():
    semantic = _two_touching_disks()
    assert to_instances(semantic, method="connected").max() == 1
    inst = to_instances(semantic, method="watershed")
    assert inst.max() == 2
    assert inst.dtype == np.int32
    np.testing.assert_array_equal(inst > 0, semantic > 0)
    assert inst[20, 15] != inst[20, 42]


def test_instances_per_class_and_min_size():
    labels = np.zeros((30, 30), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:20, 10:20] = 2
    labels[25, 25] = 1  # one-pixel speck
    inst = to_instances(labels, method="connected", min_size=4)
    assert inst.max() == 2
    assert inst[25, 25] == 0
    assert inst[4, 4] != inst[15, 15]


def test_instances_3d_with_spacing():
    zz, yy, xx = np.mgrid[:10, :40, :60]
    # anisotropic: z planes 4x thicker than pixels
    a = ((zz - 5) * 4) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    b = ((zz - 5) * 4) ** 2 + (yy - 20) ** 2 + (xx - 37) ** 2 <= 10**2
    inst = to_instances((a | b).astype(np.uint8), spacing=(4.0, 1.0, 1.0))
    assert inst.max() == 2
    with pytest.raises(ValueError, match="spacing"):
        to_instances((a | b).astype(np.uint8), spacing=(1.0, 1.0))


def test_watershed_split_recovers_touching_nuclei_from_a_perfect_foreground():
    from napari_seglab import metrics

    for sample, spacing in ((data.nuclei_2d(), None), (data.nuclei_3d(), (2.0, 0.5, 0.5))):
        objects = to_instances(sample.semantic, method="watershed", spacing=spacing)
        connected = to_instances(sample.semantic, method="connected")
        split = metrics.instances(objects, sample.labels)
        merged = metrics.instances(connected, sample.labels)
        # Touching nuclei are separated (more matches than connected components) ...
        assert split["tp"] > merged["tp"]
        # ... without cutting single nuclei in pieces.
        assert split["f1"] >= 0.85
