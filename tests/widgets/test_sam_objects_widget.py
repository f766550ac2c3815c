"""The SAM dock's object list and saved sessions, in a real viewer with real mouse and keys."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from _canvas import SHIFT, click, key, near, show_viewer
from qtpy.QtCore import Qt

from napari_seglab._widgets.sam_prompt_layers import NEGATIVE_COLOUR, POSITIVE_COLOUR
from napari_seglab.data import nuclei_2d
from napari_seglab.sessions import find_session, image_fingerprint, load_session

WIDGET = "SAM prompting"


@pytest.fixture(scope="module")
def tiny_sam(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture(scope="module")
def image():
    return nuclei_2d((96, 96), n_objects=8, seed=1).image


def open_widget(viewer, qtbot, image, model, name="cells"):
    show_viewer(viewer, qtbot)
    if image is not None:
        viewer.add_image(image, name=name)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seglab", WIDGET)
    widget.set_model(model)
    widget.form.image.value = viewer.layers[name]
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    viewer.reset_view()
    qtbot.wait(20)
    return dock, widget


def prompt(viewer, qtbot, widget, position, modifier=Qt.KeyboardModifier.NoModifier):
    previous = widget.session.prediction
    click(viewer, qtbot, position, modifier)
    qtbot.waitUntil(
        lambda: (
            widget.session.prediction is not None
            and widget.session.prediction is not previous
            and not widget.busy
        ),
        timeout=30000,
    )
    return widget.session.mask().copy()


def add_class(qtbot, panel, name):
    qtbot.keyClicks(panel.class_name, name)
    qtbot.mouseClick(panel.add_class_button, Qt.MouseButton.LeftButton)


def test_two_objects_with_classes_commit_together_and_undo_together(
    make_napari_viewer, qtbot, tiny_sam, image
):
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer, qtbot, image, tiny_sam)
    panel, session = widget.objects_panel, widget.session
    add_class(qtbot, panel, "nucleus")
    first = session.active_object
    assert first.class_id == 1
    mask_a = prompt(viewer, qtbot, widget, (40, 50))

    qtbot.mouseClick(panel.new_button, Qt.MouseButton.LeftButton)
    second = session.active_object
    assert second is not first
    assert len(widget.prompt_layers.points.data) == 0  # the new object starts without prompts
    add_class(qtbot, panel, "cell")
    assert (first.class_id, second.class_id) == (1, 2)
    assert panel.class_box.currentText() == "cell (2)"
    mask_b = prompt(viewer, qtbot, widget, (20, 80))
    np.testing.assert_array_equal(panel.pending_layer.data == first.uid, mask_a)
    assert panel.pending_layer not in widget.form.target.choices
    assert panel.object_list.count() == 2

    panel.object_list.setCurrentRow(0)  # back to the first object: its prompts come back
    assert session.active_object is first
    assert panel.class_box.currentText() == "nucleus (1)"
    assert len(widget.prompt_layers.points.data) == 1
    assert near(widget.prompt_layers.points.data[0], (40, 50))
    np.testing.assert_array_equal(widget.prompt_layers.preview.data > 0, mask_a)
    panel.object_list.setCurrentRow(1)
    assert near(widget.prompt_layers.points.data[0], (20, 80))

    key(viewer, qtbot, Qt.Key.Key_Return)  # commits every pending object
    labels = viewer.layers["SAM labels"]
    np.testing.assert_array_equal(labels.data == 1, mask_a)
    np.testing.assert_array_equal(labels.data == 2, mask_b & ~mask_a)
    features = labels.features.set_index("index")
    assert features.loc[[1, 2], "class"].tolist() == [1, 2]
    assert features.loc[[1, 2], "class_name"].tolist() == ["nucleus", "cell"]
    assert len(session.objects) == 1
    assert session.active_object.class_id == 2  # the next object keeps the last class
    assert not panel.pending_layer.data.any()

    saved = load_session(session.store.folder)  # autosaved after the commit
    np.testing.assert_array_equal(saved.labels, labels.data)
    assert [(c["id"], c["class_id"]) for c in saved.committed] == [(1, 1), (2, 2)]

    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo
    assert not labels.data.any()  # both objects went together
    saved = load_session(session.store.folder)  # and the saved session follows the undo
    assert not saved.labels.any()
    assert saved.committed == []
    assert len(labels.features) == 0


def test_class_layer_on_request(make_napari_viewer, qtbot, tiny_sam, image):
    viewer = make_napari_viewer()
    _, widget = open_widget(viewer, qtbot, image, tiny_sam)
    panel = widget.objects_panel
    add_class(qtbot, panel, "a")
    add_class(qtbot, panel, "b")
    panel.class_layer_box.setChecked(True)
    prompt(viewer, qtbot, widget, (40, 50))
    key(viewer, qtbot, Qt.Key.Key_Return)
    labels, classes = viewer.layers["SAM labels"], viewer.layers["SAM classes"]
    np.testing.assert_array_equal(classes.data == 2, labels.data == 1)
    assert classes not in widget.form.target.choices


def test_session_reopened_after_the_widget_closed(make_napari_viewer, qtbot, tiny_sam, image):
    viewer = make_napari_viewer()
    dock, widget = open_widget(viewer, qtbot, image, tiny_sam)
    add_class(qtbot, widget.objects_panel, "nucleus")
    prompt(viewer, qtbot, widget, (40, 50))
    key(viewer, qtbot, Qt.Key.Key_Return)
    committed = viewer.layers["SAM labels"].data.copy()
    assert committed.max() == 1
    prompt(viewer, qtbot, widget, (20, 80))  # pending prompts, not committed
    prompt(viewer, qtbot, widget, (70, 20), SHIFT)
    pending = widget.session.prompts()
    viewer.window.remove_dock_widget(dock)  # closing saves the pending prompts
    folder = find_session(None, image_fingerprint(image, stack=False))
    assert folder is not None  # no file path: the cache folder
    saved = load_session(folder)
    np.testing.assert_array_equal(saved.labels, committed)
    assert saved.pending[0]["prompts"][0]["positive"] == [True, False]

    again = make_napari_viewer()
    show_viewer(again, qtbot)
    again.add_image(image[::-1].copy(), name="other")
    _, other = open_widget(again, qtbot, image, tiny_sam)
    panel = other.objects_panel
    assert panel.resume_button.isVisible()  # offered for the image it was made on ...
    other.form.image.value = again.layers["other"]
    qtbot.mouseClick(other.start_button, Qt.MouseButton.LeftButton)
    assert not panel.resume_button.isVisible()  # ... never for another one
    other.form.image.value = again.layers["cells"]
    qtbot.mouseClick(other.start_button, Qt.MouseButton.LeftButton)
    assert panel.resume_button.isVisible()
    qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)

    labels = again.layers["SAM labels"]
    np.testing.assert_array_equal(labels.data, committed)
    assert labels.features.set_index("index").loc[1, "class_name"] == "nucleus"
    resumed = other.session.prompts()
    np.testing.assert_array_equal(resumed.points, pending.points)
    np.testing.assert_array_equal(resumed.positive, pending.positive)
    points = other.prompt_layers.points
    assert near(points.data[0], (20, 80))
    assert near(points.data[1], (70, 20))
    assert points.features["positive"].tolist() == [True, False]
    colours = np.asarray(points.face_color)
    np.testing.assert_allclose(colours[0], POSITIVE_COLOUR)
    np.testing.assert_allclose(colours[1], NEGATIVE_COLOUR)
    qtbot.waitUntil(lambda: other.session.prediction is not None, timeout=30000)
    assert other.prompt_layers.preview.data.any()
    key(again, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not labels.data.any()  # the resumed labels came in one undoable write


def test_session_beside_the_image_file_never_applied_to_a_changed_file(
    make_napari_viewer, qtbot, tiny_sam, image, tmp_path
):
    path = tmp_path / "cells.npy"
    np.save(path, image)
    viewer = make_napari_viewer()
    show_viewer(viewer, qtbot)
    viewer.open(str(path), plugin="napari")
    dock, widget = open_widget(viewer, qtbot, None, tiny_sam, name="cells")
    folder = tmp_path / "cells.npy.seglab-session"
    assert widget.session.store.folder == folder  # beside the image file
    prompt(viewer, qtbot, widget, (40, 50))
    key(viewer, qtbot, Qt.Key.Key_Return)
    viewer.window.remove_dock_widget(dock)  # its last save done
    before = (folder / "session.json").read_text()

    np.save(path, image[::-1])  # the file changed since: same name, same shape, other pixels
    again = make_napari_viewer()
    show_viewer(again, qtbot)
    again.open(str(path), plugin="napari")
    _, other = open_widget(again, qtbot, None, tiny_sam, name="cells")
    assert not other.objects_panel.resume_button.isVisible()
    assert other.session.store.folder != folder  # autosave goes to the cache folder
    prompt(again, qtbot, other, (40, 50))
    key(again, qtbot, Qt.Key.Key_Return)
    assert (folder / "session.json").read_text() == before  # the other session is untouched
    assert load_session(other.session.store.folder).labels.max() == 1
