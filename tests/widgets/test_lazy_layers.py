"""Lazy layers (OME-Zarr, dask, zarr) in the widgets: predicted and evaluated without loading them.

The U-Net widget predicts a lazy image block by block into a zarr store (the
result layers are zarr/dask backed and equal the in-memory prediction); the
evaluation widget streams dask and zarr label layers to the same scores as
numpy ones.
"""

from __future__ import annotations

import dask.array as da

# MONAI must load before the first viewer (see test_unet_widget.py).
import monai.networks.nets  # noqa: F401
import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage as ndi

from napari_seglab import metrics
from napari_seglab.batch.omezarr import write_ome_zarr
from napari_seglab.imaging import IntensityRecipe
from napari_seglab.unet import predict_and_split
from napari_seglab.unet.architectures import network_kwargs
from napari_seglab.unet.model import SegmentationModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_3d_model() -> SegmentationModel:
    torch.manual_seed(0)
    meta = {
        "architecture": "unet",
        "network_kwargs": network_kwargs("unet", 3, overrides={"channels": [4, 8]}),
        "spatial_dims": 3,
        "in_channels": 1,
        "classes": [0, 1],
        "patch_size": [8, 16, 16],
        "intensity": IntensityRecipe("percentile", stats={"lo": 0.0, "hi": 1.0}).to_dict(),
    }
    model = SegmentationModel.from_metadata(meta)
    model.network.eval()
    return model


def test_unet_predicts_an_ome_zarr_layer_block_by_block(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    volume = ndi.gaussian_filter(rng.random((10, 48, 40)).astype(np.float32), 2)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    store = write_ome_zarr(volume, tmp_path / "stack.ome.zarr", spacing=(2.0, 0.5, 0.5))
    model_path = tmp_path / "tiny.pt"
    tiny_3d_model().save(model_path)

    viewer = make_napari_viewer()
    [image] = viewer.open(str(store), plugin="napari-seglab")
    level0 = image.data[0] if image.multiscale else image.data
    assert not isinstance(level0, np.ndarray)  # opened lazily
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    widget.load_model(model_path)
    widget.data_form.image.value = image
    widget.probability_layer.value = True
    widget.predict_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)

    labels = viewer.layers[f"{image.name} U-Net"]
    assert isinstance(labels.data, zarr.Array)  # on disk, in the cache folder
    expected = predict_and_split(widget.model, volume, device="cpu")
    np.testing.assert_array_equal(labels.data[:], expected.labels)
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))
    chances = viewer.layers[f"{image.name} U-Net P(label 1)"]
    assert isinstance(chances.data, da.Array)
    np.testing.assert_allclose(np.asarray(chances.data), expected.probabilities[1], atol=1e-5)
    assert len(list((tmp_path / "cache" / "predictions").glob("prediction-*.zarr"))) == 1


def test_evaluation_of_dask_and_zarr_layers_equals_numpy(make_napari_viewer, qtbot):
    rng = np.random.default_rng(1)
    gt = ndi.label(ndi.gaussian_filter(rng.random((6, 40, 40)), 2) > 0.52)[0].astype(np.uint16)
    pred = np.roll(gt, 2, axis=2)
    viewer = make_napari_viewer()
    viewer.add_labels(zarr.array(gt, chunks=(2, 20, 20)), name="ground truth")
    viewer.add_labels(da.from_array(pred, chunks=(2, 20, 20)), name="prediction")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Evaluation")
    widget.form.pred.value = viewer.layers["prediction"]
    widget.form.gt.value = viewer.layers["ground truth"]
    widget.evaluate_button.click()
    qtbot.waitUntil(lambda: not widget.busy and widget.evaluation is not None, timeout=60_000)
    expected = metrics.evaluate(pred, gt)
    assert widget.evaluation.table() == expected.table()


