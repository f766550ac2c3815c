"""The evaluation dock widget in a real viewer: evaluate, table, plots, CSV, error layers."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QTableWidgetSelectionRange

from napari_seglab import data, metrics
from napari_seglab._widgets.evaluation import FN_SUFFIX, FP_SUFFIX, INSTANCE, SEMANTIC


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Evaluation")
    return widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(
        lambda: widget._worker is None and widget.evaluation is not None, timeout=timeout
    )


def table_cells(widget):
    header = [
        widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())
    ]
    rows = [
        [widget.table.item(r, c).text() for c in range(widget.table.columnCount())]
        for r in range(widget.table.rowCount())
    ]
    return header, rows


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
    assert widget.pred_combo.currentText() == "prediction"
    assert widget.gt_combo.currentText() == "ground truth"
    widget.mode_combo.setCurrentText(INSTANCE)
    widget.threshold_spin.setValue(0.6)
    assert not widget.tolerance_spin.isEnabled()
    widget.errors_check.setChecked(True)

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
    line = widget.slice_axes.get_lines()[0]
    np.testing.assert_allclose(
        line.get_ydata(), metrics.per_slice(pred, gt, foreground=True)[1], equal_nan=True
    )
    heights = sum(patch.get_height() for patch in widget.object_axes.patches)
    assert heights == expected["n_gt"]

    # error layers: the missed and the spurious object, on the ground truth's scale
    fp_layer = viewer.layers[f"prediction {FP_SUFFIX}"]
    fn_layer = viewer.layers[f"ground truth {FN_SUFFIX}"]
    assert 77 in np.unique(fp_layer.data)
    assert 3 in np.unique(fn_layer.data)
    assert np.array_equal(fn_layer.data == 3, gt == 3)
    np.testing.assert_allclose(fp_layer.scale, spacing)
    assert widget.pred_combo.count() == 2  # error layers are not offered as inputs

    # CSV export (summary and objects) reads back with the table's numbers
    summary = widget.save_csv(tmp_path / "summary.csv")
    with open(summary, newline="") as fh:
        read_back = list(csv.reader(fh))
    assert read_back[0] == header
    assert [metrics.format_value(float(v)) for v in read_back[1]] == rows[0]
    objects = widget.save_csv(tmp_path / "objects.csv", objects=True)
    with open(objects, newline="") as fh:
        object_rows = list(csv.reader(fh))
    assert object_rows[0] == ["gt_id", "pred_id", "iou", "matched"]
    assert len(object_rows) - 1 == len(expected["objects"]["gt_id"])

    # copy: the whole table as tab-separated text, or the selected cells
    text = widget.copy_table()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t") == header
    widget.table.setRangeSelected(QTableWidgetSelectionRange(0, 1, 1, 2), True)
    assert widget.copy_table() == "\n".join("\t".join(rows[r][1:3]) for r in range(2))


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
    widget.pred_combo.setCurrentText("model")
    widget.gt_combo.setCurrentText("reference")
    widget.mode_combo.setCurrentText(SEMANTIC)
    widget.tolerance_spin.setValue(1.2)
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
    assert len(widget.slice_axes.get_lines()) == len(expected)
    assert not widget.objects_button.isEnabled()
    path = widget.save_csv(tmp_path / "semantic.csv")
    with open(path, newline="") as fh:
        back = list(csv.reader(fh))
    assert float(back[1][header.index("hd95")]) == expected[int(back[1][0])]["hd95"]


def test_mismatched_layers_report_an_error_and_change_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((10, 12), dtype=np.uint8), name="a")
    viewer.add_labels(np.zeros((10, 13), dtype=np.uint8), name="b")
    widget = open_widget(viewer)
    n_layers = len(viewer.layers)
    widget.errors_check.setChecked(True)
    errors = []
    from napari.utils.notifications import notification_manager

    notification_manager.notification_ready.connect(lambda n: errors.append(str(n.message)))
    widget.evaluate_button.click()
    assert widget._worker is None
    assert "Failed" in widget.status.text()
    assert "same shape" in widget.status.text()
    assert any("(10, 12)" in message and "(10, 13)" in message for message in errors)
    assert widget.evaluation is None
    assert len(viewer.layers) == n_layers
    with pytest.raises(RuntimeError, match="press Evaluate first"):
        widget.save_csv("never.csv")


def test_cancel_keeps_results_and_layers(make_napari_viewer, qtbot, stack):
    pred, gt, spacing = stack
    viewer = make_napari_viewer()
    viewer.add_labels(pred, name="prediction", scale=spacing)
    viewer.add_labels(gt, name="ground truth", scale=spacing)
    widget = open_widget(viewer)
    assert not widget.cancel_button.isEnabled()
    # Each object id as a class: dozens of per-class surface computations to stop between.
    widget.mode_combo.setCurrentText(SEMANTIC)
    widget.errors_check.setChecked(True)
    n_layers = len(viewer.layers)

    widget.evaluate_button.click()
    assert widget.cancel_button.isEnabled()
    assert not widget.evaluate_button.isEnabled()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)

    assert "Cancelled" in widget.status.text()
    assert widget.evaluation is None
    assert widget.table.rowCount() == 0
    assert len(viewer.layers) == n_layers
    assert widget.evaluate_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    # A later run completes normally.
    widget.evaluate_button.click()
    wait_done(qtbot, widget)
    assert widget.table.rowCount() > 0
    assert len(viewer.layers) == n_layers + 2
    # Cancelling the next run keeps that result, its table and its layers.
    previous, rows = widget.evaluation, widget.table_text(selected_only=False)
    widget.evaluate_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "Cancelled" in widget.status.text()
    assert widget.evaluation is previous
    assert widget.table_text(selected_only=False) == rows
    assert len(viewer.layers) == n_layers + 2
