"""Values that cannot give a right answer are refused, never turned into a silent wrong one.

Non-finite images for the U-Net, NaN weights, label ids that do not fit a
small integer type, and SAM prompts that cannot be right (issue 12).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seglab import imaging
from napari_seglab.unet import predict, train

TINY_2D = {"channels": [4, 8], "strides": [2]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(shape=(32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark background and its semantic labels."""
    image = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    image[8:20, 10:22] = 1.0
    labels[8:20, 10:22] = 1
    return image, labels


@pytest.fixture(scope="module")
def tiny_model(one_torch_thread):
    image, labels = blobs()
    return train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(16, 16),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        validation_fraction=0,
        augment=False,
        device="cpu",
    )


# ------------------------------------------------------------------ finite images
def test_non_finite_counts_and_finds_the_first_bad_value():
    stack = np.zeros((3, 4, 5), dtype=np.float32)
    stack[1, 2, 3] = np.inf
    stack[2, 0:2, 0:2] = np.nan
    assert imaging.non_finite(stack) == (5, (1, 2, 3))
    assert imaging.non_finite(np.zeros((3, 4), dtype=np.uint16)) == (0, None)
    assert imaging.non_finite(np.ones((3, 4))) == (0, None)


def test_check_finite_names_count_position_and_shape():
    image = np.zeros((6, 7))
    image[4, 5] = -np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value.*index \(4, 5\).*shape \(6, 7\)"):
        imaging.check_finite(image)


def test_prediction_refuses_an_image_with_one_infinite_pixel(tiny_model):
    image, _ = blobs()
    image[3, 30] = np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value.*index \(3, 30\)"):
        predict(tiny_model, image, device="cpu")


def test_prediction_refuses_a_nan_block_in_a_stack_plane_by_plane(tiny_model):
    image, _ = blobs()
    stack = np.stack([image, image, image])
    stack[2, 5:7, 5:8] = np.nan
    with pytest.raises(ValueError, match=r"6 non-finite value.*index \(2, 5, 5\)"):
        predict(tiny_model, stack, device="cpu", slicewise=True)


def test_prediction_of_a_finite_image_still_works(tiny_model):
    image, _ = blobs()
    probs = predict(tiny_model, image, device="cpu")
    assert probs.shape == (2, *image.shape)
    assert np.isfinite(probs).all()


def test_training_refuses_a_non_finite_image_and_names_which_one():
    image, labels = blobs()
    bad = image.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"image 2 of 2 holds 1 non-finite.*index \(0, 1\)"):
        train([image, bad], [labels, labels], max_epochs=1, device="cpu")


def test_a_model_with_nan_weights_is_never_saved(tiny_model, tmp_path):
    import copy

    poisoned = copy.deepcopy(tiny_model)
    weight = next(p for p in poisoned.network.parameters() if p.ndim > 1)
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    target = tmp_path / "nan.pt"
    with pytest.raises(ValueError, match="NaN or ±Inf"):
        poisoned.save(target)
    assert not target.exists()
    assert tiny_model.save(tmp_path / "ok.pt").exists()


def test_training_stops_with_an_error_when_the_loss_becomes_nan(tiny_model):
    import copy

    poisoned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in poisoned.network.parameters():
            p.fill_(float("nan"))
    image, labels = blobs()
    with pytest.raises(RuntimeError, match=r"step 1: the loss became nan"):
        train(
            image,
            labels,
            initial_model=poisoned,
            max_epochs=1,
            steps_per_epoch=2,
            batch_size=2,
            validation_fraction=0,
            augment=False,
            device="cpu",
        )