def test_crf_refines_lazy_layers_block_by_block(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_seglab import crf, data

    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    sample = data.nuclei_3d(shape=(6, 48, 48), n_objects=4, seed=2)
    probs = data.degrade_probabilities(sample.labels)
    viewer = make_napari_viewer()
    viewer.add_image(zarr.array(sample.image, chunks=(2, 24, 24)), name="stack", scale=(2, 1, 1))
    viewer.add_image(da.from_array(probs[1], chunks=(2, 24, 24)), name="P(nuclei)")
    viewer.add_labels(da.from_array(sample.labels, chunks=(2, 24, 24)), name="lazy labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "CRF refinement")
    widget.form.image.value = viewer.layers["stack"]
    widget.form.given.value = viewer.layers["P(nuclei)"]
    widget.apply_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)

    result = viewer.layers["P(nuclei) CRF"]
    assert isinstance(result.data, zarr.Array)  # never loaded whole: a store in the cache
    expected = crf.refine(sample.image, probs, spacing=(2.0, 1.0, 1.0))
    np.testing.assert_array_equal(result.data[:], expected)
    np.testing.assert_allclose(result.scale, (2, 1, 1))
    [store] = (tmp_path / "cache" / "crf").glob("crf-*.zarr")
    assert not (store / "scratch").exists()

    widget.form.given.value = viewer.layers["lazy labels"]  # only maps go block by block
    widget.apply_button.click()
    assert "only probability maps are refined block by block" in widget.status.text()
    assert "lazy labels CRF" not in viewer.layers


def test_unet_predicts_the_visible_region_into_one_layer(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    volume = ndi.gaussian_filter(rng.random((10, 64, 64)).astype(np.float32), 2)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    store = write_ome_zarr(volume, tmp_path / "stack.ome.zarr", spacing=(2.0, 0.5, 0.5))
    model_path = tmp_path / "tiny.pt"
    tiny_3d_model().save(model_path)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(store), plugin="napari-seglab")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    widget.load_model(model_path)
    widget.data_form.image.value = image
    expected = predict_and_split(widget.model, volume, device="cpu").labels

    def show(plane, centre_rc, rows_on_screen):
        """Show ``rows_on_screen`` rows around ``centre_rc`` of ``plane``; predict; the cols."""
        viewer.dims.set_current_step(0, plane)
        height, width = viewer.canvas.size
        viewer.camera.zoom = height / (rows_on_screen * 0.5)  # screen pixels per world unit
        viewer.camera.center = (plane * 2.0, centre_rc[0] * 0.5, centre_rc[1] * 0.5)
        widget.region_button.click()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
        half = width / viewer.camera.zoom / 2 / 0.5  # columns each side, data pixels
        return slice(int(np.floor(centre_rc[1] - half)), int(np.ceil(centre_rc[1] + half)) + 1)

    cols = show(3, (16, 20), 12)  # rows 10..22 on screen
    layer = viewer.layers[f"{image.name} U-Net (visible)"]
    assert isinstance(layer.data, zarr.Array)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    done = np.asarray(layer.data[:])
    region = (slice(0, 8), slice(10, 23), cols)  # planes 3 +- 4 (patch depth 8), on screen
    assert widget.status.text().startswith(f"Region [0:8, 10:23, {cols.start}:{cols.stop}]")
    np.testing.assert_array_equal(done[region], expected[region])
    assert expected[region].any()
    outside = np.ones(done.shape, bool)
    outside[region] = False
    assert not done[outside].any()  # nothing beyond the screen and the model's reach
    other = show(6, (48, 40), 12)  # another area: the same layer fills in
    assert [lyr.name for lyr in viewer.layers].count(f"{image.name} U-Net (visible)") == 1
    done = np.asarray(layer.data[:])
    second = (slice(2, 10), slice(42, 55), other)
    np.testing.assert_array_equal(done[second], expected[second])
    np.testing.assert_array_equal(done[region], expected[region])


def test_training_on_a_lazy_stack_reads_only_the_annotated_box(make_napari_viewer, qtbot):
    sample = data_module().nuclei_3d(shape=(30, 48, 48), n_objects=6, seed=1)
    sparse = np.full(sample.semantic.shape, 255, np.uint8)  # 255: not annotated
    sparse[14:16] = sample.semantic[14:16]  # two annotated planes
    viewer = make_napari_viewer()
    viewer.add_image(zarr.array(sample.image, chunks=(2, 48, 48)), name="stack")
    viewer.add_labels(da.from_array(sparse, chunks=(2, 48, 48)), name="sparse")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    widget.data_form.use_ignore.value = True
    widget.data_form.ignore_value.value = 255
    _, image, _, labels = widget.data_form.training_data((8, 32, 32))
    assert image.shape == labels.shape == (10, 48, 48)  # planes 14..15 +- 4 (half a patch)
    np.testing.assert_array_equal(image, sample.image[10:20])
    np.testing.assert_array_equal(labels, sparse[10:20])
    widget.patch_size.value = "8 32 32"
    widget.epochs.value = 1
    widget.batch_size.value = 2
    widget.device.value = "cpu"
    widget.train_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert widget.model is not None
    assert widget.plot.epochs == [1]


def data_module():
    from napari_seglab import data

    return data


def test_sam_finetuning_reads_only_the_planes_with_objects_of_a_lazy_stack(make_napari_viewer):
    rng = np.random.default_rng(2)
    image = rng.random((20, 32, 32)).astype(np.float32)
    labels = np.zeros((20, 32, 32), np.uint16)
    labels[6, 4:10, 4:10] = 1
    labels[9, 20:26, 3:9] = 2
    viewer = make_napari_viewer()
    viewer.add_image(zarr.array(image, chunks=(1, 32, 32)), name="stack")
    viewer.add_labels(da.from_array(labels, chunks=(1, 32, 32)), name="objects")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM decoder fine-tuning")
    widget.data.image.value = "stack"
    widget.data.annotations.value = "objects"
    [planes], [annotation] = widget.training_data()
    np.testing.assert_array_equal(np.asarray(planes), image[6:10])  # whole planes 6..9
    np.testing.assert_array_equal(annotation, labels[6:10])
    assert isinstance(annotation, np.ndarray)  # a copy: the layer is never modified
