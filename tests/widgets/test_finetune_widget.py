"""SAM decoder fine-tuning widget in a real viewer: train, save, hand the model to SAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _quit import quit_when_running, run_and_quit

from napari_seglab.training_loop import EpochEvent

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_seglab.data import nuclei_2d  # noqa: E402
from napari_seglab.sam import PromptSegmenter, build_tiny_sam  # noqa: E402
from napari_seglab.sam.decoder_files import read_decoder_metadata  # noqa: E402

FINETUNE = "SAM decoder fine-tuning"
PROMPTING = "SAM prompting"


def add_crops(viewer):
    sample = nuclei_2d((128, 128), n_objects=12, seed=0)
    for i, (r, c) in enumerate(((0, 0), (64, 64))):
        viewer.add_image(sample.image[r : r + 64, c : c + 64], name=f"img{i}")
        viewer.add_labels(sample.labels[r : r + 64, c : c + 64].copy(), name=f"gt{i}")
    return sample


def open_widget(viewer, name=FINETUNE):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", name)
    return widget


def finish(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)


def train(qtbot, widget, epochs=3):
    widget.recipe.epochs.value = epochs
    widget.recipe.learning_rate.value = 3e-3
    widget.base.device.value = "cpu"
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.cancel_button.isEnabled()
    finish(qtbot, widget)


def test_finetune_save_and_use_in_sam_widget(
    make_napari_viewer, qtbot, tmp_path, one_torch_thread
):
    viewer = make_napari_viewer()
    add_crops(viewer)
    labels_before = [np.array(viewer.layers[f"gt{i}"].data) for i in range(2)]
    widget = open_widget(viewer)
    assert widget.data.labels  # the boxes have captions
    assert [w.label for w in widget.data] == ["Image", "Labels"]
    assert list(widget.data.image.choices) == ["img0", "img1"]
    assert list(widget.data.annotations.choices) == ["gt0", "gt1"]
    viewer.add_image(np.zeros((8, 8)), name="later")  # choices follow the viewer
    assert list(widget.data.image.choices) == ["img0", "img1", "later"]
    viewer.layers.remove("later")
    base = build_tiny_sam(seed=0)
    widget.set_model(base)
    assert "Base model" in widget.model_label.text()
    for i in range(2):
        widget.data.image.value = f"img{i}"
        widget.data.annotations.value = f"gt{i}"
        qtbot.mouseClick(widget.add_pair_button, Qt.MouseButton.LeftButton)
    assert widget.pairs == [("img0", "gt0"), ("img1", "gt1")]
    assert widget.pair_list.count() == 2
    assert not widget.save_button.isEnabled()

    train(qtbot, widget)
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

    sam_widget = open_widget(viewer, PROMPTING)
    assert sam_widget.session is widget.session  # one session per viewer, shared
    qtbot.mouseClick(widget.use_button, Qt.MouseButton.LeftButton)
    assert sam_widget.session.model is result.model
    assert Path(sam_widget.form.decoder.value) == path
    assert "fine-tuned" in sam_widget.model_label.text()
    # The SAM widget's session predicts with the tuned decoder, not the base one.
    image = viewer.layers["img0"].data
    segmenter = sam_widget.session.segmenter
    segmenter.set_image(image)
    tuned = PromptSegmenter(result.model)
    tuned.set_image(image)
    original = PromptSegmenter(base)
    original.set_image(image)
    box = (10, 10, 40, 40)
    got = segmenter.predict(box=box).logits
    assert np.array_equal(got, tuned.predict(box=box).logits)
    assert not np.allclose(got, original.predict(box=box).logits)


def test_use_before_saving_fills_the_decoder_field(
    make_napari_viewer, qtbot, tmp_path, one_torch_thread
):
    viewer = make_napari_viewer()
    add_crops(viewer)
    sam_widget = open_widget(viewer, PROMPTING)
    sam_widget.set_model(build_tiny_sam(seed=0))
    widget = open_widget(viewer)
    qtbot.mouseClick(widget.from_sam_button, Qt.MouseButton.LeftButton)
    assert widget.model is sam_widget.session.model
    widget.data.image.value = "img0"
    widget.data.annotations.value = "gt0"
    train(qtbot, widget, epochs=1)
    assert widget.saved_path is None
    qtbot.mouseClick(widget.use_button, Qt.MouseButton.LeftButton)
    assert sam_widget.session.model is widget.result.model
    decoder = Path(sam_widget.form.decoder.value)
    assert decoder.is_file()  # kept in the cache folder, so "Load model" can reload it
    assert decoder == widget.saved_path


def test_two_viewers_have_separate_sessions(make_napari_viewer):
    first, second = make_napari_viewer(), make_napari_viewer()
    a, b = open_widget(first), open_widget(second)
    assert a.session is not b.session
    assert open_widget(first, PROMPTING).session is a.session


def test_cancel_keeps_layers_and_best_decoder(make_napari_viewer, qtbot, one_torch_thread):
    viewer = make_napari_viewer()
    add_crops(viewer)
    widget = open_widget(viewer)
    widget.set_model(build_tiny_sam(seed=0))
    widget.data.image.value = "img0"
    widget.data.annotations.value = "gt0"
    widget.recipe.epochs.value = 0
    widget.recipe.time_budget.value = 600
    widget.base.device.value = "cpu"
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=60000)
    # Only a time budget: the bar shows elapsed of the budget, not an epoch count.
    assert widget.progress.maximum() == 1000
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    finish(qtbot, widget)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=10000)
    assert widget.result.cancelled
    assert "cancelled; best epoch kept" in widget.status.text()
    assert widget.result.after == widget.result.history[widget.result.best_epoch]["validation"]
    widget._on_event(EpochEvent("epoch", 2, 0, 150.0, epoch=2, budget_s=600.0))
    assert widget.progress.value() == 250  # 150 s of the 600 s budget


def test_closing_the_dock_during_training_cancels_it(make_napari_viewer, qtbot, one_torch_thread):
    viewer = make_napari_viewer()
    add_crops(viewer)
    widget = open_widget(viewer)
    widget.set_model(build_tiny_sam(seed=0))
    widget.recipe.epochs.value = 0
    widget.recipe.time_budget.value = 600
    widget.base.device.value = "cpu"
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    worker, cancel = widget.jobs._jobs["train"]
    with qtbot.capture_exceptions() as raised:
        with qtbot.waitSignal(worker.finished, timeout=60000):
            viewer.window.remove_dock_widget(widget)
            assert cancel.is_set()
        qtbot.wait(50)
    assert not raised
    assert widget.result is None  # no callback ran after the widget was closed


def test_start_without_model_explains(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_crops(viewer)
    widget = open_widget(viewer)
    assert widget.minimumSizeHint().height() < 500  # scrolls: fits a 900 px screen
    widget.start()
    assert not widget.busy
    assert widget.result is None


FINETUNE_QUIT_SCRIPT = """
import time

import napari
from qtpy.QtCore import QTimer

from napari_seglab.data import nuclei_2d
from napari_seglab.sam import build_tiny_sam

sample = nuclei_2d((64, 64), n_objects=4, seed=0)
viewer = napari.Viewer(show=True)
viewer.add_image(sample.image, name="img0")
viewer.add_labels(sample.labels, name="gt0")
_, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM decoder fine-tuning")
widget.set_model(build_tiny_sam(seed=0))
widget.data.image.value = "img0"
widget.data.annotations.value = "gt0"
widget.recipe.epochs.value = 0
widget.recipe.time_budget.value = 600
widget.base.device.value = "cpu"
widget.start_button.click()
assert widget.jobs.running("train"), "training did not start"
""" + quit_when_running("train")


def test_quitting_napari_during_finetuning_exits_cleanly(tmp_path):
    """The whole application quits while decoder fine-tuning runs (issue 17): exit status 0."""
    run_and_quit(FINETUNE_QUIT_SCRIPT, tmp_path)
