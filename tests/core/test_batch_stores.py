"""Lazy images predicted into a zarr store equal in-memory prediction; cancel leaves nothing."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from test_batch_blockwise import smooth_volume, tiny_model

from napari_seglab.batch.stores import is_lazy, predict_into_store_events, spatial_shape
from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.unet import predict_and_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_is_lazy_tells_dask_zarr_and_memmaps_from_arrays(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 4)))
    assert not is_lazy(np.zeros(3))
    assert is_lazy(da.zeros((4, 4)))
    assert is_lazy(zarr.zeros((4, 4)))
    assert is_lazy(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert not is_lazy([1, 2, 3])


def test_spatial_shape_drops_rgb_and_channel_axes():
    model = tiny_model(3, (8, 16, 16))
    assert spatial_shape(model, (5, 6, 7)) == (5, 6, 7)
    assert spatial_shape(model, (2, 5, 6, 7), channel_axis=0) == (5, 6, 7)


def test_store_prediction_of_a_dask_volume_equals_in_memory(tmp_path):
    model = tiny_model(3, (8, 16, 16))
    volume = smooth_volume((12, 40, 36), seed=3)
    lazy = da.from_array(volume, chunks=(4, 20, 18))
    result = run_to_end(
        predict_into_store_events(
            model,
            lazy,
            tmp_path / "predictions",
            instances="connected",
            probabilities=True,
            spacing=(2.0, 0.5, 0.5),
            device="cpu",
            block_shape=(6, 20, 20),
        )
    )
    expected = predict_and_split(model, volume, device="cpu", instances="connected")
    assert isinstance(result.labels, zarr.Array)  # a Labels layer on it can be painted
    np.testing.assert_array_equal(result.labels[:], expected.labels)
    np.testing.assert_allclose(np.asarray(result.probabilities), expected.probabilities, atol=1e-5)
    assert result.spacing == (2.0, 0.5, 0.5)
    # same objects after relabelling: a one-to-one map between the two id sets
    pairs = np.unique(np.stack([result.instances[:].ravel(), expected.instances.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
    stores = list((tmp_path / "predictions").glob("prediction-*.zarr"))
    assert len(stores) == 1


def test_a_cancelled_or_refused_store_prediction_leaves_no_store(tmp_path):
    model = tiny_model(2, (16, 16))
    image = da.from_array(smooth_volume((64, 64)), chunks=32)
    with pytest.raises(JobCancelled):
        run_to_end(
            predict_into_store_events(
                model, image, tmp_path, device="cpu", block_shape=(32, 32), cancel=lambda: True
            )
        )
    with pytest.raises(ValueError, match="watershed"):
        run_to_end(predict_into_store_events(model, image, tmp_path, instances="watershed"))
    assert list(tmp_path.iterdir()) == []


def test_regions_on_screen_fill_one_labels_array_as_the_whole_prediction():
    from napari_seglab.batch.stores import predict_region_events, visible_region

    model = tiny_model(3, (4, 16, 16))
    volume = smooth_volume((12, 40, 44), seed=3)
    whole = predict_and_split(model, volume, device="cpu")
    labels = zarr.zeros(volume.shape, chunks=(4, 16, 16), dtype=whole.labels.dtype)
    first = visible_region(volume.shape, [[-5.2, 30.4], [20.7, 60.0]], (6,), depth=(4,))
    assert first == (slice(4, 9), slice(0, 22), slice(30, 44))
    run_to_end(predict_region_events(model, volume, first, labels, device="cpu"))
    np.testing.assert_array_equal(labels[first], whole.labels[first])
    assert not labels[:4].any()  # nothing outside the region
    second = visible_region(volume.shape, [[10, 0], [39, 20]], (0,))
    run_to_end(predict_region_events(model, volume, second, labels, device="cpu"))
    np.testing.assert_array_equal(labels[second], whole.labels[second])
    np.testing.assert_array_equal(labels[first], whole.labels[first])
    with pytest.raises(ValueError, match="shows no part of the image"):
        visible_region(volume.shape, [[50, 50], [60, 60]], (0,))
    with pytest.raises(ValueError, match="spatial shape"):
        run_to_end(predict_region_events(model, volume, first, np.zeros((3, 3, 3))))
