"""OME-Zarr outputs open in a real napari viewer through the plugin: lazy, multiscale, in place."""

from __future__ import annotations

import numpy as np
import pytest
from _canvas import show_viewer
from npe2 import PluginManager

from napari_seglab.batch.omezarr import write_ome_zarr

da = pytest.importorskip("dask.array")


def test_labels_output_opens_as_lazy_multiscale_labels(make_napari_viewer, qtbot, tmp_path):
    labels = np.zeros((24, 96, 80), np.uint16)
    labels[4:20, 10:60, 20:70] = 2
    labels[8:12, 30:40, 30:40] = 5
    target = tmp_path / "ct_001_labels.ome.zarr"
    write_ome_zarr(
        labels,
        target,
        spacing=(2.5, 0.8, 0.8),
        origin=(-40.0, 3.0, 5.0),
        kind="labels",
        pyramid_levels=3,
        chunks=(8, 32, 32),
    )
    pm = PluginManager.instance()
    pm.discover()
    offered = {r.command for r in pm.iter_compatible_readers([str(target)])}
    assert "napari-seglab.get_ome_zarr_reader" in offered

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(target), plugin="napari-seglab")
    assert type(layer).__name__ == "Labels"
    assert layer.multiscale is True
    assert len(layer.data) == 3
    assert all(isinstance(level, da.Array) for level in layer.data)  # backed by the store
    assert layer.data[0].shape == labels.shape
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.8))
    np.testing.assert_allclose(layer.translate, (-40.0, 3.0, 5.0))
    show_viewer(viewer, qtbot, 700, 500)
    viewer.dims.set_point(0, -40.0 + 2.5 * 10)  # plane 10 of the full level
    qtbot.wait(50)
    np.testing.assert_array_equal(np.asarray(layer.data[0][10]), labels[10])
    world = (-40.0 + 2.5 * 10, 3.0 + 0.8 * 35, 5.0 + 0.8 * 35)  # voxel (10, 35, 35)
    level, value = layer.get_value(world, world=True)
    assert value == 5
    assert level in (0, 1, 2)


def test_probability_image_opens_as_channel_layers(make_napari_viewer, tmp_path):
    probs = np.random.default_rng(0).random((2, 16, 64, 64)).astype(np.float32)
    target = tmp_path / "ct_001_probabilities.ome.zarr"
    write_ome_zarr(probs, target, spacing=(1.0, 2.0, 0.5, 0.5), pyramid_levels=2)
    viewer = make_napari_viewer()
    layers = viewer.open(str(target), plugin="napari-seglab")
    assert len(layers) == 2  # the "c" axis split into one layer per class
    for channel, layer in enumerate(layers):
        assert type(layer).__name__ == "Image"
        assert layer.multiscale is True
        assert isinstance(layer.data[0], da.Array)
        np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
        np.testing.assert_array_equal(np.asarray(layer.data[0]), probs[channel])
