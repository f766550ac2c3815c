"""SAM prompting widget in a real, shown viewer, driven by real Qt mouse and key events."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _quit import run_and_quit

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from _canvas import SHIFT, click, key, near, show_viewer
from qtpy.QtCore import Qt

from napari_seglab.data import nuclei_2d, nuclei_3d
from napari_seglab.sam import EmbeddingCache, PromptSegmenter

WIDGET = "SAM prompting"


@pytest.fixture(scope="module")
def tiny_sam(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


def open_widget(viewer, qtbot, image, model, *, start=True):
    show_viewer(viewer, qtbot)
    viewer.add_image(image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", WIDGET)
    if model is not None:
        widget.set_model(model)
    if start:
        qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
        assert widget.prompt_layers is not None
        viewer.reset_view()
        qtbot.wait(20)
    return widget


def wait_for_prediction(qtbot, widget, previous=None):
    qtbot.waitUntil(
        lambda: (
            widget.session.prediction is not None
            and widget.session.prediction is not previous
            and not widget.busy
        ),
        timeout=30000,
    )


def test_clicks_shift_enter_second_object_and_undo(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    points = widget.prompt_layers.points
    assert "Shift+click" in widget.help_label.text()

    click(viewer, qtbot, (40, 50))
    wait_for_prediction(qtbot, widget)
    first = widget.session.prediction
    assert len(first.scores) == 3
    assert widget.prompt_layers.preview.data.any()
    assert "Proposals" in widget.scores_label.text()

    click(viewer, qtbot, (70, 20), SHIFT)  # a real Shift+click: negative point
    assert points.features["positive"].tolist() == [True, False]
    assert near(points.data[0], (40, 50))
    assert near(points.data[1], (70, 20))
    assert not np.allclose(np.asarray(points.face_color)[0], np.asarray(points.face_color)[1])
    wait_for_prediction(qtbot, widget, first)
    assert widget.session.prompts().positive.tolist() == [True, False]

    key(viewer, qtbot, Qt.Key.Key_Return)  # commit through the points layer's key binding
    labels = viewer.layers["SAM labels"]
    assert set(np.unique(labels.data)) == {0, 1}
    assert len(points.data) == 0
    # The prompt layer stays selected, in add mode, above the new labels layer.
    assert viewer.layers.selection.active == points
    assert points.mode == "add"
    assert viewer.layers.index(points) > viewer.layers.index(labels)
    object_one = labels.data == 1

    click(viewer, qtbot, (20, 80))  # the next click works: a second object
    assert len(points.data) == 1
    wait_for_prediction(qtbot, widget)
    key(viewer, qtbot, Qt.Key.Key_Return)
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 1, object_one)  # existing labels preserved

    # Ctrl+Z (a real key event, the prompt layer still selected): one commit is one undo step.
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert set(np.unique(labels.data)) == {0, 1}
    np.testing.assert_array_equal(labels.data == 1, object_one)


def test_prompts_run_on_one_long_lived_thread(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((64, 64), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    click(viewer, qtbot, (30, 30))
    wait_for_prediction(qtbot, widget)
    thread = widget.server._thread
    threads = threading.active_count()
    for position in ((10, 12), (50, 40), (20, 44)):  # rapid clicks coalesce
        click(viewer, qtbot, position)
    previous = widget.session.prediction
    wait_for_prediction(qtbot, widget, previous)
    assert widget.server._thread is thread
    assert thread.is_alive()
    assert threading.active_count() <= threads
    assert len(widget.session.prompts().points) == 4


def test_deleting_the_last_point_removes_the_proposal(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((64, 64), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    click(viewer, qtbot, (30, 30))
    wait_for_prediction(qtbot, widget)
    points = widget.prompt_layers.points
    points.selected_data = {0}
    points.remove_selected()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert widget.session.prediction is None
    assert not widget.prompt_layers.preview.data.any()


def test_target_defaults_to_a_new_layer(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    sample = nuclei_2d((96, 96), n_objects=8, seed=1)
    viewer.add_labels(sample.labels.copy(), name="ground truth")
    widget = open_widget(viewer, qtbot, sample.image, tiny_sam)
    assert widget.form.target.value is None  # "<new labels layer>", not the ground truth
    assert widget.prompt_layers.preview not in widget.form.target.choices
    click(viewer, qtbot, (40, 50))
    wait_for_prediction(qtbot, widget)
    key(viewer, qtbot, Qt.Key.Key_Return)
    np.testing.assert_array_equal(viewer.layers["ground truth"].data, sample.labels)
    assert viewer.layers["SAM labels"].data.max() == 1
    assert widget.form.target.value == viewer.layers["SAM labels"]


@pytest.mark.parametrize("kind", ["other architecture", "corrupt", "decoder of another base"])
def test_bad_checkpoint_notifies_and_widget_is_ready_again(
    make_napari_viewer, qtbot, tmp_path, errors, kind, make_tiny_sam
):
    import torch

    from napari_seglab.sam import save_decoder

    path = tmp_path / "sam_vit_b.pth"
    model_type, decoder = "vit_b", ""
    if kind == "corrupt":
        path.write_bytes(b"not a checkpoint" * 100)
    else:
        torch.save(make_tiny_sam(seed=0).sam.state_dict(), path)
    if kind == "decoder of another base":
        model_type = "tiny"  # the base loads; its decoder file was tuned on other weights
        decoder = str(save_decoder(make_tiny_sam(seed=1), tmp_path / "decoder.pt"))
    viewer = make_napari_viewer()
    widget = open_widget(viewer, qtbot, np.zeros((32, 32), np.uint8), None, start=False)
    widget.form.model.choices = (*widget.form.model.choices, "tiny")
    widget.form.model.value = model_type
    widget.form.checkpoint.value = str(path)
    widget.form.decoder.value = decoder
    widget.form.device.value = "cpu"
    qtbot.mouseClick(widget.load_button, Qt.MouseButton.LeftButton)
    assert not widget.load_button.isEnabled()
    assert "Loading" in widget.status_label.text()
    qtbot.waitUntil(widget.load_button.isEnabled, timeout=60000)
    assert widget.session.model is None
    assert "Model not loaded" in widget.status_label.text()
    assert any("SAM model" in message for message in errors)


def test_escape_clears_prompts_preview_and_status(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    widget.prompt_layers.box.add_rectangles(np.array([[20.0, 30.0], [60.0, 80.0]]))
    wait_for_prediction(qtbot, widget)
    direct = PromptSegmenter(tiny_sam)
    direct.set_image(image)
    expected = direct.predict(box=(20, 30, 60, 80), multimask=False)
    assert len(widget.session.prediction.scores) == 1
    np.testing.assert_array_equal(widget.prompt_layers.preview.data > 0, expected.mask)
    assert "pixels" in widget.status_label.text()
    key(viewer, qtbot, Qt.Key.Key_Escape)
    assert widget.session.prediction is None
    assert len(widget.prompt_layers.box.data) == 0
    assert not widget.prompt_layers.preview.data.any()
    assert "pixels" not in widget.status_label.text()
    assert widget.scores_label.text() == "No prediction yet."


def test_stack_click_goes_before_neighbours_and_propagates(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    stack = nuclei_3d(shape=(24, 48, 48), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, stack, tiny_sam)
    widget.form.neighbours.value = False
    viewer.dims.set_current_step(0, 20)
    widget.form.neighbours.value = True
    # Other planes are being embedded when the user clicks on plane 20.
    widget.jobs.start("neighbours", widget.session.embedding_job, list(range(20)))
    assert not widget.session.is_embedded(20)
    click(viewer, qtbot, (20, 24, 24))
    assert not widget.jobs.running("neighbours")  # the queue made way for the click
    wait_for_prediction(qtbot, widget)
    # The neighbour queue starts again after it, around plane 20.
    qtbot.waitUntil(lambda: widget.session.is_embedded(22), timeout=30000)
    assert widget.session.prediction_plane == 20
    preview = widget.prompt_layers.preview.data
    assert preview[20].any()
    assert not np.delete(preview, 20, axis=0).any()
    # Embeddings go to the disk cache: a reopened image finds them.
    assert EmbeddingCache(max_items=1, disk=True).has(_key(widget, 20), tiny_sam)

    masks = widget.session.prediction.masks
    widget.session.proposal = int(np.argmax([m.sum() for m in masks]))
    qtbot.mouseClick(widget.propagate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "SAM labels" in viewer.layers, timeout=30000)
    labels = viewer.layers["SAM labels"]
    assert labels.data.shape == stack.shape
    assert (labels.data[20] == 1).any()


def test_cancel_propagation_changes_no_layer(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    stack = nuclei_3d(shape=(12, 48, 48), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, stack, tiny_sam)
    viewer.dims.set_current_step(0, 5)
    click(viewer, qtbot, (5, 24, 24))
    wait_for_prediction(qtbot, widget)
    qtbot.mouseClick(widget.propagate_button, Qt.MouseButton.LeftButton)
    assert widget.cancel_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(widget.propagate_button.isEnabled, timeout=30000)
    assert "SAM labels" not in viewer.layers
    assert "cancelled" in widget.status_label.text()


def _key(widget, plane):
    from napari_seglab.sam.embedding import embedding_key

    return embedding_key(widget.session.model, widget.session.source.plane(plane))


def start_long_embedding(viewer, qtbot, model):
    """Start prompting on a stack whose 41 planes are embedded in the background."""
    stack = nuclei_3d(shape=(41, 64, 64), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, stack, model, start=False)
    widget.session.neighbours = 40
    widget.start()
    assert widget.jobs.running("neighbours")
    return widget


def test_closing_the_dock_during_embedding_cancels_and_cleans_up(
    make_napari_viewer, qtbot, tiny_sam
):
    viewer = make_napari_viewer()
    widget = start_long_embedding(viewer, qtbot, tiny_sam)
    worker, cancel = widget.jobs._jobs["neighbours"]
    with qtbot.capture_exceptions() as raised:
        with qtbot.waitSignal(worker.finished, timeout=30000):
            viewer.window.remove_dock_widget(widget)
            assert cancel.is_set()
            assert widget.jobs.closed
            assert [layer.name for layer in viewer.layers] == ["cells"]
        qtbot.wait(50)
    assert not raised


def test_quitting_the_viewer_during_embedding_is_clean(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    widget = start_long_embedding(viewer, qtbot, tiny_sam)
    worker, cancel = widget.jobs._jobs["neighbours"]
    with qtbot.capture_exceptions() as raised:
        with qtbot.waitSignal(worker.finished, timeout=30000):
            viewer.close()
        qtbot.wait(50)
    assert cancel.is_set()
    assert not raised


def test_large_encoder_on_cpu_shows_warning(make_napari_viewer, qtbot, make_tiny_sam):
    viewer = make_napari_viewer()
    model = make_tiny_sam(
        seed=0,
        encoder_embed_dim=1024,
        encoder_depth=1,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(0,),
    )
    widget = open_widget(viewer, qtbot, np.zeros((16, 16), np.uint8), model, start=False)
    assert widget.warning_label.isVisibleTo(widget)
    assert "CPU" in widget.warning_label.text()


def test_dock_fits_a_900_pixel_screen(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, qtbot, np.zeros((16, 16), np.uint8), tiny_sam, start=False)
    assert widget.minimumSizeHint().height() < 500
    dock = widget.parent()
    while dock is not None and not hasattr(dock, "setFloating"):
        dock = dock.parent()
    dock.setFloating(True)
    dock.resize(400, 600)
    qtbot.wait(20)
    assert dock.height() <= 700
    assert widget.load_button.isVisibleTo(widget)
    assert not widget.jobs.closed  # floating is not closing


QUIT_SCRIPT = """
import napari
from qtpy.QtCore import QTimer
from napari_seglab.data import nuclei_3d
from napari_seglab.sam import build_tiny_sam

viewer = napari.Viewer(show=True)
viewer.add_image(nuclei_3d(shape=(41, 128, 128), n_objects=4, seed=2).image, name="cells")
_, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
widget.set_model(build_tiny_sam(seed=3))
widget.session.neighbours = 40
widget.start()
assert widget.jobs.running("neighbours")
QTimer.singleShot(300, lambda: viewer.window._qt_window.close(quit_app=True))
napari.run()
print("quit cleanly")
"""


def test_quitting_napari_during_embedding_exits_cleanly(tmp_path):
    """The whole application quits while a background embedding runs: exit status 0."""
    run_and_quit(QUIT_SCRIPT, tmp_path, expect_running=False)
