"""The U-Net dock with Mask2Former: a "Thing classes" field, class and object Labels layers."""

from __future__ import annotations

# MONAI must load before the first viewer (see test_unet_widget.py).
import monai.networks.nets  # noqa: F401
import numpy as np
import pytest

from napari_seglab import unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A tiny Swin + Mask2Former (as tests/core/test_mask2former.py).
TINY = {
    "backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
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


def test_thing_classes_field_and_panoptic_prediction_layers(make_napari_viewer, qtbot):
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    classes = np.zeros((64, 64), np.uint8)
    classes[:, 48:] = 2
    classes[8:20, 8:20] = classes[8:20, 20:32] = classes[34:46, 10:22] = 1
    image = (classes == 1) + 0.5 * (classes == 2) + rng.normal(0, 0.1, classes.shape)
    image = image.astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    viewer.add_labels(classes, name="classes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    assert widget.things.native.isHidden()  # U-Net: no thing classes
    assert "network_kwargs" not in widget.training_settings()
    widget.architecture.value = "mask2former"
    assert not widget.things.native.isHidden()
    widget.things.value = "1"
    settings = widget.training_settings()
    assert settings["architecture"] == "mask2former"
    assert settings["network_kwargs"] == {"things": [1]}
    widget.things.value = "one"
    with pytest.raises(ValueError, match="thing classes"):
        widget.training_settings()
    widget.architecture.value = "unet"
    assert widget.things.native.isHidden()

    # Predict with a Mask2Former model (trained here, tiny, with the settings the field gives)
    widget.model = unet.train(
        image,
        classes,
        family="mask2former",
        network_kwargs={**TINY, "things": [1]},
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        validation_fraction=0,
        device="cpu",
    )
    widget.device.value = "cpu"
    widget.predict_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    expected = unet.predict_and_split(widget.model, image, device="cpu")
    np.testing.assert_array_equal(viewer.layers["img mask2former"].data, expected.labels)
    objects = viewer.layers["img mask2former objects"].data
    np.testing.assert_array_equal(objects, expected.instances)
    assert "img U-Net" not in viewer.layers
