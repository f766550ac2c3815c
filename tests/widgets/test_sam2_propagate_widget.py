"""SAM prompting widget with a SAM 2 model: memory propagation, a correction, Ctrl+Z."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("napari")

from _canvas import click, key, show_viewer
from qtpy.QtCore import Qt

from napari_seglab.data import nuclei_3d

WIDGET = "SAM prompting"


@pytest.fixture(scope="module")
def tiny_sam2(one_torch_thread, tiny_sam2_models):
    """SAM 2.1 Hiera tiny from the package's real config, random weights, 64 px input (shared)."""
    return tiny_sam2_models(image_size=64)


def _wait_prediction(qtbot, widget, previous=None):
    qtbot.waitUntil(
        lambda: (
            widget.session.prediction is not None
            and widget.session.prediction is not previous
            and not widget.busy
        ),
        timeout=30000,
    )


def _propagate(qtbot, widget):
    qtbot.mouseClick(widget.propagate_button, Qt.MouseButton.LeftButton)
    assert widget.cancel_button.isEnabled()
    qtbot.waitUntil(widget.propagate_button.isEnabled, timeout=60000)


def test_sam2_propagate_correct_and_undo(make_napari_viewer, qtbot, tiny_sam2):
    viewer = make_napari_viewer()
    stack = nuclei_3d(shape=(8, 48, 48), n_objects=3, seed=2).image
    show_viewer(viewer, qtbot)
    viewer.add_image(stack, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", WIDGET)
    widget.set_model(tiny_sam2)
    widget.form.neighbours.value = False
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    viewer.reset_view()
    viewer.dims.set_current_step(0, 3)

    click(viewer, qtbot, (3, 24, 24))
    _wait_prediction(qtbot, widget)
    seed = widget.session.mask().copy()
    _propagate(qtbot, widget)
    labels = viewer.layers["SAM labels"]
    first = labels.data.copy()
    assert set(np.unique(first)) <= {0, 1}
    np.testing.assert_array_equal(first[3] == 1, seed)  # the chosen proposal is kept
    tracker = widget._sam2.tracker
    assert tracker.prompted_planes(1) == [3]
    assert tracker.encoded == set(range(8))  # every plane visited, each embedded once
    assert "spans planes" in widget.status_label.text() or "Object 1" in widget.status_label.text()

    # A correction on plane 6: only planes 4..7 (after the prompted plane 3) are tracked again.
    viewer.dims.set_current_step(0, 6)
    previous = widget.session.prediction
    click(viewer, qtbot, (6, 30, 30))
    _wait_prediction(qtbot, widget, previous)
    _propagate(qtbot, widget)
    assert "corrected on planes 4–7" in widget.status_label.text()
    assert tracker.prompted_planes(1) == [3, 6]
    second = labels.data.copy()
    np.testing.assert_array_equal(second[:4], first[:4])
    np.testing.assert_array_equal(second[6] == 1, tracker.masks(1)[6])
    assert not widget.session.has_prompts

    # Ctrl+Z (prompt layer selected) takes back the correction, then the object.
    widget.prompt_layers.activate()
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(labels.data, first)
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not labels.data.any()

    # The object is gone: the next propagation starts a new one and frees the old one's memory.
    viewer.dims.set_current_step(0, 2)
    previous = widget.session.prediction
    click(viewer, qtbot, (2, 24, 24))
    _wait_prediction(qtbot, widget, previous)
    _propagate(qtbot, widget)
    assert (labels.data[2] == 1).any()
    assert tracker.object_ids == [1]  # the old object (prompted on 3 and 6) was dropped
    assert tracker.prompted_planes(1) == [2]
