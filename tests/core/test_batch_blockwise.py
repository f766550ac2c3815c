"""Blockwise prediction equals whole-volume prediction (probabilities, labels, instances)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_seglab.batch.blockwise import (
    BlockProgress,
    create_outputs,
    predict_blockwise,
    predict_blockwise_events,
)
from napari_seglab.batch.windows import (
    WindowGrid,
    choose_block_shape,
    estimate_block_bytes,
)
from napari_seglab.block_components import BlockComponents
from napari_seglab.imaging import IntensityRecipe
from napari_seglab.jobs import JobCancelled
from napari_seglab.unet import predict_and_split, to_instances
from napari_seglab.unet.architectures import network_kwargs
from napari_seglab.unet.model import SegmentationModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(
    dims: int, patch, classes=(0, 1, 2), recipe=None, seed=0, in_channels=1, **layout
) -> SegmentationModel:
    """A small MONAI UNet with random weights and a fitted intensity recipe."""
    torch.manual_seed(seed)
    recipe = recipe or IntensityRecipe("percentile", stats={"lo": 0.0, "hi": 1.0})
    meta = {
        "architecture": "unet",
        "network_kwargs": network_kwargs("unet", dims, overrides={"channels": [4, 8]}),
        "spatial_dims": dims,
        "in_channels": in_channels,
        "classes": list(classes),
        "patch_size": list(patch),
        "intensity": recipe.to_dict(),
        **layout,
    }
    model = SegmentationModel.from_metadata(meta)
    model.network.eval()
    return model


def smooth_volume(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = ndi.gaussian_filter(rng.random(shape).astype(np.float32), 2)
    return ((vol - vol.min()) / (vol.max() - vol.min())).astype(np.float32)


def blockwise_vs_whole(model, image, block_shape, **kwargs):
    ref = predict_and_split(
        model, image, device="cpu", batch_size=3, instances="connected", **kwargs
    )
    out = {
        "probabilities": np.zeros_like(ref.probabilities),
        "labels": np.zeros_like(ref.labels),
        "instances": np.zeros(ref.labels.shape, np.int32),
    }
    result = predict_blockwise(
        model,
        image,
        out,
        block_shape=block_shape,
        device="cpu",
        batch_size=2,
        instances="connected",
        **kwargs,
    )
    return ref, out, result


@pytest.fixture(scope="module")
def model3d():
    return tiny_model(3, (8, 16, 16))


@pytest.fixture(scope="module")
def volume():
    return smooth_volume((24, 40, 40))


def test_3d_blocks_equal_whole_volume(model3d, volume):
    ref, out, result = blockwise_vs_whole(model3d, volume, (8, 16, 16))
    assert result.blocks == 27
    assert result.windows > result.grid_windows
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], ref.labels)
    # identical numbering, not only the same objects
    np.testing.assert_array_equal(out["instances"], ref.instances)
    assert result.objects == ref.instances.max()
    assert ref.instances.max() > 10  # objects cross many block faces


def test_windows_shared_along_the_last_axis_run_once(model3d, volume):
    ref, out, result = blockwise_vs_whole(model3d, volume, (24, 40, 16))
    assert result.blocks == 3
    assert result.windows == result.grid_windows  # only the last axis is cut
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["instances"], ref.instances)


def test_2d_blocks_equal_whole_image():
    model = tiny_model(2, (16, 16), classes=(0, 1))
    image = smooth_volume((45, 70), seed=2)
    ref, out, result = blockwise_vs_whole(model, image, (10, 12))
    assert result.blocks == 5 * 6
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], ref.labels)
    np.testing.assert_array_equal(out["instances"], ref.instances)


def test_plane_by_plane_and_padded_volumes(model3d, volume):
    model2d = tiny_model(2, (16, 16), seed=1)
    ref, out, _ = blockwise_vs_whole(model2d, volume[:7], (3, 10, 12), slicewise=True)
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["instances"], ref.instances)
    # smaller than a window along Z and Y: MONAI pads, and so do the blocks
    small = volume[:6, :12]
    ref, out, _ = blockwise_vs_whole(model3d, small, (3, 5, 7))
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], ref.labels)


@pytest.mark.parametrize("layout", ["rgb", "channel_axis"])
def test_rgb_and_channel_axis_inputs(layout):
    rng = np.random.default_rng(5)
    if layout == "rgb":
        model = tiny_model(2, (16, 16), in_channels=3, rgb=True)
        image = rng.random((40, 50, 3)).astype(np.float32)
    else:
        model = tiny_model(3, (8, 16, 16), in_channels=2, channel_axis=1)
        image = rng.random((12, 2, 30, 40)).astype(np.float32)
    ref = predict_and_split(model, image, device="cpu")
    out = {"probabilities": np.zeros_like(ref.probabilities), "labels": np.zeros_like(ref.labels)}
    result = predict_blockwise(model, image, out, block_shape=(5,) * ref.labels.ndim, device="cpu")
    assert result.shape == ref.labels.shape
    np.testing.assert_allclose(out["probabilities"], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], ref.labels)


def test_dask_input_zarr_outputs_and_budget(tmp_path, model3d, volume):
    da = pytest.importorskip("dask.array")
    ref = predict_and_split(model3d, volume, device="cpu", instances="connected", min_size=5)
    out = create_outputs(
        tmp_path / "out.zarr", model3d, volume.shape, what=("probabilities", "instances")
    )
    assert set(out) == {"probabilities", "labels", "instances"}
    budget = estimate_block_bytes((12, 24, 24), (8, 16, 16), classes=3, batch_size=2)
    events = []
    job = predict_blockwise_events(
        model3d,
        da.from_array(volume, chunks=(8, 8, 8)),
        out,
        memory_budget=budget,
        device="cpu",
        batch_size=2,
        instances="connected",
        min_size=5,
    )
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    assert estimate_block_bytes(result.block_shape, (8, 16, 16), classes=3, batch_size=2) <= budget
    assert result.blocks > 1
    assert all(isinstance(e, BlockProgress) for e in events)
    assert events[-1].stage == "instances"
    predicting = [e for e in events if e.stage == "predicting"]
    assert predicting[-1].done == predicting[-1].total == result.windows
    np.testing.assert_allclose(out["probabilities"][...], ref.probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["labels"][...], ref.labels)
    np.testing.assert_array_equal(out["instances"][...], ref.instances)


def test_cancel_raises_job_cancelled(model3d, volume):
    flag = threading.Event()
    out = {"labels": np.zeros(volume.shape, np.uint8)}
    job = predict_blockwise_events(
        model3d, volume, out, block_shape=(8, 16, 16), device="cpu", cancel=flag
    )
    first = next(job)
    assert first.stage == "predicting"
    flag.set()
    with pytest.raises(JobCancelled):
        next(job)


def test_refusals(model3d, volume):
    out = {"labels": np.zeros(volume.shape, np.uint8), "instances": np.zeros(volume.shape, "i4")}
    with pytest.raises(ValueError, match="watershed"):
        predict_blockwise(model3d, volume, out, instances="watershed")
    unfitted = tiny_model(3, (8, 16, 16), recipe=IntensityRecipe("zscore"))
    with pytest.raises(ValueError, match="not fitted"):
        predict_blockwise(unfitted, volume, out)
    with pytest.raises(ValueError, match="shape"):
        predict_blockwise(model3d, volume, {"labels": np.zeros((3, 3, 3), np.uint8)})
    with pytest.raises(ValueError, match="2D array"):
        predict_blockwise(model3d, volume[0], {"labels": np.zeros(volume.shape[1:], np.uint8)})


def test_block_components_join_u_shape_across_faces():
    labels = np.zeros((6, 9), np.uint8)
    labels[0:5, 1] = 1
    labels[4, 1:8] = 1
    labels[0:5, 7] = 1  # a U over three blocks along X
    labels[0, 4] = 2  # another class touching nothing
    labels[1, 3:6] = 1  # a bar crossing two faces, separate from the U
    comps = BlockComponents(labels.shape)
    ids = np.zeros(labels.shape, np.int32)
    blocks = [(slice(0, 3), slice(c, c + 3)) for c in (0, 3, 6)]
    blocks += [(slice(3, 6), slice(c, c + 3)) for c in (0, 3, 6)]
    for block in sorted(blocks, key=lambda b: (b[0].start, b[1].start)):
        ids[block] = comps.label_block(labels[block], block)
        for axis in (0, 1):
            if block[axis].start:
                face = list(block)
                face[axis] = slice(block[axis].start - 1, block[axis].start)
                own = [slice(None), slice(None)]
                own[axis] = slice(0, 1)
                comps.join_face(
                    ids[tuple(face)],
                    labels[tuple(face)],
                    ids[block][tuple(own)],
                    labels[block][tuple(own)],
                )
    lut, count = comps.lookup()
    np.testing.assert_array_equal(lut[ids], to_instances(labels, method="connected"))
    assert count == 3


def test_window_grid_and_block_shape():
    grid = WindowGrid.build((40, 10), (16, 16), 0.5)
    assert grid.starts == ((0, 8, 16, 24), (0,))
    assert grid.pad_before == (0, 3)
    assert grid.windows((slice(0, 8), slice(0, 10))) == [(0, 0)]
    assert grid.region((slice(8, 16), slice(0, 10))) == (slice(0, 24), slice(0, 16))
    shape = choose_block_shape((500, 500, 500), (32, 32, 32), 256 * 2**20)
    assert all(s % 16 == 0 for s in shape)
    assert estimate_block_bytes(shape, (32, 32, 32)) <= 256 * 2**20
    assert shape != (32, 32, 32)
    assert choose_block_shape((20, 500, 500), (1, 32, 32), 2**40)[0] == 20


def test_a_region_equals_the_whole_volume_there(model3d, volume):
    ref = predict_and_split(model3d, volume, device="cpu", batch_size=3, instances="connected")
    region = (slice(5, 17), slice(9, 31), slice(0, 23))
    shape = tuple(s.stop - s.start for s in region)
    out = {
        "probabilities": np.zeros((model3d.num_classes, *shape), np.float32),
        "labels": np.zeros(shape, ref.labels.dtype),
        "instances": np.zeros(shape, np.int32),
    }
    result = predict_blockwise(
        model3d,
        volume,
        out,
        region=region,
        block_shape=(8, 16, 16),
        device="cpu",
        instances="connected",
    )
    assert result.blocks == 2 * 2 * 2
    np.testing.assert_allclose(
        out["probabilities"], ref.probabilities[(slice(None), *region)], atol=1e-5
    )
    np.testing.assert_array_equal(out["labels"], ref.labels[region])
    # objects of the region, connected within it, numbered as a whole split of the region
    whole_region = predict_and_split(model3d, volume, device="cpu", instances="connected")
    np.testing.assert_array_equal(out["instances"] > 0, whole_region.instances[region] > 0)
    with pytest.raises(ValueError, match="inside the volume"):
        predict_blockwise(model3d, volume, out, region=(slice(0, 30), slice(0, 4), slice(0, 4)))
