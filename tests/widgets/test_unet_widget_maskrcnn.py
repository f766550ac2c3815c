"""The U-Net dock trains Mask R-CNN (an instance family) and predicts an instance Labels layer."""

from __future__ import annotations

# MONAI must load before the first viewer (see test_unet_widget.py).
import monai.networks.nets  # noqa: F401
import numpy as np
import pytest

from napari_seglab.unet import predict_and_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_maskrcnn_family_trains_and_predicts_instances_in_the_viewer(make_napari_viewer, qtbot):
    rng = np.random.default_rng(0)
    ids = np.zeros((64, 64), np.int32)
    ids[10:22, 10:22] = 1
    ids[10:22, 22:34] = 2  # touching the first
    ids[40:54, 30:44] = 3
    image = (rng.normal(0.0, 0.2, ids.shape) + (ids > 0)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    viewer.add_labels(ids, name="objects")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    assert "maskrcnn" in widget.architecture.choices
    widget.architecture.value = "maskrcnn"
    widget.labels_combo.value = viewer.layers["objects"]
    widget.epochs.value = 1
    widget.time_budget.value = 2  # one or two steps of the default ResNet-18 Mask R-CNN
    widget.device.value = "cpu"
    widget.binary.value = True  # would merge the objects: refused, no model, no layer
    widget.train_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert widget.model is None
    assert "instance labels" in widget.status.text()
    widget.binary.value = False

    layers_before = [layer.name for layer in viewer.layers]
    widget.train_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=300_000)
    model = widget.model
    assert model is not None, widget.status.text()
    assert model.family == "maskrcnn"
    assert widget.plot.epochs == [1]
    assert np.isfinite(widget.plot.losses).all()
    assert [layer.name for layer in viewer.layers] == layers_before  # training adds no layer

    widget.predict_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    layer = viewer.layers["img maskrcnn objects"]
    expected = predict_and_split(model, image, device="cpu").instances
    np.testing.assert_array_equal(layer.data, expected)
    assert "img U-Net" not in viewer.layers  # an instance family adds its objects only
