"""The saved SAM session follows tool writes and the Labels layer's own undo and redo."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from _canvas import show_viewer
from qtpy.QtCore import Qt

from napari_seglab._widgets.sam_session_files import LABELS_SAVE_DELAY_MS
from napari_seglab.data import nuclei_2d
from napari_seglab.sessions import load_session

WIDGET = "SAM prompting"
LEFT = Qt.MouseButton.LeftButton
QUICK = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def tiny_sam(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture(scope="module")
def image():
    return nuclei_2d((96, 96), n_objects=8, seed=1).image


def open_file(viewer, qtbot, path, model):
    """The dock prompting on the image file ``path`` (its session folder beside it)."""
    show_viewer(viewer, qtbot)
    viewer.open(str(path), plugin="napari")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seglab", WIDGET)
    widget.set_model(model)
    widget.form.image.value = viewer.layers["cells"]
    qtbot.mouseClick(widget.start_button, LEFT)
    return dock, widget


def segment_and_accept(qtbot, widget, class_name=None):
    panel, tools = widget.objects_panel, widget.tools_panel
    if class_name:
        qtbot.keyClicks(panel.class_name, class_name)
        qtbot.mouseClick(panel.add_class_button, LEFT)  # the active object takes it
    for name, value in QUICK.items():
        getattr(tools.everything_form, name).value = value
    qtbot.mouseClick(tools.everything_button, LEFT)
    qtbot.waitUntil(lambda: not tools.busy, timeout=20000)
    assert tools.accept_everything() > 0


def saved_labels(folder):
    return load_session(folder).labels


def test_segment_everything_accepted_is_in_the_reopened_session(
    make_napari_viewer, qtbot, tiny_sam, image, tmp_path
):
    path = tmp_path / "cells.npy"
    np.save(path, image)
    folder = tmp_path / "cells.npy.seglab-session"
    viewer = make_napari_viewer()
    dock, widget = open_file(viewer, qtbot, path, tiny_sam)
    segment_and_accept(qtbot, widget, "nucleus")
    labels = viewer.layers["SAM labels"]
    ids = sorted(set(np.unique(labels.data).tolist()) - {0})
    class_id = widget.session.classes and next(iter(widget.session.classes))
    # saved at once: labels, committed objects with the selected class
    saved = load_session(folder)
    np.testing.assert_array_equal(saved.labels, labels.data)
    assert sorted(r["id"] for r in saved.committed) == ids
    assert {r["class_id"] for r in saved.committed} == {class_id}
    table = labels.features.set_index("index")
    assert sorted(table.index.tolist()) == ids
    assert set(table["class_name"]) == {"nucleus"}
    viewer.window.remove_dock_widget(dock)

    again = make_napari_viewer()
    _, other = open_file(again, qtbot, path, tiny_sam)
    assert other.objects_panel.saved is not None  # offered ("Resume saved session")
    other.objects_panel.resume()
    resumed = again.layers["SAM labels"]
    np.testing.assert_array_equal(resumed.data, labels.data)
    assert sorted(other.session.committed_objects) == ids
    assert set(resumed.features.set_index("index").loc[ids, "class_name"]) == {"nucleus"}


def test_layer_undo_and_redo_followed_by_the_saved_session(
    make_napari_viewer, qtbot, tiny_sam, image, tmp_path
):
    path = tmp_path / "cells.npy"
    np.save(path, image)
    folder = tmp_path / "cells.npy.seglab-session"
    viewer = make_napari_viewer()
    _, widget = open_file(viewer, qtbot, path, tiny_sam)
    segment_and_accept(qtbot, widget)  # "(no class)": objects of class 0
    labels = viewer.layers["SAM labels"]
    accepted = labels.data.copy()
    ids = sorted(set(np.unique(accepted).tolist()) - {0})
    assert sorted(widget.session.committed_objects) == ids

    labels.undo()  # on the layer itself, not through the dock
    assert not labels.data.any()
    timeout = LABELS_SAVE_DELAY_MS + 5000
    qtbot.waitUntil(lambda: not saved_labels(folder).any(), timeout=timeout)
    assert load_session(folder).committed == []
    assert widget.session.committed_objects == {}

    commit = widget.session.store.commit
    labels.refresh()  # a refresh without an edit (as on every slice change): no save
    qtbot.wait(LABELS_SAVE_DELAY_MS + 200)
    assert widget.session.store.commit == commit
    labels.redo()
    qtbot.waitUntil(lambda: saved_labels(folder).any(), timeout=timeout)
    np.testing.assert_array_equal(saved_labels(folder), accepted)
    assert sorted(r["id"] for r in load_session(folder).committed) == ids
    assert sorted(labels.features["index"].tolist()) == ids


def test_refine_all_recorded_without_a_class_and_saved(
    make_napari_viewer, qtbot, tiny_sam, tmp_path
):
    sample = nuclei_2d((96, 96), n_objects=8, seed=1)
    path = tmp_path / "cells.npy"
    np.save(path, sample.image)
    folder = tmp_path / "cells.npy.seglab-session"
    viewer = make_napari_viewer()
    _, widget = open_file(viewer, qtbot, path, tiny_sam)
    labels = viewer.add_labels(sample.labels.astype(np.int32), name="objects")
    widget.reset_choices()
    widget.form.target.value = labels
    tools = widget.tools_panel
    tools.refine_form.min_score.value = -1.0  # accept every refinement
    tools.refine_form.min_overlap.value = 0.0
    qtbot.mouseClick(tools.refine_all_button, LEFT)
    qtbot.waitUntil(lambda: not tools.busy, timeout=20000)
    assert not np.array_equal(labels.data, sample.labels)
    ids = sorted(set(np.unique(labels.data).tolist()) - {0})
    assert set(widget.session.object_classes.values()) == {0}  # another tool's objects
    assert set(ids) <= set(widget.session.committed_objects)  # the refined ones, at least
    np.testing.assert_array_equal(saved_labels(folder), labels.data)  # saved at once
    assert set(ids) <= set(labels.features["index"].tolist())
