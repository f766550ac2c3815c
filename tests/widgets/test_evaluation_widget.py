"""The evaluation dock widget in a real viewer: evaluate, table, plots, CSV, error layers.

Also: default layer choices, error layers on the prediction's geometry, class
mapping and warnings, status lines that never describe an older run, and a
dock that fits a 900 px screen.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _canvas import show_viewer
from qtpy.QtWidgets import QApplication, QScrollArea, QTableWidgetSelectionRange

from napari_seglab import data, metrics
from napari_seglab._widgets.evaluation import FN_SUFFIX, FP_SUFFIX, INSTANCE, SEMANTIC


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Evaluation")
    return widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy and widget.evaluation is not None, timeout=timeout)


def table_cells(widget):
    table = widget.results.table
    header = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    rows = [
        [table.item(r, c).text() for c in range(table.columnCount())]
        for r in range(table.rowCount())
    ]
    return header, rows


def choice_names(widget):
    """Names of the chosen prediction and ground-truth layers (None when empty)."""
    return tuple(
        None if w.value is None else w.value.name for w in (widget.form.pred, widget.form.gt)
    )


@pytest.fixture(scope="module")
def stack():
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 1, axis=2)
    pred[pred == 3] = 0  # one missed object
    pred[2:6, :12, :12] = 77  # one spurious object
    return pred, gt, sample.spacing


def test_instance_evaluation_table_plots_csv_and_error_layers(
    make_napari_viewer, qtbot, stack, tmp_path
):
    pred, gt, spacing = stack
    viewer = make_napari_viewer()
    viewer.add_labels(pred, name="prediction", scale=spacing)
    viewer.add_labels(gt, name="ground truth", scale=spacing)
    widget = open_widget(viewer)
    assert choice_names(widget) == ("prediction", "ground truth")
    widget.form.mode.value = INSTANCE
    widget.form.iou_threshold.value = 0.6
    assert not widget.form.tolerance.enabled
    assert not widget.form.foreground.enabled
    widget.form.error_layers.value = True

    widget.evaluate_button.click()
    wait_done(qtbot, widget)

    expected = metrics.instances(pred, gt, iou_threshold=0.6)
    header, rows = table_cells(widget)
    assert header == ["iou_threshold", *metrics.INSTANCE_KEYS]
    chosen = next(r for r in rows if float(r[0]) == 0.6)
    for key in metrics.INSTANCE_KEYS:
        assert chosen[header.index(key)] == metrics.format_value(expected[key]), key
    assert f"FP {expected['fp']}" in widget.status.text()

    # plots: per-slice foreground Dice and a histogram of per-object IoU
    line = widget.results.slice_axes.get_lines()[0]
    np.testing.assert_allclose(
        line.get_ydata(), metrics.per_slice(pred, gt, foreground=True)[1], equal_nan=True
    )
    heights = sum(patch.get_height() for patch in widget.results.object_axes.patches)
    assert heights == expected["n_gt"]

    # error layers: the missed and the spurious object, on the ground truth's scale
    fp_layer = viewer.layers[f"prediction {FP_SUFFIX}"]
    fn_layer = viewer.layers[f"ground truth {FN_SUFFIX}"]
    assert 77 in np.unique(fp_layer.data)
    assert 3 in np.unique(fn_layer.data)
    assert np.array_equal(fn_layer.data == 3, gt == 3)
    np.testing.assert_allclose(fp_layer.scale, spacing)
    offered = [c.name for c in widget.form.pred.choices if c is not None]
    assert offered == ["prediction", "ground truth"]  # error layers are not offered as inputs

    # CSV export (summary and objects) reads back with the table's numbers
    summary = widget.results.save_csv(tmp_path / "summary.csv")
    with open(summary, newline="") as fh:
        read_back = list(csv.reader(fh))
    assert read_back[0] == header
    assert [metrics.format_value(float(v)) for v in read_back[1]] == rows[0]
    objects = widget.results.save_csv(tmp_path / "objects.csv", objects=True)
    with open(objects, newline="") as fh:
        object_rows = list(csv.reader(fh))
    assert object_rows[0] == ["gt_id", "pred_id", "iou", "matched"]
    assert len(object_rows) - 1 == len(expected["objects"]["gt_id"])

    # copy: the whole table as tab-separated text, or the selected cells
    text = widget.results.copy_table()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t") == header
    widget.results.table.setRangeSelected(QTableWidgetSelectionRange(0, 1, 1, 2), True)
    assert widget.results.copy_table() == "\n".join("\t".join(rows[r][1:3]) for r in range(2))


def test_semantic_evaluation_uses_layer_scale_as_spacing(
    make_napari_viewer, qtbot, stack, tmp_path
):
    pred, gt, spacing = stack
    pred_classes = (pred % 3).astype(np.uint8)
    gt_classes = (gt % 3).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_labels(gt_classes, name="reference", scale=spacing)
    viewer.add_labels(pred_classes, name="model", scale=spacing)
    widget = open_widget(viewer)
    assert choice_names(widget) == ("model", "reference")
    widget.form.mode.value = SEMANTIC
    widget.form.tolerance.value = 1.2
    n_layers = len(viewer.layers)

    widget.evaluate_button.click()
    wait_done(qtbot, widget)

    expected = metrics.semantic(pred_classes, gt_classes, spacing=spacing, tolerance=1.2)
    header, rows = table_cells(widget)
    assert header == ["class", *metrics.SEMANTIC_KEYS]
    assert [int(r[0]) for r in rows] == sorted(expected)
    for row in rows:
        for key in metrics.SEMANTIC_KEYS:
            assert row[header.index(key)] == metrics.format_value(expected[int(row[0])][key])
    assert len(viewer.layers) == n_layers  # no error layers unless asked
    assert len(widget.results.slice_axes.get_lines()) == len(expected)
    assert not widget.results.objects_button.isEnabled()
    assert not widget.warning_label.isVisibleTo(widget)
    path = widget.results.save_csv(tmp_path / "semantic.csv")
    with open(path, newline="") as fh:
        back = list(csv.reader(fh))
    assert float(back[1][header.index("hd95")]) == expected[int(back[1][0])]["hd95"]


def test_mismatched_layers_report_an_error_and_change_nothing(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((10, 12), dtype=np.uint8), name="a")
    viewer.add_labels(np.zeros((10, 13), dtype=np.uint8), name="b")
    widget = open_widget(viewer)
    widget.form.gt.value = viewer.layers["a"]
    assert choice_names(widget) == ("b", "a")
    n_layers = len(viewer.layers)
    widget.form.error_layers.value = True
    widget.evaluate_button.click()
    assert not widget.busy
    assert widget.evaluate_button.isEnabled()
    assert "Failed" in widget.status.text()
    assert "same shape" in widget.status.text()
    assert any("(10, 12)" in message and "(10, 13)" in message for message in errors)
    assert widget.evaluation is None
    assert len(viewer.layers) == n_layers
    with pytest.raises(RuntimeError, match="press Evaluate first"):
        widget.results.save_csv("never.csv")


def test_cancel_keeps_results_and_layers(make_napari_viewer, qtbot, stack):
    pred, gt, spacing = stack
    viewer = make_napari_viewer()
    viewer.add_labels(pred, name="prediction", scale=spacing)
    viewer.add_labels(gt, name="ground truth", scale=spacing)
    widget = open_widget(viewer)
    assert not widget.cancel_button.isEnabled()
    # Each object id as a class: dozens of per-class surface computations to stop between.
    widget.form.mode.value = SEMANTIC
    widget.form.error_layers.value = True
    n_layers = len(viewer.layers)

    widget.evaluate_button.click()
    assert widget.cancel_button.isEnabled()
    assert not widget.evaluate_button.isEnabled()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)

    assert "Cancelled" in widget.status.text()
    assert "previous run" not in widget.status.text()
    assert widget.evaluation is None
    assert widget.results.table.rowCount() == 0
    assert len(viewer.layers) == n_layers
    assert widget.evaluate_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    # A later run completes normally.
    widget.evaluate_button.click()
    wait_done(qtbot, widget)
    assert widget.results.table.rowCount() > 0
    assert len(viewer.layers) == n_layers + 2
    # Cancelling the next run keeps that result, its table and its layers; the status
    # says the table is from the previous run, not that run's summary.
    previous, rows = widget.evaluation, widget.results.table_text(selected_only=False)
    widget.evaluate_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert "Cancelled" in widget.status.text()
    assert "previous run" in widget.status.text()
    assert "mean Dice" not in widget.status.text()
    assert widget.evaluation is previous
    assert widget.results.table_text(selected_only=False) == rows
    assert len(viewer.layers) == n_layers + 2


@pytest.mark.parametrize("truth_name", ["ground truth", "gt", "nuclei_labels", "GroundTruth"])
def test_defaults_most_recent_prediction_against_the_layer_named_like_ground_truth(
    make_napari_viewer, qtbot, truth_name
):
    labels = np.zeros((12, 12), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((12, 12)), name="image")
    viewer.add_labels(labels.copy(), name="first try")
    viewer.add_labels(labels.copy(), name=truth_name)
    viewer.add_labels(labels.copy(), name="prediction")
    widget = open_widget(viewer)
    assert choice_names(widget) == ("prediction", truth_name)
    assert "Ready" in widget.status.text()
    # a newer prediction becomes the default while the user has not chosen
    viewer.add_labels(labels.copy(), name="prediction 2")
    assert choice_names(widget) == ("prediction 2", truth_name)
    # a choice of the user sticks when layers come and go
    widget.form.pred.value = viewer.layers["first try"]
    viewer.add_labels(labels.copy(), name="prediction 3")
    assert choice_names(widget) == ("first try", truth_name)


def test_names_that_say_ground_truth():
    from napari_seglab._widgets.evaluation import looks_like_ground_truth

    for name in ("ground truth", "Ground_Truth", "gt", "cells gt", "GT-2", "nuclei_labels"):
        assert looks_like_ground_truth(name), name
    for name in ("prediction", "Labels", "gtx", "night", "prediction_labels", "sam masks"):
        assert not looks_like_ground_truth(name), name


def test_without_a_layer_named_like_ground_truth_the_user_is_asked(make_napari_viewer, qtbot):
    labels = np.zeros((12, 12), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((12, 12)), name="image")
    viewer.add_labels(labels.copy(), name="a")
    viewer.add_labels(labels.copy(), name="b")
    widget = open_widget(viewer)
    assert choice_names(widget) == ("b", None)
    assert "Choose the ground-truth" in widget.status.text()
    widget.evaluate_button.click()
    assert "choose a prediction and a ground-truth" in widget.status.text()
    assert widget.evaluation is None
    viewer.add_labels(labels.copy(), name="manual annotation")
    assert choice_names(widget) == ("b", "manual annotation")


def test_error_layers_take_the_prediction_layers_geometry(make_napari_viewer, qtbot, stack):
    pred, gt, _ = stack
    angle = np.deg2rad(20)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    geometry = {"scale": (3.0, 0.7, 0.4), "translate": (72.0, -98.0, 12.5), "affine": affine}
    viewer = make_napari_viewer()
    viewer.add_labels(gt, name="ground truth", **geometry)
    pred_layer = viewer.add_labels(pred, name="prediction", **geometry)
    widget = open_widget(viewer)
    widget.form.mode.value = INSTANCE
    widget.form.error_layers.value = True
    widget.evaluate_button.click()
    wait_done(qtbot, widget)

    for name in (f"prediction {FP_SUFFIX}", f"ground truth {FN_SUFFIX}"):
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, pred_layer.scale)
        np.testing.assert_allclose(layer.translate, pred_layer.translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, pred_layer.affine.affine_matrix)
        # the same voxel lands on the same world point
        voxel = np.array([3, 20, 30])
        np.testing.assert_allclose(layer.data_to_world(voxel), pred_layer.data_to_world(voxel))


def test_instance_ground_truth_warns_and_foreground_fixes_it(make_napari_viewer, qtbot):
    sample = data.nuclei_2d(shape=(128, 128), n_objects=20, seed=4)
    semantic_prediction = np.roll(sample.semantic, 1, axis=0)
    viewer = make_napari_viewer()
    viewer.add_labels(sample.labels, name="gt")
    viewer.add_labels(semantic_prediction, name="prediction")
    widget = open_widget(viewer)
    widget.evaluate_button.click()
    wait_done(qtbot, widget)
    assert widget.warning_label.isVisibleTo(widget)
    assert "looks like instances" in widget.warning_label.text()
    assert widget.results.table.rowCount() > 10

    widget.form.foreground.value = True
    assert not widget.warning_label.isVisibleTo(widget)  # a new choice clears old text
    previous = widget.evaluation
    widget.evaluate_button.click()
    qtbot.waitUntil(lambda: not widget.busy and widget.evaluation is not previous)
    assert not widget.warning_label.isVisibleTo(widget)
    assert widget.results.table.rowCount() == 1
    expected = metrics.foreground_dice(semantic_prediction, sample.labels)
    assert widget.evaluation.result[1]["dice"] == pytest.approx(expected)
    assert "1 classes" in widget.status.text()


def test_disjoint_classes_warn_and_a_class_map_fixes_them(make_napari_viewer, qtbot, errors):
    sample = data.nuclei_2d(shape=(96, 96), n_objects=12, seed=2)
    pred = np.where(sample.labels > 0, 2 - sample.labels % 2, 0).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_labels(sample.semantic * 3, name="reference")
    viewer.add_labels(pred, name="model")
    widget = open_widget(viewer)
    widget.evaluate_button.click()
    wait_done(qtbot, widget)
    assert "No class is in both" in widget.warning_label.text()
    assert widget.warning_label.isVisibleTo(widget)

    widget.form.class_map.value = "1:3, 2:3"
    previous = widget.evaluation
    widget.evaluate_button.click()
    qtbot.waitUntil(lambda: not widget.busy and widget.evaluation is not previous)
    assert not widget.warning_label.isVisibleTo(widget)
    assert list(widget.evaluation.result) == [3]
    assert widget.evaluation.result[3]["dice"] == pytest.approx(1.0)

    widget.form.class_map.value = "1 to 3"
    widget.evaluate_button.click()
    assert "Failed" in widget.status.text()
    assert "PRED:GT" in widget.status.text()
    assert any("PRED:GT" in message for message in errors)
    assert not widget.busy


def test_a_new_choice_of_layers_leaves_no_stale_status(make_napari_viewer, qtbot, stack):
    pred, gt, spacing = stack
    viewer = make_napari_viewer()
    viewer.add_labels(gt, name="ground truth", scale=spacing)
    viewer.add_labels(pred, name="prediction", scale=spacing)
    viewer.add_labels(np.roll(gt, 2, axis=1), name="other model", scale=spacing)
    widget = open_widget(viewer)
    widget.form.pred.value = viewer.layers["prediction"]
    widget.form.mode.value = INSTANCE
    widget.evaluate_button.click()
    wait_done(qtbot, widget)
    assert "FP" in widget.status.text()
    assert "'prediction' vs 'ground truth'" in widget.results.caption.text()
    # an unrelated layer does not touch the result
    viewer.add_image(np.zeros((4, 4)), name="notes")
    assert "FP" in widget.status.text()

    widget.form.pred.value = viewer.layers["other model"]
    assert "FP" not in widget.status.text()
    assert "'other model'" in widget.status.text()
    assert "Ready" in widget.status.text()
    # the table says which layers it belongs to
    assert "'prediction' vs 'ground truth'" in widget.results.caption.text()


def test_dock_fits_a_900_pixel_screen_and_evaluate_is_reachable(make_napari_viewer, qtbot, stack):
    pred, gt, spacing = stack
    viewer = make_napari_viewer()
    show_viewer(viewer, qtbot, 1280, 900)
    viewer.add_labels(gt, name="ground truth", scale=spacing)
    viewer.add_labels(pred, name="prediction", scale=spacing)
    widget = open_widget(viewer)
    # another tall dock on the same side: both must share 900 px
    viewer.window.add_plugin_dock_widget("napari-seglab", "CRF refinement")
    qtbot.wait(100)
    window = viewer.window._qt_window
    assert window.height() <= 900
    assert widget.minimumSizeHint().height() < 400
    area = widget.findChild(QScrollArea)
    area.ensureWidgetVisible(widget.evaluate_button)
    qtbot.wait(20)
    assert widget.evaluate_button.isVisible()
    assert not widget.evaluate_button.visibleRegion().isEmpty()
    area.ensureWidgetVisible(widget.results.table)
    qtbot.wait(20)
    assert not widget.results.table.visibleRegion().isEmpty()
