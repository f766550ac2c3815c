"""The batch dock in a real viewer: run a folder on a local cluster, open a result, quit."""

from __future__ import annotations

# MONAI must load before the first viewer (see test_unet_widget.py).
import monai.networks.nets  # noqa: F401
import numpy as np
import pytest
import tifffile
from _quit import run_and_quit
from qtpy.QtCore import Qt

from napari_seglab.unet import predict_and_split, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_2D = {"channels": [4, 8], "strides": [2]}


def blobs(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.1, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), dtype=np.uint8)
    for r, c in rng.integers(6, size - 12, (3, 2)):
        image[r : r + 8, c : c + 8] += 1.0
        labels[r : r + 8, c : c + 8] = 1
    return image, labels


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    image, labels = blobs(0)
    model = train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(16, 16),
        max_epochs=2,
        steps_per_epoch=3,
        batch_size=2,
        validation_fraction=0,
        augment=False,
        device="cpu",
    )
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    model.save(path)
    return path


def image_folder(tmp_path, n=3):
    folder = tmp_path / "images"
    folder.mkdir()
    images = {}
    for i in range(n):
        images[f"cells_{i}"] = blobs(10 + i)[0]
        tifffile.imwrite(folder / f"cells_{i}.tif", images[f"cells_{i}"])
    return folder, images


def fill_form(widget, folder, output):
    widget.form.inputs.value = str(folder)
    widget.form.output.value = str(output)
    widget.form.workers.value = 1


def test_batch_from_the_viewer_model_opens_the_result(
    make_napari_viewer, qtbot, tmp_path, model_file
):
    """The model loaded in the U-Net dock runs on a folder; a double click opens an output."""
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1280, 900)
    _, unet = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Batch prediction")
    assert "No model" in widget.model_info.text()
    unet.load_model(model_file)  # what "Load model…" does after its dialog
    assert "classes [0, 1]" in widget.model_info.text()

    folder, images = image_folder(tmp_path)
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    fill_form(widget, folder, tmp_path / "out")
    layers_before = len(viewer.layers)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert widget.jobs.running("batch")
    assert not widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.jobs.running("batch"), timeout=180_000)

    assert widget.result is not None, widget.status.text()
    assert widget.result.counts["done"] == 3
    assert widget.result.counts["failed"] == 1
    assert "Batch finished" in widget.status.text()
    assert len(viewer.layers) == layers_before  # a run adds no layer by itself
    texts = [widget.results.item(i).text() for i in range(widget.results.count())]
    assert any(t.startswith("broken: failed") for t in texts)
    entry = next(
        widget.results.item(i)
        for i in range(widget.results.count())
        if texts[i] == "cells_1_labels.tif"
    )
    widget.open_items([entry])
    layer = viewer.layers["cells_1_labels"]
    assert layer.__class__.__name__ == "Labels"
    expected = predict_and_split(unet.model, images["cells_1"], device="cpu").labels
    np.testing.assert_array_equal(np.asarray(layer.data), expected)

    # A second run skips what is done: no item is recomputed.
    mtime = (tmp_path / "out" / "cells_1_labels.tif").stat().st_mtime_ns
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.jobs.running("batch"), timeout=180_000)
    assert widget.result.counts.get("skipped") == 3
    assert (tmp_path / "out" / "cells_1_labels.tif").stat().st_mtime_ns == mtime


def test_bad_forms_are_refused_before_any_work(make_napari_viewer, tmp_path, model_file, errors):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Batch prediction")
    folder, _ = image_folder(tmp_path, n=1)
    fill_form(widget, folder, folder / "out")
    widget.run_button.click()  # no model in the viewer
    assert not widget.jobs.running("batch")
    assert "Expected a model" in widget.status.text()

    widget.form.source.value = "Model file"
    widget.form.model_file.value = str(model_file)
    widget.run_button.click()  # the output folder is inside the input folder
    assert not widget.jobs.running("batch")
    assert "outside the input folder" in widget.status.text()
    assert not (folder / "out").exists()
    assert len(errors) == 2


def test_an_ome_zarr_output_opens_as_a_lazy_labels_layer(make_napari_viewer, tmp_path):
    from napari_seglab._widgets.batch import open_output
    from napari_seglab.batch.omezarr import write_ome_zarr

    labels = np.random.default_rng(0).integers(0, 3, (6, 40, 40)).astype(np.uint8)
    path = write_ome_zarr(
        labels, tmp_path / "ct_labels.ome.zarr", spacing=(3, 1, 1), kind="labels"
    )
    viewer = make_napari_viewer()
    [layer] = open_output(viewer, path)
    assert layer.__class__.__name__ == "Labels"
    data = layer.data[0] if layer.multiscale else layer.data
    assert not isinstance(data, np.ndarray)  # read lazily
    np.testing.assert_array_equal(np.asarray(data), labels)
    np.testing.assert_allclose(layer.scale, (3, 1, 1))


BATCH_QUIT_SCRIPT = """
import time
import numpy as np
import tifffile
import napari
from qtpy.QtCore import QTimer

folder, out, model = {folder!r}, {out!r}, {model!r}
for i in range(6):
    image = np.random.default_rng(i).random((256, 256), dtype=np.float32)
    tifffile.imwrite(f"{{folder}}/img_{{i}}.tif", image)
viewer = napari.Viewer(show=False)
_, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Batch prediction")
widget.form.source.value = "Model file"
widget.form.model_file.value = model
widget.form.inputs.value = folder
widget.form.output.value = out
widget.form.workers.value = 1
widget.run_button.click()
started = time.monotonic()


def quit_when_running():
    if "Running" in widget.status.text() or time.monotonic() - started > 20:
        print("running at quit:", widget.jobs.running("batch"))
        viewer.window._qt_window.close(quit_app=True)
    else:
        QTimer.singleShot(50, quit_when_running)


QTimer.singleShot(50, quit_when_running)
napari.run()
print("quit cleanly")
"""


def test_quitting_napari_during_a_batch_exits_cleanly(tmp_path, model_file):
    folder = tmp_path / "in"
    folder.mkdir()
    script = BATCH_QUIT_SCRIPT.format(
        folder=str(folder), out=str(tmp_path / "out"), model=str(model_file)
    )
    run_and_quit(script, tmp_path)
