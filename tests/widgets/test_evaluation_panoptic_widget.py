"""Panoptic mode of the Evaluation dock in a real viewer: two-layer and one-layer forms."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from napari_seglab import metrics
from napari_seglab._widgets.evaluation_panoptic import PANOPTIC


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "Evaluation")
    return widget


def scene():
    """Ground truth as one object layer (class feature); prediction as class + object layers."""
    gt = np.zeros((40, 40), np.uint16)
    gt[2:12, 2:12] = 1  # cell
    gt[2:12, 20:30] = 2  # cell
    gt[20:26, 5:15] = 5  # cell the prediction misses
    gt[30:, :] = 9  # tissue (stuff)
    features = pd.DataFrame(
        {"index": [1, 2, 5, 9], "class": [1, 1, 1, 3], "class_name": ["cell"] * 3 + ["tissue"]}
    )
    pred_class = np.zeros((40, 40), np.uint8)
    pred_objects = np.zeros((40, 40), np.int32)
    pred_class[3:12, 2:12] = 1
    pred_objects[3:12, 2:12] = 10
    pred_class[2:12, 21:30] = 1
    pred_objects[2:12, 21:30] = 11
    pred_class[14:18, 30:36] = 1  # a spurious cell
    pred_objects[14:18, 30:36] = 12
    pred_class[28:, :] = 3
    return gt, features, pred_class, pred_objects


def test_panoptic_mode_scores_table_csv_and_plots(make_napari_viewer, qtbot, tmp_path, errors):
    gt, features, pred_class, pred_objects = scene()
    viewer = make_napari_viewer()
    viewer.add_labels(gt, name="ground truth", features=features)
    viewer.add_labels(pred_objects, name="objects")
    viewer.add_labels(pred_class, name="prediction")
    widget = open_widget(viewer)
    assert widget.panoptic.native.isHidden()
    widget.form.mode.value = PANOPTIC
    assert not widget.panoptic.native.isHidden()
    assert not widget.form.error_layers.enabled
    assert not widget.form.foreground.enabled
    assert widget.form.iou_threshold.enabled

    widget.evaluate_button.click()  # no thing class yet: refused, nothing runs
    assert "Thing classes" in widget.status.text()
    assert widget.evaluation is None

    widget.panoptic.pred_objects.value = viewer.layers["objects"]
    widget.panoptic.things.value = "1"
    widget.evaluate_button.click()
    qtbot.waitUntil(lambda: not widget.busy and widget.evaluation is not None, timeout=60_000)

    gt_class, gt_objects = metrics.labels_to_panoptic(gt, {1: 1, 2: 1, 5: 1, 9: 3})
    expected = metrics.panoptic(pred_class, pred_objects, gt_class, gt_objects, things=[1])
    assert expected["classes"][1]["tp"] == 2
    assert expected["classes"][1]["fp"] == 1
    assert expected["classes"][1]["fn"] == 1
    header, rows = metrics.results_table(expected)
    table = widget.results.table
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == header
    shown = [
        [table.item(r, c).text() for c in range(table.columnCount())]
        for r in range(table.rowCount())
    ]
    assert shown == [[metrics.format_value(v) for v in row] for row in rows]
    assert f"PQ {metrics.format_value(expected['pq'])}" in widget.status.text()
    assert "things (1)" in widget.status.text()
    assert "stuff (3)" in widget.status.text()
    assert len(widget.results.slice_axes.patches) == 2  # PQ bars of classes 1 and 3
    path = widget.results.save_csv(tmp_path / "pq.csv")
    with open(path, newline="") as fh:
        read_back = list(csv.reader(fh))
    assert read_back[0] == header
    assert read_back[1][:2] == ["1", "thing"]
    assert not widget.results.objects_button.isEnabled()
    assert np.array_equal(viewer.layers["prediction"].data, pred_class)  # inputs untouched
    assert errors == ["Evaluation: Thing classes: expected at least one class id, e.g. 1"]


def test_a_class_layer_without_objects_or_class_feature_is_named(make_napari_viewer, qtbot):
    gt, features, pred_class, _ = scene()
    viewer = make_napari_viewer()
    viewer.add_labels(gt, name="ground truth", features=features)
    viewer.add_labels(pred_class, name="prediction")
    widget = open_widget(viewer)
    widget.form.mode.value = PANOPTIC
    widget.panoptic.things.value = "1"
    widget.evaluate_button.click()
    assert "'prediction'" in widget.status.text()
    assert "'class' feature" in widget.status.text()
    assert widget.evaluation is None
    assert len(viewer.layers) == 2
