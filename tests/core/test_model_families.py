"""Model families: DeepLabV3+ (segmentation-models-pytorch) through the U-Net's train/predict API.

Small DeepLabV3+ networks (ResNet-18 encoder, 16 decoder channels, random
weights) on 32x32 images keep every test to a few seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_seglab import models
from napari_seglab.cli import main
from napari_seglab.unet import SegmentationModel, predict, train
from napari_seglab.unet.families import FAMILY_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"encoder": "resnet18", "network_kwargs": {"decoder_channels": 16}}


def _image_2d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 float image with a bright square (class 1) and a bright disc (class 2)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((32, 32), np.uint8)
    labels[4:14, 4:14] = 1
    yy, xx = np.mgrid[:32, :32]
    labels[(yy - 22) ** 2 + (xx - 22) ** 2 < 36] = 2
    image = rng.normal(0.0, 0.3, labels.shape).astype(np.float32) + labels
    return image, labels


@pytest.fixture(scope="module")
def stack_model():
    """A DeepLabV3+ trained plane by plane on a (3, 32, 32) stack (one short epoch)."""
    image, labels = _image_2d()
    stack = np.stack([image, np.roll(image, 2, axis=1), np.roll(image, 4, axis=0)])
    stack_labels = np.stack([labels, np.roll(labels, 2, axis=1), np.roll(labels, 4, axis=0)])
    model = train(
        stack,
        stack_labels,
        family="deeplabv3plus",
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        validation_fraction=0.0,
        device="cpu",
        **SMALL,
    )
    return model, stack


def test_deeplab_loss_falls_on_a_tiny_2d_image():
    image, labels = _image_2d()
    before = image.copy()
    model = models.train(
        image,
        labels,
        family="deeplabv3plus",
        max_epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        learning_rate=3e-3,
        validation_fraction=0.0,
        augment=False,
        device="cpu",
        seed=1,
        **SMALL,
    )
    losses = [row["loss"] for row in model.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0], losses
    assert np.array_equal(image, before)  # input not overwritten
    assert model.family == "deeplabv3plus"
    assert model.architecture == "deeplabv3plus"
    assert model.spatial_dims == 2
    assert model.classes == (0, 1, 2)
    assert model.network_kwargs["encoder_name"] == "resnet18"
    assert all(p % 16 == 0 for p in model.patch_size)
    meta = model.metadata()
    assert meta["family"] == "deeplabv3plus"
    assert meta["network_kwargs"]["decoder_channels"] == 16


def test_save_load_round_trip_gives_identical_predictions(stack_model, tmp_path):
    model, stack = stack_model
    plane = stack[0]
    expected = predict(model, plane, device="cpu")
    assert expected.shape == (3, 32, 32)
    path = model.save(tmp_path / "deeplab.pt")
    loaded = models.load_model(path)
    assert loaded.family == "deeplabv3plus"
    assert loaded.network_kwargs == model.network_kwargs
    np.testing.assert_array_equal(models.predict(loaded, plane, device="cpu"), expected)


def test_stack_predicted_plane_by_plane(stack_model):
    model, stack = stack_model
    assert model.slicewise
    assert model.spatial_dims == 2
    probs = predict(model, stack, device="cpu")
    assert probs.shape == (3, 3, 32, 32)
    for z in range(stack.shape[0]):
        np.testing.assert_allclose(probs[:, z], predict(model, stack[z], device="cpu"), atol=1e-5)


def test_bad_family_and_encoder_names_list_the_choices():
    image, labels = _image_2d()
    with pytest.raises(ValueError, match=r"Unknown model family 'deeplab'.*deeplabv3plus"):
        train(image, labels, family="deeplab")
    with pytest.raises(ValueError, match=r"Unknown DeepLabV3\+ encoder 'resnet9'.*resnet18"):
        train(image, labels, family="deeplabv3plus", encoder="resnet9")
    with pytest.raises(ValueError, match="applies to the 'deeplabv3plus' family only"):
        train(image, labels, family="unet", encoder="resnet18")
    with pytest.raises(ValueError, match="disagree"):
        train(image, labels, family="deeplabv3plus", architecture="unet")
    with pytest.raises(ValueError, match="at least 2 patches per step"):
        train(image, labels, family="deeplabv3plus", batch_size=1, **SMALL)
    with pytest.raises(ValueError, match="is 2D, got spatial_dims=3"):
        train(
            np.stack([image] * 4),
            np.stack([labels] * 4),
            family="deeplabv3plus",
            spatial_dims=3,
            **SMALL,
        )
    with pytest.raises(ValueError, match="multiple of"):
        train(image, labels, family="deeplabv3plus", patch_size=(24, 24), **SMALL)
    with pytest.raises(ValueError, match=r"no ImageNet weights for .*'mobilenet_v2'"):
        train(image, labels, family="deeplabv3plus", encoder="mobilenet_v2", pretrained=True)
    assert "deeplabv3plus" in FAMILY_NAMES
    assert "unet" in FAMILY_NAMES


def test_architecture_keyword_still_selects_monai_networks():
    image, labels = _image_2d()
    model = train(
        image,
        labels,
        architecture="basicunet",
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        validation_fraction=0.0,
        device="cpu",
    )
    assert model.family == "basicunet"


def test_cli_trains_and_predicts_with_family_deeplabv3plus(tmp_path, capsys):
    image, labels = _image_2d()
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    model_path, out = tmp_path / "model.pt", tmp_path / "pred.tif"
    common = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu"]
    code = main(
        ["train", str(tmp_path / "image.tif"), str(tmp_path / "labels.tif"), "-o", str(model_path)]
        + ["--family", "deeplabv3plus", "--encoder", "resnet18", "--validation-fraction", "0"]
        + common
    )
    assert code == 0
    assert "epoch 1:" in capsys.readouterr().out
    model = SegmentationModel.load(model_path)
    assert model.family == "deeplabv3plus"
    assert model.network_kwargs["encoder_name"] == "resnet18"
    code = main(["predict", str(model_path), str(tmp_path / "image.tif"), "-o", str(out)])
    assert code == 0
    predicted = tifffile.imread(out)
    assert predicted.shape == (32, 32)
    assert set(np.unique(predicted)) <= {0, 1, 2}
