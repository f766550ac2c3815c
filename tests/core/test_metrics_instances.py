"""Instance matching and scores against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from napari_seglab import data, metrics


def _dense_iou(pred: np.ndarray, gt: np.ndarray):
    """Dense IoU matrix, one object pair at a time (stardist/cellpose-style reference)."""
    gt_ids = [int(v) for v in np.unique(gt) if v != 0]
    pred_ids = [int(v) for v in np.unique(pred) if v != 0]
    iou = np.zeros((len(gt_ids), len(pred_ids)))
    for i, g in enumerate(gt_ids):
        gm = gt == g
        for j, p in enumerate(pred_ids):
            pm = pred == p
            iou[i, j] = np.sum(gm & pm) / np.sum(gm | pm)
    return gt_ids, pred_ids, iou


def _exhaustive_best(iou: np.ndarray, threshold: float) -> tuple[int, float]:
    """(most matches, then largest IoU sum) over every one-to-one matching."""
    n_gt, n_pred = iou.shape
    best = (0, 0.0)
    small, large = (n_gt, n_pred) if n_gt <= n_pred else (n_pred, n_gt)
    matrix = iou if n_gt <= n_pred else iou.T
    for cols in itertools.permutations(range(large), small):
        values = [matrix[r, c] for r, c in enumerate(cols) if matrix[r, c] >= threshold]
        candidate = (len(values), float(np.sum(values)) if values else 0.0)
        if candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] > best[1] + 1e-12):
            best = candidate
    return best


def _reference_scores(pred, gt, threshold, dense=None):
    """Dense IoU table + assignment solver on the whole matrix, like stardist's matching."""
    gt_ids, pred_ids, iou = dense or _dense_iou(pred, gt)
    if iou.size:
        n = min(iou.shape)
        cost = -(iou >= threshold).astype(float) - iou / (2 * n)
        rows, cols = linear_sum_assignment(cost)
        ok = iou[rows, cols] >= threshold
        matched = iou[rows, cols][ok]
    else:
        matched = np.zeros(0)
    tp = len(matched)
    fp, fn = len(pred_ids) - tp, len(gt_ids) - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else np.nan,
        "recall": tp / (tp + fn) if tp + fn else np.nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
        "accuracy": tp / (tp + fp + fn) if tp + fp + fn else np.nan,
        "mean_matched_iou": matched.mean() if tp else np.nan,
        "pq": matched.sum() / (tp + fp / 2 + fn / 2) if tp + fp + fn else np.nan,
    }


def _noisy_instances(seed: int):
    sample = data.nuclei_2d(seed=seed)
    gt = sample.labels
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
    ids = np.unique(pred)[1:]
    drop = rng.choice(ids, size=3, replace=False)
    pred[np.isin(pred, drop)] = 0  # missed objects
    pred[5:20, 5:25] = 9999  # a false positive
    # non-consecutive, shuffled ids
    lut = np.zeros(pred.max() + 1, dtype=np.int64)
    lut[1:] = rng.permutation(np.arange(1, pred.max() + 1)) * 37 + 1000
    return lut[pred], gt


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("seed", [1, 2])
def test_agrees_with_dense_solver_reference_on_synthetic_nuclei(seed, threshold):
    pred, gt = _noisy_instances(seed)
    ours = metrics.instances(pred, gt, iou_threshold=threshold, thresholds=())
    expected = _reference_scores(pred, gt, threshold)
    for key, value in expected.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-12, err_msg=key)
    np.testing.assert_equal(ours["sq"], ours["mean_matched_iou"])
    assert ours["rq"] == pytest.approx(ours["f1"])
    if ours["tp"]:
        assert ours["pq"] == pytest.approx(ours["sq"] * ours["rq"])
    else:
        assert ours["pq"] == 0


def test_3d_anisotropic_labels_and_per_threshold_list():
    gt = data.nuclei_3d().labels
    pred = np.roll(gt, 1, axis=0)
    ours = metrics.instances(pred, gt)
    assert [e["threshold"] for e in ours["per_threshold"]] == list(metrics.DEFAULT_THRESHOLDS)
    dense = _dense_iou(pred, gt)
    for entry in ours["per_threshold"]:
        expected = _reference_scores(pred, gt, entry["threshold"], dense)
        for key, value in expected.items():
            np.testing.assert_allclose(entry[key], value, rtol=1e-12, err_msg=key)
    tps = [e["tp"] for e in ours["per_threshold"]]
    assert tps == sorted(tps, reverse=True)  # stricter thresholds never match more


