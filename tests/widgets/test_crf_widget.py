"""The CRF refinement dock widget in a real viewer: refine, preview, undo, cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab import crf, data, metrics
from napari_seglab._widgets.crf import NEW_LAYER, PREVIEW_NAME, REPLACE_INPUT


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "CRF refinement")
    return widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


@pytest.fixture(scope="module")
def sample_2d():
    return data.nuclei_2d(shape=(128, 128), n_objects=12, seed=3)


def test_refines_sam_like_labels_in_place_and_undoes(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    grown = data.blobby_labels(sample_2d.labels, grow=3.0)
    layer = viewer.add_labels(grown.copy(), name="sam masks")
    widget = open_widget(viewer)
    assert widget.image_combo.currentText() == "nuclei"
    assert widget.input_combo.currentText() == "sam masks"
    widget.output_combo.setCurrentText(REPLACE_INPUT)
    assert widget.output_combo.currentText() == REPLACE_INPUT
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
    widget.input_combo.setCurrentText("foreground probability")
    assert [widget.output_combo.itemText(i) for i in range(widget.output_combo.count())] == [
        NEW_LAYER
    ]
    assert not widget.confidence.isEnabled()
    widget.bilateral_weight.setValue(10.0)

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
    assert widget.input_combo.findText(PREVIEW_NAME) == -1


def test_cancel_changes_no_layer(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    grown = data.blobby_labels(sample_2d.labels)
    layer = viewer.add_labels(grown.copy(), name="masks")
    widget = open_widget(viewer)
    widget.output_combo.setCurrentText(REPLACE_INPUT)
    widget.iterations.setValue(50)  # 12 objects x 50 iterations: far longer than a click
    n_layers = len(viewer.layers)

    widget.apply_button.click()
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    wait_done(qtbot, widget)

    assert np.array_equal(layer.data, grown)
    assert len(viewer.layers) == n_layers
    assert "Cancelled" in widget.status.text()
    assert widget.apply_button.isEnabled()


def test_mismatched_layers_report_an_error(make_napari_viewer, qtbot, sample_2d):
    viewer = make_napari_viewer()
    viewer.add_image(sample_2d.image, name="nuclei")
    layer = viewer.add_labels(np.zeros((50, 50), dtype=np.int32), name="wrong size")
    widget = open_widget(viewer)
    errors = []
    from napari.utils.notifications import notification_manager

    notification_manager.notification_ready.connect(lambda n: errors.append(str(n.message)))
    widget.apply_button.click()
    assert widget._worker is None
    assert any("(128, 128)" in message and "(50, 50)" in message for message in errors)
    assert not layer.data.any()
    assert len(viewer.layers) == 2
