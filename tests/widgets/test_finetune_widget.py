"""SAM decoder fine-tuning widget in a real viewer: train a few epochs, save, use in SAM widget."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_seglab.data import nuclei_2d  # noqa: E402
from napari_seglab.sam import PromptSegmenter  # noqa: E402
from napari_seglab.sam.decoder_files import read_decoder_metadata  # noqa: E402


def add_crops(viewer):
    sample = nuclei_2d((128, 128), n_objects=12, seed=0)
    for i, (r, c) in enumerate(((0, 0), (64, 64))):
        viewer.add_image(sample.image[r : r + 64, c : c + 64], name=f"img{i}")
        viewer.add_labels(sample.labels[r : r + 64, c : c + 64].copy(), name=f"gt{i}")
    return sample


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM decoder fine-tuning")
    return widget


def finish(qtbot, widget):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60000)


def test_finetune_save_and_use_in_sam_widget(
    make_napari_viewer, qtbot, tmp_path, one_torch_thread, make_tiny_sam
):
    viewer = make_napari_viewer()
    add_crops(viewer)
    labels_before = [np.array(viewer.layers[f"gt{i}"].data) for i in range(2)]
    widget = open_widget(viewer)
    base = make_tiny_sam(seed=0)
    widget.set_model(base)
    assert "Base model" in widget.model_label.text()
    for i in range(2):
        widget.image_combo.setCurrentText(f"img{i}")
        widget.labels_combo.setCurrentText(f"gt{i}")
        qtbot.mouseClick(widget.add_pair_button, Qt.MouseButton.LeftButton)
    assert widget.pairs == [("img0", "gt0"), ("img1", "gt1")]
    assert widget.pair_list.count() == 2
    assert not widget.save_button.isEnabled()

    widget.epochs.setValue(3)
    widget.learning_rate.setValue(3e-3)
    widget.device_combo.setCurrentText("cpu")
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.cancel_button.isEnabled()
    finish(qtbot, widget)

    result = widget.result
    assert result is not None
    assert result.epochs == 3
    assert widget.plot.epochs == [1, 2, 3]
    assert "before" in widget.result_label.text()
    assert "after" in widget.result_label.text()
    assert widget.save_button.isEnabled()
    assert widget.use_button.isEnabled()
    for i in range(2):  # fine-tuning never writes into a layer
        assert np.array_equal(viewer.layers[f"gt{i}"].data, labels_before[i])

    path = widget.save_decoder(tmp_path / "decoder.pt")
    assert path.is_file()
    assert read_decoder_metadata(path)["validation_dice"]["after"] == result.after

    qtbot.mouseClick(widget.use_button, Qt.MouseButton.LeftButton)
    _, sam_widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    assert sam_widget.model is result.model
    assert sam_widget.decoder_edit.text() == str(path)
    # The SAM widget's segmenter now predicts with the tuned decoder, not the base one.
    image = viewer.layers["img0"].data
    sam_widget.segmenter.set_image(image)
    tuned = PromptSegmenter(result.model)
    tuned.set_image(image)
    original = PromptSegmenter(base)
    original.set_image(image)
    box = (10, 10, 40, 40)
    got = sam_widget.segmenter.predict(box=box).logits
    assert np.array_equal(got, tuned.predict(box=box).logits)
    assert not np.allclose(got, original.predict(box=box).logits)


def test_cancel_keeps_layers_and_best_decoder(
    make_napari_viewer, qtbot, one_torch_thread, make_tiny_sam
):
    viewer = make_napari_viewer()
    add_crops(viewer)
    widget = open_widget(viewer)
    widget.set_model(make_tiny_sam(seed=0))
    widget.image_combo.setCurrentText("img0")
    widget.labels_combo.setCurrentText("gt0")
    widget.epochs.setValue(0)
    widget.time_budget.setValue(600)
    widget.device_combo.setCurrentText("cpu")
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=60000)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    finish(qtbot, widget)
    assert widget.result.cancelled
    assert "cancelled; best epoch kept" in widget.status.text()
    assert widget.result.after == widget.result.history[widget.result.best_epoch]["validation"]


def test_start_without_model_explains(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_crops(viewer)
    widget = open_widget(viewer)
    widget.start()
    assert widget._worker is None
    assert widget.result is None