def _crowded_case(rng, size=12):
    """Small images where many pairs overlap with IoU < 0.5: conflicts to solve."""
    gt = np.zeros((size, size), dtype=np.int32)
    pred = np.zeros_like(gt)
    for ids, target in ((range(1, 5), gt), (range(1, 6), pred)):
        for i in ids:
            r, c = rng.integers(0, size - 4, size=2)
            h, w = rng.integers(2, 6, size=2)
            target[r : r + h, c : c + w] = i
    return pred, gt


@pytest.mark.parametrize("seed", range(12))
def test_low_thresholds_use_an_optimal_assignment(seed):
    rng = np.random.default_rng(seed)
    pred, gt = _crowded_case(rng)
    _, _, iou = _dense_iou(pred, gt)
    for threshold in (0.1, 0.25, 0.4, 0.5):
        ours = metrics.instances(pred, gt, iou_threshold=threshold, thresholds=())
        n_best, iou_best = _exhaustive_best(iou, threshold)
        assert ours["tp"] == n_best
        matched = ours["objects"]["iou"][ours["objects"]["matched"]]
        assert matched.sum() == pytest.approx(iou_best, abs=1e-12)
        assert np.all(matched >= threshold)


def test_exactly_half_iou_ties_are_resolved_one_to_one():
    gt = np.zeros((4, 6), dtype=np.uint8)
    gt[:2, :2] = 1  # 4 voxels
    pred = np.zeros_like(gt)
    pred[0, :2] = 7  # each half: IoU exactly 0.5 with gt 1
    pred[1, :2] = 8
    result = metrics.instances(pred, gt, iou_threshold=0.5, thresholds=())
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 0)
    above = metrics.instances(pred, gt, iou_threshold=0.51, thresholds=())
    assert (above["tp"], above["fp"], above["fn"]) == (0, 2, 1)


def test_object_table_rows():
    gt = np.zeros((10, 10), dtype=np.uint16)
    gt[0:4, 0:4] = 3  # matched by pred 20
    gt[6:9, 6:9] = 5  # missed, partly covered by pred 30
    pred = np.zeros_like(gt)
    pred[0:4, 0:3] = 20
    pred[6:9, 8:10] = 30
    pred[0:2, 8:10] = 40  # overlaps nothing
    result = metrics.instances(pred, gt, iou_threshold=0.5, thresholds=())
    table = result["objects"]
    rows = list(zip(*(table[k].tolist() for k in ("gt_id", "pred_id", "iou", "matched"))))
    assert rows[0] == (3, 20, pytest.approx(12 / 16), True)
    assert rows[1] == (5, 0, pytest.approx(3 / 12), False)  # best IoU, with pred 30
    assert rows[2] == (0, 30, pytest.approx(3 / 12), False)
    assert rows[3] == (0, 40, 0.0, False)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 1)


def test_empty_images_give_nan_ratios_and_counts():
    empty = np.zeros((5, 5), dtype=np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 4
    both_empty = metrics.instances(empty, empty, thresholds=())
    assert (both_empty["tp"], both_empty["fp"], both_empty["fn"]) == (0, 0, 0)
    for key in ("precision", "recall", "f1", "accuracy", "pq", "sq", "mean_matched_iou"):
        assert np.isnan(both_empty[key]), key
    missed = metrics.instances(empty, one, thresholds=())
    assert missed["recall"] == 0
    assert missed["f1"] == 0
    assert missed["pq"] == 0
    assert np.isnan(missed["precision"])
    assert np.isnan(missed["sq"])


def test_bad_threshold():
    labels = np.zeros((3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"iou_threshold: expected a number in \(0, 1\]"):
        metrics.instances(labels, labels, iou_threshold=0)
    with pytest.raises(ValueError, match="iou threshold"):
        metrics.instances(labels, labels, thresholds=[1.5])


def test_chunked_input_gives_the_same_result():
    dask_array = pytest.importorskip("dask.array")
    pred, gt = _noisy_instances(3)
    expected = metrics.instances(pred, gt)
    lazy = metrics.instances(dask_array.from_array(pred, chunks=(20, 256)), gt)
    for key in metrics.INSTANCE_KEYS:
        np.testing.assert_equal(lazy[key], expected[key])
    for column in expected["objects"]:
        np.testing.assert_array_equal(lazy["objects"][column], expected["objects"][column])
