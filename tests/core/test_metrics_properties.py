"""Property tests (hypothesis): invariances every correct metric must have."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_seglab import metrics

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.one_of(
    st.tuples(st.integers(2, 12), st.integers(2, 12)),
    st.tuples(st.integers(1, 5), st.integers(2, 8), st.integers(2, 8)),
)


@st.composite
def label_images(draw, n_ids=6):
    """A label image whose ids form blocks (so objects are more than single voxels)."""
    shape = draw(shapes)
    coarse_shape = tuple(max(1, s // 2) for s in shape)
    coarse = draw(arrays(np.int32, coarse_shape, elements=st.integers(0, n_ids)))
    labels = coarse
    for axis in range(len(shape)):
        labels = labels.repeat(2, axis=axis)
    labels = labels[tuple(slice(0, s) for s in shape)]
    return np.pad(labels, [(0, s - labels.shape[i]) for i, s in enumerate(shape)])


@st.composite
def label_pairs(draw):
    gt = draw(label_images())
    noise = draw(arrays(np.int32, gt.shape, elements=st.integers(0, 6)))
    keep = draw(arrays(np.bool_, gt.shape, elements=st.booleans()))
    return np.where(keep, gt, noise), gt


def _equal_scores(a: dict, b: dict, keys) -> None:
    for key in keys:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)


@SETTINGS
@given(labels=label_images())
def test_identical_inputs_give_perfect_scores(labels):
    result = metrics.instances(labels, labels.copy(), thresholds=())
    n = len(np.unique(labels[labels != 0]))
    assert (result["tp"], result["fp"], result["fn"]) == (n, 0, 0)
    if n:
        for key in ("precision", "recall", "f1", "accuracy", "mean_matched_iou", "pq", "sq", "rq"):
            assert result[key] == 1.0, key
    for scores in metrics.semantic(labels, labels.copy()).values():
        for key in ("dice", "iou", "precision", "recall", "surface_dice"):
            assert scores[key] == 1.0, key
        assert scores["hd95"] == 0.0
        assert scores["assd"] == 0.0


@SETTINGS
@given(pair=label_pairs(), threshold=st.sampled_from([0.2, 0.5, 0.75]))
def test_swapping_prediction_and_truth_swaps_precision_and_recall(pair, threshold):
    pred, gt = pair
    forward = metrics.instances(pred, gt, iou_threshold=threshold, thresholds=())
    backward = metrics.instances(gt, pred, iou_threshold=threshold, thresholds=())
    assert forward["tp"] == backward["tp"]
    assert (forward["fp"], forward["fn"]) == (backward["fn"], backward["fp"])
    np.testing.assert_equal(forward["precision"], backward["recall"])
    np.testing.assert_equal(forward["recall"], backward["precision"])
    _equal_scores(forward, backward, ("f1", "accuracy", "pq"))
    sem_forward = metrics.semantic(pred, gt, spacing=(1.0,) * gt.ndim)
    sem_backward = metrics.semantic(gt, pred, spacing=(1.0,) * gt.ndim)
    for c, scores in sem_forward.items():
        np.testing.assert_equal(scores["precision"], sem_backward[c]["recall"])
        _equal_scores(scores, sem_backward[c], ("dice", "iou", "hd95", "assd", "surface_dice"))


@SETTINGS
@given(
    pair=label_pairs(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.uint16, np.int64, np.uint64]),
)
def test_relabelling_ids_does_not_change_instance_scores(pair, seed, dtype):
    pred, gt = pair
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    # new, distinct, non-consecutive non-zero ids for 1..6 (0 stays background)
    new_ids = np.zeros(7, dtype=dtype)
    new_ids[1:] = rng.choice(np.arange(1, min(high, 60000), dtype=np.int64), 6, replace=False)
    if dtype == np.uint64:
        new_ids[1:] += np.uint64(2**63)
    relabelled = new_ids[pred]
    before = metrics.instances(pred, gt, iou_threshold=0.5)
    after = metrics.instances(relabelled, gt, iou_threshold=0.5)
    _equal_scores(before, after, metrics.INSTANCE_KEYS)
    for a, b in zip(before["per_threshold"], after["per_threshold"]):
        _equal_scores(a, b, metrics.INSTANCE_KEYS)
    np.testing.assert_allclose(np.sort(before["objects"]["iou"]), np.sort(after["objects"]["iou"]))


def _object_ids(labels):
    return [int(v) for v in np.unique(labels) if v != 0]


@SETTINGS
@given(labels=label_images(), data=st.data())
def test_splitting_a_predicted_object_adds_a_false_positive(labels, data):
    ids = [i for i in _object_ids(labels) if np.count_nonzero(labels == i) >= 2]
    if not ids:
        return
    target = data.draw(st.sampled_from(ids))
    pred = labels.copy()
    voxels = np.flatnonzero(labels == target)
    cut = data.draw(st.integers(1, voxels.size - 1))
    pred.flat[voxels[cut:]] = 100  # the tail of the object becomes a new object
    n = len(_object_ids(labels))
    result = metrics.instances(pred, labels, iou_threshold=0.6, thresholds=())
    assert result["fp"] >= 1
    assert result["precision"] < 1
    assert result["tp"] >= n - 1
    # the larger part keeps the match exactly when its IoU reaches the threshold
    keeps_match = max(cut, voxels.size - cut) / voxels.size >= 0.6
    at_half = metrics.instances(pred, labels, iou_threshold=0.5, thresholds=())
    assert (at_half["tp"], at_half["fp"]) == (n, 1)  # the larger half always has IoU >= 0.5
    assert result["tp"] == (n if keeps_match else n - 1)
    assert result["fp"] == (1 if keeps_match else 2)
    # foreground semantic scores do not see the split
    foreground = metrics.semantic(pred != 0, labels != 0)
    for scores in foreground.values():
        assert scores["dice"] == 1.0


@SETTINGS
@given(labels=label_images(), data=st.data())
def test_merging_two_predicted_objects_adds_a_false_negative(labels, data):
    ids = _object_ids(labels)
    if len(ids) < 2:
        return
    first, second = data.draw(st.lists(st.sampled_from(ids), min_size=2, max_size=2, unique=True))
    pred = labels.copy()
    pred[pred == second] = first
    n = len(ids)
    result = metrics.instances(pred, labels, iou_threshold=0.6, thresholds=())
    assert result["n_pred"] == n - 1
    assert result["fn"] >= 1
    assert result["recall"] < 1
    size_first = np.count_nonzero(labels == first)
    size_second = np.count_nonzero(labels == second)
    # the merged object still matches the larger part when their IoU reaches the threshold
    keeps_match = max(size_first, size_second) / (size_first + size_second) >= 0.6
    assert result["tp"] == (n - 1 if keeps_match else n - 2)
    assert result["fp"] == (0 if keeps_match else 1)
    assert result["fn"] == (1 if keeps_match else 2)


@SETTINGS
@given(pair=label_pairs())
def test_dice_and_iou_are_consistent_and_bounded(pair):
    pred, gt = pair
    for scores in metrics.semantic(pred, gt, surface=False).values():
        if np.isnan(scores["dice"]):
            continue
        assert 0 <= scores["iou"] <= scores["dice"] <= 1
        assert scores["dice"] == pytest.approx(2 * scores["iou"] / (1 + scores["iou"]))
