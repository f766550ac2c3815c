"""SegmentationModel save/load and the clear errors of napari_seglab.unet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_seglab import __version__, data
from napari_seglab.unet import SegmentationModel, predict, train

TINY = {"channels": [4, 8, 16]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_2d():
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
def model_3d():
    sample = data.nuclei_3d(shape=(8, 32, 32), n_objects=4)
    return train(
        sample.image,
        sample.semantic,
        network_kwargs=TINY,
        patch_size=(8, 32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        spacing=sample.spacing,
        device="cpu",
    )


def test_save_load_predict_reproduces_exactly(model_2d, tmp_path):
    image = data.nuclei_2d(shape=(80, 72), n_objects=6, seed=5).image
    before = predict(model_2d, image, device="cpu")
    path = model_2d.save(tmp_path / "model.pt")
    loaded = SegmentationModel.load(path)
    after = predict(loaded, image, device="cpu")
    np.testing.assert_array_equal(before, after)
    assert loaded.metadata() == model_2d.metadata()


def test_saved_metadata_is_json_with_everything_needed(model_3d, tmp_path):
    path = model_3d.save(tmp_path / "m3.pt")
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata_json"])
    assert meta["architecture"] == "unet"
    assert meta["network_kwargs"]["channels"] == [4, 8, 16]
    assert meta["in_channels"] == 1
    assert meta["spatial_dims"] == 3
    assert meta["classes"] == [0, 1]
    assert meta["patch_size"] == [8, 32, 32]
    assert meta["spacing"] == [2.0, 0.5, 0.5]
    assert meta["intensity"]["kind"] == "percentile"
    assert set(meta["intensity"]["stats"]) == {"lo", "hi"}
    assert meta["package_version"] == __version__
    assert meta["history"][0]["epoch"] == 1


def test_save_is_atomic_and_needs_existing_folder(model_2d, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        model_2d.save(tmp_path / "missing" / "model.pt")
    model_2d.save(tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentationModel.load(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a napari-seglab U-Net model"):
        SegmentationModel.load(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        SegmentationModel.load(garbage)


def test_load_refuses_pickled_code(tmp_path):
    """weights_only=True: a checkpoint holding arbitrary objects is rejected."""

    path = tmp_path / "evil.pt"
    torch.save({"metadata_json": "{}", "state_dict": {}, "obj": _Unsafe()}, path)
    with pytest.raises(ValueError, match="not a readable"):
        SegmentationModel.load(path)


class _Unsafe:
    pass


def test_wrong_channel_count_is_a_clear_error(model_2d):
    rgb = np.zeros((64, 64, 3), np.uint16)
    with pytest.raises(ValueError, match=r"2D and expects 2D \(Y, X\) greyscale.*\(64, 64, 3\)"):
        predict(model_2d, rgb, device="cpu")
    with pytest.raises(ValueError, match=r"expects 1 input channel\(s\).*got 3 channel"):
        predict(model_2d, np.zeros((3, 64, 64)), channel_axis=0, device="cpu")


def test_2d_model_on_3d_data_is_a_clear_error(model_2d):
    stack = np.zeros((5, 64, 64), np.uint16)
    with pytest.raises(ValueError, match=r"model is 2D.*shape \(5, 64, 64\).*slicewise=True"):
        predict(model_2d, stack, device="cpu")
    # explicitly asked for: plane by plane
    assert predict(model_2d, stack, slicewise=True, device="cpu").shape == (2, 5, 64, 64)


def test_3d_model_on_2d_data_is_a_clear_error(model_3d):
    with pytest.raises(ValueError, match=r"model is 3D.*2D array of shape \(32, 32\)"):
        predict(model_3d, np.zeros((32, 32)), device="cpu")


def test_empty_labels_are_a_clear_error():
    image = np.zeros((32, 32), np.uint16)
    with pytest.raises(ValueError, match="no annotated pixels"):
        train(image, np.zeros((32, 32), np.uint8), ignore_label=0, device="cpu")


def test_single_class_is_a_clear_error():
    image = np.zeros((32, 32), np.uint16)
    with pytest.raises(ValueError, match=r"single class \(value 0\)"):
        train(image, np.zeros((32, 32), np.uint8), device="cpu")
    labels = np.zeros((32, 32), np.uint8)
    labels[:4] = 3
    with pytest.raises(ValueError, match=r"single class \(value 3\) \(ignore value 0 excluded\)"):
        train(image, labels, ignore_label=0, device="cpu")


def test_instance_labels_are_a_clear_error():
    sample = data.nuclei_2d(shape=(96, 96), n_objects=30)
    assert sample.labels.max() > 16
    with pytest.raises(ValueError, match=r"distinct values.*labels > 0"):
        train(sample.image, sample.labels, device="cpu")


def test_shape_mismatch_and_bad_arguments_are_clear_errors():
    image = np.zeros((32, 32), np.uint16)
    labels = np.zeros((32, 32), np.uint8)
    labels[:8] = 1
    with pytest.raises(ValueError, match=r"shape \(32, 32\) does not match labels of shape"):
        train(image, labels[:16], device="cpu")
    with pytest.raises(ValueError, match="integer labels"):
        train(image, labels.astype(float), device="cpu")
    with pytest.raises(ValueError, match=r"multiple of \(8, 8\)"):
        train(image, labels, patch_size=(30, 32), device="cpu")
    with pytest.raises(ValueError, match="too small for the network"):
        train(image, labels, patch_size=(8, 8), device="cpu")
    with pytest.raises(ValueError, match="Unknown architecture"):
        train(image, labels, architecture="vnet9000", device="cpu")
    with pytest.raises(ValueError, match="as many label arrays as images"):
        train([image, image], [labels], device="cpu")
    with pytest.raises(ValueError, match="max_epochs"):
        train(image, labels, max_epochs=0, device="cpu")


def test_prepare_input_never_modifies_the_image(model_2d):
    image = data.nuclei_2d(shape=(64, 64), n_objects=4).image
    before = image.copy()
    predict(model_2d, image, device="cpu")
    np.testing.assert_array_equal(image, before)


def test_best_dice_reads_the_loop_history_and_old_files(model_2d):
    import dataclasses

    rows = [
        {"epoch": 1, "loss": 1.0, "validation": {"mean": 0.4}},
        {"epoch": 2, "loss": 0.5, "validation": {"mean": 0.7}},
        {"epoch": 3, "loss": 0.4, "validation": {}},
    ]
    assert dataclasses.replace(model_2d, history=rows).best_dice == pytest.approx(0.7)
    old = [{"epoch": 1, "val_dice": 0.3}, {"epoch": 2, "val_dice": None}]
    assert dataclasses.replace(model_2d, history=old).best_dice == pytest.approx(0.3)
    assert dataclasses.replace(model_2d, history=[]).best_dice is None


# -- model files are checked before anything is built (issue 12) -----------------------------


def _rewrite(model, path, **meta_changes):
    model.save(path)
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata_json"])
    meta.update(meta_changes)
    payload["metadata_json"] = json.dumps(meta)
    torch.save(payload, path)
    return payload


def test_metadata_asking_for_huge_layers_allocates_nothing(model_2d, tmp_path):
    import resource

    path = tmp_path / "wide.pt"
    # Built for real, these channels would take about 1.5 GiB of weights.
    wide = {**model_2d.network_kwargs, "channels": [2048, 4096, 8192]}
    _rewrite(model_2d, path, network_kwargs=wide)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="metadata describes another network") as info:
        SegmentationModel.load(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 300 * 1024
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_metadata_that_does_not_match_the_weights_is_one_clear_line(model_2d, tmp_path):
    path = tmp_path / "other_classes.pt"
    _rewrite(model_2d, path, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"metadata describes another network") as info:
        SegmentationModel.load(path)
    assert "\n" not in str(info.value)
    missing = tmp_path / "missing_key.pt"
    payload = _rewrite(model_2d, missing)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, missing)
    with pytest.raises(ValueError, match=r"missing_key\.pt.*1 parameter\(s\) missing"):
        SegmentationModel.load(missing)
    bad_meta = tmp_path / "bad_meta.pt"
    _rewrite(model_2d, bad_meta, spatial_dims=7)
    with pytest.raises(ValueError, match=r"bad_meta\.pt.*spatial_dims=7"):
        SegmentationModel.load(bad_meta)


def test_unreadable_files_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"metadata_json": "{}", "state_dict": {}, "obj": _Unsafe()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt") as info:
        SegmentationModel.load(path)
    assert "\n" not in str(info.value)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.pt") as info:
        SegmentationModel.load(truncated)
    assert "\n" not in str(info.value)
    garbage_json = tmp_path / "garbage_json.pt"
    torch.save({"metadata_json": "{not json", "state_dict": {}}, garbage_json)
    with pytest.raises(ValueError, match=r"garbage_json\.pt.*unreadable metadata"):
        SegmentationModel.load(garbage_json)


def test_too_small_training_images_are_a_clear_error():
    # Issue 12: a 3x3 image failed inside torch's instance norm.
    image = np.arange(9, dtype=np.float32).reshape(3, 3)
    labels = (image > 4).astype(np.uint8)
    with pytest.raises(ValueError, match=r"shape \(3, 3\) are too small .*'unet'") as info:
        train(image, labels, network_kwargs=TINY, max_epochs=1, steps_per_epoch=1, device="cpu")
    assert "(1, 5)" in str(info.value)  # TINY halves twice: one axis of 5 pixels is enough
    assert "\n" not in str(info.value)


def test_thin_and_smallest_accepted_images_train_and_predict():
    rng = np.random.default_rng(0)
    for shape in ((1, 5), (1, 300)):
        image = rng.random(shape).astype(np.float32)
        labels = (image > 0.5).astype(np.uint8)
        model = train(
            image, labels, network_kwargs=TINY, max_epochs=1, steps_per_epoch=1, device="cpu"
        )
        probabilities = predict(model, image, device="cpu")
        assert probabilities.shape == (2, *shape)
        assert np.isfinite(probabilities).all()
    tiny = rng.random((3, 3)).astype(np.float32)
    assert predict(model, tiny, device="cpu").shape == (2, 3, 3)
