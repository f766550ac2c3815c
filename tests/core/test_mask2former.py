"""The optional Mask2Former family: trains, predicts panoptic output, saves and loads."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_seglab import metrics, unet
from napari_seglab.models import load_model
from napari_seglab.models import mask2former as m2f

#: A tiny Swin + Mask2Former (about 0.35 M parameters) so a step takes well under a second.
TINY = {
    "backbone": {
        "embed_dim": 16,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 2, 2],
        "window_size": 4,
    },
    "feature_size": 32,
    "mask_feature_size": 32,
    "hidden_dim": 32,
    "encoder_feedforward_dim": 64,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_attention_heads": 2,
    "dim_feedforward": 64,
    "num_queries": 8,
    "train_num_points": 256,
}


def scene():
    """Four square cells (class 1, a thing), two touching, and a tissue band (class 2, stuff)."""
    rng = np.random.default_rng(0)
    classes = np.zeros((64, 64), np.uint8)
    instances = np.zeros((64, 64), np.int32)
    classes[:, 48:] = 2
    for k, (y, x) in enumerate([(8, 8), (8, 20), (34, 10), (34, 30)], 1):
        classes[y : y + 12, x : x + 12] = 1
        instances[y : y + 12, x : x + 12] = k
    image = (classes == 1) * 1.0 + (classes == 2) * 0.5 + rng.normal(0, 0.1, classes.shape)
    return image.astype(np.float32), classes, instances


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("transformers")
    image, classes, instances = scene()
    labels = m2f.PanopticLabels(classes.copy(), instances.copy())
    events = []
    model = unet.train(
        image,
        labels,
        family="mask2former",
        network_kwargs={**TINY, "things": [1]},
        max_epochs=2,
        steps_per_epoch=2,
        batch_size=1,
        augment=False,
        validation_fraction=0,
        device="cpu",
        seed=0,
        callback=events.append,
    )
    assert np.array_equal(labels.classes, classes)  # inputs untouched
    return model, events


def test_trains_and_loss_falls(trained):
    model, events = trained
    assert model.family == "mask2former"
    assert model.classes == (0, 1, 2)
    assert model.network_kwargs["things"] == [1]
    losses = [e.loss for e in events]
    assert len(losses) == 2
    assert losses[-1] < losses[0]


def test_predicts_panoptic_output_and_round_trips(trained, tmp_path):
    model, _ = trained
    image, classes, instances = scene()
    prediction = unet.predict_and_split(model, image, device="cpu")
    assert prediction.probabilities.shape == (3, 64, 64)
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-4)
    assert prediction.labels.shape == prediction.instances.shape == (64, 64)
    # an object id only on thing pixels
    assert not (prediction.instances[prediction.labels != 1] > 0).any()
    score = metrics.panoptic(
        prediction.labels, prediction.instances, classes, instances, things=[1]
    )
    assert 0.0 <= score["summary"]["things"]["pq"] <= 1.0
    loaded = load_model(model.save(tmp_path / "m2f.pt"))
    again = unet.predict_and_split(loaded, image, device="cpu")
    np.testing.assert_array_equal(again.probabilities, prediction.probabilities)
    np.testing.assert_array_equal(again.instances, prediction.instances)
    with pytest.raises(ValueError, match="tta: not available"):
        unet.predict(loaded, image, tta=True)
    stack = np.stack([image, image[::-1]])
    planes = unet.predict_and_split(loaded, stack, device="cpu", slicewise=True)
    assert planes.labels.shape == (2, 64, 64)
    np.testing.assert_array_equal(planes.labels[0], prediction.labels)


def test_panoptic_post_processing_gives_ids_to_thing_segments(trained):
    model, _ = trained
    image, _, _ = scene()
    plane = model.prepare_input(image)
    index, ids, _ = m2f.predict_plane(
        model.network, plane, {1}, [0, 2], "cpu", score_threshold=0.0
    )
    assert set(np.unique(index).tolist()) <= {-1, 0, 1, 2}
    assert (ids[index != 1] == 0).all()
    assert ids.max() == len(np.unique(ids[ids > 0]))


def test_missing_transformers_names_the_extra(monkeypatch):
    image, classes, _ = scene()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "napari-seglab\[mask2former\]"'):
        unet.train(image, classes, family="mask2former", max_epochs=1)


def test_bad_settings_are_named():
    pytest.importorskip("transformers")
    image, classes, _ = scene()
    with pytest.raises(ValueError, match="pretrained=True"):
        m2f.train(image, classes, pretrained=True, max_epochs=1)
    with pytest.raises(ValueError, match="things \\[5\\] do not occur"):
        m2f.train(image, classes, things=[5], max_epochs=1)
    with pytest.raises(ValueError, match="multiples of 32"):
        m2f.train(image, classes, patch_size=(48, 48), max_epochs=1)
    with pytest.raises(ValueError, match="encoder: not a setting"):
        unet.train(image, classes, family="mask2former", encoder="resnet18", max_epochs=1)


def test_link_instances_keeps_ids_through_a_stack_within_a_class():
    classes = np.zeros((3, 8, 8), np.uint8)
    ids = np.zeros((3, 8, 8), np.int32)
    classes[:, 0:4, 0:4], ids[:, 0:4, 0:4] = 1, 1  # one cell on every plane
    classes[0, 5:8, 5:8], ids[0, 5:8, 5:8] = 1, 2  # a cell on plane 0 only
    classes[1, 5:8, 5:8], ids[1, 5:8, 5:8] = 3, 2  # same place, other class: a new object
    classes[2, 5:8, 5:8], ids[2, 5:8, 5:8] = 3, 3  # the class-3 object goes on
    classes[1, 0:4, 0:4] = 1
    linked = m2f.link_instances(classes, ids, things=[1, 3])
    assert (linked[:, 0:4, 0:4] == linked[0, 0, 0]).all()
    assert linked[0, 6, 6] != linked[1, 6, 6]
    assert linked[1, 6, 6] == linked[2, 6, 6]
    assert sorted(np.unique(linked).tolist()) == [0, 1, 2, 3]
    # a class that is not a thing gets no id
    assert not m2f.link_instances(classes, ids, things=[2]).any()


def test_stack_ids_linked_and_batch_predict_writes_classes_and_instances(trained, tmp_path):
    import tifffile

    from napari_seglab.batch.pipeline import BatchItem
    from napari_seglab.batch.predict import PredictPipeline

    model, _ = trained
    image, _, _ = scene()
    stack = np.stack([image, image])
    planes = unet.predict_and_split(model, stack, device="cpu")
    # the four-step model finds no segment above the score threshold, so this runs the stack
    # path (link_instances) without objects; the linking itself is tested above
    np.testing.assert_array_equal(planes.instances[0], planes.instances[1])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    out.mkdir()
    pipeline = PredictPipeline(model.save(tmp_path / "m2f.pt"), device="cpu")
    item = BatchItem("stack", tmp_path / "stack.tif")
    outcome = pipeline.run_item(item, out, pipeline.load())
    assert outcome.outputs == ["stack_labels.tif", "stack_instances.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / "stack_labels.tif"), planes.labels)
    np.testing.assert_array_equal(tifffile.imread(out / "stack_instances.tif"), planes.instances)
    with pytest.raises(ValueError, match=r"'mask2former' family .*--memory-budget"):
        PredictPipeline(model.save(tmp_path / "m2f.pt"), memory_budget="1GB")


def test_predict_events_links_planes_of_a_stack(trained, monkeypatch):
    """The stack path of ``predict_events`` with known per-plane segments (ids swapped)."""
    model, _ = trained
    image, _, _ = scene()
    calls = []

    def segments(network, plane, thing_index, stuff_index, device, **kwargs):
        index = np.full((64, 64), -1, np.int64)
        ids = np.zeros((64, 64), np.int32)
        index[0:10, 0:10] = index[20:30, 20:30] = 1  # class index 1: value 1, a thing
        index[:, 50:] = 2  # stuff
        first, second = (1, 2) if not calls else (2, 1)  # each plane numbers its own way
        ids[0:10, 0:10], ids[20:30, 20:30] = first, second
        calls.append(plane.shape)
        return index, ids, np.full((3, 64, 64), 1 / 3, np.float32)

    monkeypatch.setattr(m2f, "predict_plane", segments)
    result = unet.predict_and_split(model, np.stack([image, image]), device="cpu")
    assert len(calls) == 2
    np.testing.assert_array_equal(result.instances[0], result.instances[1])
    assert sorted(np.unique(result.instances).tolist()) == [0, 1, 2]
    assert (result.labels[:, :, 50:] == 2).all()
