"""The CRF refinement dock widget in a real viewer: refine, preview, undo, cancel, errors.

Also: the layers it adds lie on their source's geometry, every error reaches the
status line, no stale status, and a dock that fits a 900 px screen.
"""

from __future__ import annotations

import numpy as np
import pytest
from _canvas import show_viewer
from _quit import run_and_quit
from qtpy.QtWidgets import QScrollArea

from napari_seglab import crf, data, metrics
from napari_seglab._widgets.crf import NEW_LAYER, PREVIEW_NAME, REPLACE_INPUT


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "CRF refinement")
    return widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def names(widget):
    """Names of the chosen image and input layers."""
    return tuple(
        None if w.value is None else w.value.name for w in (widget.form.image, widget.form.given)
    )


@pytest.fixture(scope="module")
def sample_2d():
    return data.nuclei_2d(shape=(128, 128), n_objects=12, seed=3)


def test_refines_sam_like_labels_in_place_and_undoes(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    grown = data.blobby_labels(sample_2d.labels, grow=3.0)
    layer = viewer.add_labels(grown.copy(), name="sam masks")
    widget = open_widget(viewer)
    assert names(widget) == ("nuclei", "sam masks")
    widget.form.output.value = REPLACE_INPUT
    assert widget.form.output.value == REPLACE_INPUT
    n_layers = len(viewer.layers)

    widget.apply_button.click()
    wait_done(qtbot, widget)

    assert len(viewer.layers) == n_layers  # written in place, no new layer
    refined = np.asarray(layer.data)
    assert not np.array_equal(refined, grown)
    assert np.array_equal(refined, crf.refine_labels(sample_2d.image, grown))
    assert metrics.foreground_dice(refined, sample_2d.labels) > metrics.foreground_dice(
        grown, sample_2d.labels
    )
    assert set(np.unique(refined)) <= set(np.unique(grown))

    layer.undo()
    assert np.array_equal(layer.data, grown)


def test_probability_layer_to_new_labels_layer(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei", scale=(0.5, 0.5))
    probs = data.degrade_probabilities(sample_2d.labels)
    viewer.add_image(probs[1], name="foreground probability")
    widget = open_widget(viewer)
    widget.form.given.value = viewer.layers["foreground probability"]
    assert list(widget.form.output.choices) == [NEW_LAYER]
    assert not widget.form.confidence.enabled
    widget.form.bilateral_weight.value = 10.0

    widget.apply_button.click()
    wait_done(qtbot, widget)

    result = viewer.layers["foreground probability CRF"]
    expected = crf.refine(sample_2d.image, probs, spacing=(0.5, 0.5), bilateral_weight=10.0)
    assert np.array_equal(result.data, expected)
    assert tuple(result.scale) == (0.5, 0.5)


def test_preview_refines_only_the_current_plane(make_napari_viewer, qtbot):
    sample = data.nuclei_3d(shape=(8, 64, 64), n_objects=4, seed=5)
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="stack", scale=sample.spacing)
    grown = data.blobby_labels(sample.labels, grow=1.0, spacing=sample.spacing)
    layer = viewer.add_labels(grown.copy(), name="masks", scale=sample.spacing)
    plane = int(np.argmax((sample.labels > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, plane * sample.spacing[0])
    widget = open_widget(viewer)

    widget.preview_button.click()
    wait_done(qtbot, widget)

    preview = viewer.layers[PREVIEW_NAME]
    assert preview.data.shape == grown.shape
    expected = crf.refine_labels(sample.image[plane], grown[plane], spacing=sample.spacing[1:])
    assert np.array_equal(preview.data[plane], expected)
    others = np.delete(np.arange(grown.shape[0]), plane)
    assert not preview.data[others].any()
    assert np.array_equal(layer.data, grown)  # the input is untouched by a preview
    offered = [c.name for c in widget.form.given.choices if c is not None]
    assert PREVIEW_NAME not in offered


def test_cancel_changes_no_layer(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    grown = data.blobby_labels(sample_2d.labels)
    layer = viewer.add_labels(grown.copy(), name="masks")
    widget = open_widget(viewer)
    widget.form.output.value = REPLACE_INPUT
    widget.form.iterations.value = 50  # 12 objects x 50 iterations: far longer than a click
    n_layers = len(viewer.layers)

    widget.apply_button.click()
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    wait_done(qtbot, widget)

    assert np.array_equal(layer.data, grown)
    assert len(viewer.layers) == n_layers
    assert "Cancelled" in widget.status.text()
    assert widget.apply_button.isEnabled()


def test_mismatched_layers_report_an_error(make_napari_viewer, qtbot, sample_2d, errors):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    layer = viewer.add_labels(np.zeros((50, 50), dtype=np.int32), name="wrong size")
    widget = open_widget(viewer)
    widget.apply_button.click()
    assert not widget.busy
    assert any("(128, 128)" in message and "(50, 50)" in message for message in errors)
    assert widget.status.text().startswith("Failed: Expected labels of shape (128, 128)")
    assert widget.apply_button.isEnabled()
    assert not layer.data.any()
    assert len(viewer.layers) == 2


def test_added_layers_take_the_geometry_of_their_source(make_napari_viewer, qtbot):
    sample = data.nuclei_3d(shape=(6, 48, 48), n_objects=3, seed=5)
    angle = np.deg2rad(15)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    geometry = {"scale": (3.0, 0.7, 0.4), "translate": (72.0, -98.0, 12.5), "affine": affine}
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="stack", **geometry)
    masks = viewer.add_labels(data.blobby_labels(sample.labels), name="masks", **geometry)
    plane = int(np.argmax((sample.labels > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, masks.data_to_world([plane, 0, 0])[0])
    widget = open_widget(viewer)
    widget.form.iterations.value = 2

    widget.preview_button.click()
    wait_done(qtbot, widget)
    widget.form.output.value = NEW_LAYER
    widget.apply_button.click()
    wait_done(qtbot, widget)

    voxel = np.array([2, 10, 30])
    for name in (PREVIEW_NAME, "masks CRF"):
        layer = viewer.layers[name]
        assert layer.data.shape == masks.data.shape
        np.testing.assert_allclose(layer.scale, masks.scale)
        np.testing.assert_allclose(layer.translate, masks.translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, masks.affine.affine_matrix)
        np.testing.assert_allclose(layer.data_to_world(voxel), masks.data_to_world(voxel))
    assert viewer.layers[PREVIEW_NAME].data[plane].any()


def test_an_error_in_the_job_reaches_the_status_line(make_napari_viewer, qtbot, sample_2d, errors):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei", translate=(5, 5))
    # a "probability" map in 0..255: the core refuses it inside the worker thread
    scores = data.degrade_probabilities(sample_2d.labels)[1] * 255
    viewer.add_image(scores, name="scores")
    widget = open_widget(viewer)
    widget.form.given.value = viewer.layers["scores"]
    n_layers = len(viewer.layers)

    widget.apply_button.click()
    wait_done(qtbot, widget)

    assert widget.status.text().startswith("Failed: Expected probabilities")
    assert any("Expected probabilities" in message for message in errors)
    assert len(viewer.layers) == n_layers
    assert widget.apply_button.isEnabled()
    assert widget.preview_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    # the widget is ready again: a valid run works
    widget.form.given.value = viewer.layers["nuclei"]
    assert "Ready" in widget.status.text()


def test_a_new_choice_of_layers_leaves_no_stale_status(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    viewer.add_labels(data.blobby_labels(sample_2d.labels), name="first")
    viewer.add_labels(data.blobby_labels(sample_2d.labels, grow=2.0), name="second")
    widget = open_widget(viewer)
    assert names(widget) == ("nuclei", "second")
    widget.form.iterations.value = 2
    widget.apply_button.click()
    wait_done(qtbot, widget)
    assert "second CRF" in widget.status.text()
    # the result layer arrived; the user's input stays the input
    assert names(widget) == ("nuclei", "second")
    assert "second CRF" in widget.status.text()

    widget.form.given.value = viewer.layers["first"]
    assert "second CRF" not in widget.status.text()
    assert "Ready: refine 'first'" in widget.status.text()


def test_docks_fit_a_900_pixel_screen_and_run_is_reachable(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    show_viewer(viewer, qtbot, 1280, 900)
    viewer.add_image(sample_2d.image, name="nuclei")
    viewer.add_labels(sample_2d.labels, name="masks")
    widget = open_widget(viewer)
    # another tall dock on the same side: both must share 900 px
    viewer.window.add_plugin_dock_widget("napari-seglab", "Evaluation")
    qtbot.wait(100)
    assert viewer.window._qt_window.height() <= 900
    assert widget.minimumSizeHint().height() < 400
    area = widget.findChild(QScrollArea)
    for button in (widget.apply_button, widget.preview_button):
        area.ensureWidgetVisible(button)
        qtbot.wait(20)
        assert button.isVisible()
        assert not button.visibleRegion().isEmpty()


CRF_QUIT_SCRIPT = """
import napari
from qtpy.QtCore import QTimer

from napari_seglab import data
from napari_seglab._widgets.crf import REPLACE_INPUT

sample = data.nuclei_3d(shape=(24, 128, 128), n_objects=24, seed=3)  # seconds of work
viewer = napari.Viewer(show=True)
viewer.add_image(sample.image, name="nuclei")
viewer.add_labels(data.blobby_labels(sample.labels), name="masks")
_, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "CRF refinement")
widget.form.output.value = REPLACE_INPUT
widget.form.iterations.value = 50
widget.apply_button.click()
assert widget.busy, "refinement did not start"


def quit_now():
    print("running at quit:", widget.busy)
    viewer.window._qt_window.close(quit_app=True)


QTimer.singleShot(100, quit_now)
napari.run()
print("quit cleanly")
"""


def test_quitting_napari_during_refinement_exits_cleanly(tmp_path):
    """The whole application quits while a CRF refinement runs (issue 17): exit status 0."""
    run_and_quit(CRF_QUIT_SCRIPT, tmp_path)
