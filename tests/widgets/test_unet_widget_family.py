"""The U-Net dock trains and predicts a non-U-Net family (DeepLabV3+) in a real viewer."""

from __future__ import annotations

# MONAI must load before the first viewer (see test_unet_widget.py).
import monai.networks.nets  # noqa: F401
import numpy as np
import pytest

from napari_seglab.unet import predict, probabilities_to_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_deeplab_family_trains_and_predicts_in_the_viewer(make_napari_viewer, qtbot):
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint8)
    labels[6:20, 8:24] = 1
    image = (rng.normal(0.0, 0.3, labels.shape) + labels).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="annotation")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    assert "deeplabv3plus" in widget.architecture.choices
    widget.architecture.value = "deeplabv3plus"
    widget.patch_size.value = "32 32"
    widget.epochs.value = 1
    widget.batch_size.value = 2
    widget.augment.value = False
    widget.device.value = "cpu"

    widget.train_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=300_000)
    model = widget.model
    assert model is not None, widget.status.text()
    assert model.family == "deeplabv3plus"
    assert widget.plot.epochs == [1]
    assert np.isfinite(widget.plot.losses).all()

    widget.predict_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    expected = probabilities_to_labels(predict(model, image, device="cpu"), model.classes)
    np.testing.assert_array_equal(viewer.layers["img U-Net"].data, expected)
