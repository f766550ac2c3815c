"""Tables, CSV files and error images built from metric results."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_seglab import data, metrics


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _instance_case():
    gt = data.nuclei_2d(seed=5).labels
    pred = np.roll(gt, 3, axis=1)
    pred[pred == 4] = 0  # a missed object
    pred[:10, :10] = 500  # a false positive
    return pred, gt


def test_semantic_csv_round_trip(tmp_path):
    gt = (data.nuclei_2d(seed=1).labels % 3).astype(np.uint8)
    pred = np.roll(gt, 2, axis=0)
    gt[:3, :3] = 9  # class 9: missed entirely -> precision NaN, hd95 inf
    result = metrics.semantic(pred, gt, spacing=(0.5, 0.5))
    path = metrics.write_csv(result, tmp_path / "semantic.csv")
    header, rows = _read_csv(path)
    assert header == ["class", *metrics.SEMANTIC_KEYS]
    assert [int(r[0]) for r in rows] == sorted(result)
    for row in rows:
        scores = result[int(row[0])]
        for key, text in zip(header[1:], row[1:]):
            value = float(text)
            if math.isnan(scores[key]):
                assert math.isnan(value)
            else:
                assert value == scores[key]  # full precision, inf included
    assert float(rows[-1][header.index("hd95")]) == math.inf


def test_instance_summary_and_objects_csv(tmp_path):
    pred, gt = _instance_case()
    result = metrics.instances(pred, gt, iou_threshold=0.6)
    header, rows = _read_csv(metrics.write_csv(result, tmp_path / "summary.csv"))
    assert header == ["iou_threshold", *metrics.INSTANCE_KEYS]
    thresholds = [float(r[0]) for r in rows]
    assert thresholds == sorted({*metrics.DEFAULT_THRESHOLDS, 0.6})
    chosen = rows[thresholds.index(0.6)]
    for key, text in zip(header[1:], chosen[1:]):
        assert float(text) == pytest.approx(result[key], rel=0, abs=0)
    header, rows = _read_csv(metrics.write_csv(result, tmp_path / "objects.csv", table="objects"))
    assert header == ["gt_id", "pred_id", "iou", "matched"]
    assert len(rows) == len(result["objects"]["gt_id"])
    assert sum(r[3] == "true" for r in rows) == result["tp"]
    assert [int(r[0]) for r in rows if r[0] != "0"] == sorted(np.unique(gt)[1:].tolist())
    assert any(r[0] == "0" and r[1] == "500" for r in rows)


def test_results_table_rejects_bad_requests(tmp_path):
    semantic = metrics.semantic(np.ones((3, 3), int), np.ones((3, 3), int))
    with pytest.raises(ValueError, match=r"objects.*instance result"):
        metrics.results_table(semantic, "objects")
    with pytest.raises(ValueError, match="'summary' or 'objects'"):
        metrics.results_table(semantic, "everything")
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        metrics.write_csv(semantic, tmp_path / "missing" / "x.csv")


def test_instance_error_images_hold_the_unmatched_objects():
    pred, gt = _instance_case()
    result = metrics.instances(pred, gt)
    fp, fn = metrics.instance_errors(pred, gt, result)
    objects = result["objects"]
    unmatched_pred = set(objects["pred_id"][(objects["gt_id"] == 0)].tolist())
    unmatched_gt = set(objects["gt_id"][(objects["gt_id"] != 0) & ~objects["matched"]].tolist())
    assert set(np.unique(fp).tolist()) - {0} == unmatched_pred
    assert set(np.unique(fn).tolist()) - {0} == unmatched_gt
    assert 500 in unmatched_pred
    assert 4 in unmatched_gt
    # each error object is complete and in its original place
    assert np.array_equal(fp == 500, pred == 500)
    assert np.array_equal(fn == 4, gt == 4)
    assert fp.dtype == pred.dtype
    assert fn.dtype == gt.dtype


def test_semantic_error_images():
    gt = np.array([[0, 1, 1, 2], [0, 1, 7, 2]])
    pred = np.array([[1, 1, 0, 2], [0, 2, 7, 2]])
    fp, fn = metrics.semantic_errors(pred, gt)
    assert fp.tolist() == [[1, 0, 0, 0], [0, 2, 0, 0]]
    assert fn.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    fp, fn = metrics.semantic_errors(pred, gt, classes=[2], ignore_label=7)
    assert fp.tolist() == [[0, 0, 0, 0], [0, 2, 0, 0]]
    assert not fn.any()
