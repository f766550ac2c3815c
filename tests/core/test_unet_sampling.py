"""U-Net patch sampling: metadata tracking off during fetches, direct crops, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seglab.unet import data as udata
from napari_seglab.unet import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batches(untracked: bool, augment: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from monai.data import DataLoader, Dataset

    rng = np.random.default_rng(0)
    target = (rng.random((1, 48, 40)) > 0.7).astype(np.float32)
    target[:, :6] = 2  # ignored rows
    image = rng.normal(size=(1, 48, 40)).astype(np.float32)
    sample = udata.prepare_sample(udata.PreparedPair(image, target), (16, 16), 2)
    transform = udata.training_transforms(
        (16, 16), 2, num_samples=3, augment=augment, ratios=[1.0, 1.0, 0.0]
    )
    loader = DataLoader(Dataset([sample] * 3, transform), batch_size=1)
    transform.set_random_state(seed=4)
    batches = udata.untracked_batches(loader) if untracked else loader
    plain = [(b["image"], b["label"]) for b in batches]
    return [(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)) for x, y in plain]


@pytest.mark.parametrize("augment", [False, True])
def test_untracked_batches_equal_monai_crops_and_restore_the_flag(augment):
    from monai.data import MetaTensor, get_track_meta

    tracked = _batches(untracked=False, augment=augment)  # MONAI's own crop transform
    assert get_track_meta()
    fast = _batches(untracked=True, augment=augment)
    assert get_track_meta()  # restored after every fetch
    assert len(fast) == len(tracked) == 3
    for (x, y), (fx, fy) in zip(tracked, fast):
        assert x.shape == (3, 1, 16, 16)
        assert not isinstance(fx, MetaTensor)
        assert torch.equal(x, fx)
        assert torch.equal(y, fy)
        assert (fy < 2).any()  # centred on annotated classes


def test_seed_fixes_patch_sampling_whatever_torch_global_state():
    rng = np.random.default_rng(1)
    labels = (rng.random((40, 40)) > 0.6).astype(np.uint8)
    image = labels + rng.normal(0, 0.5, labels.shape).astype(np.float32)
    kwargs = {"channels": [4, 8], "strides": [2]}
    histories = []
    for torch_seed in (1, 2):
        torch.manual_seed(torch_seed)  # MONAI's DataLoader reseeds transforms from this
        model = train(image, labels, network_kwargs=kwargs, patch_size=(16, 16), batch_size=2,
                      max_epochs=2, steps_per_epoch=2, validation_fraction=0, seed=5)  # fmt: skip
        histories.append([e["loss"] for e in model.history])
    assert histories[0] == histories[1]
