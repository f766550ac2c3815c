"""Class mapping, foreground vs background, and the warnings of a misleading comparison."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab import data, metrics


@pytest.fixture(scope="module")
def sample():
    return data.nuclei_2d(shape=(128, 128), n_objects=20, seed=4)


def two_class_prediction(labels: np.ndarray) -> np.ndarray:
    """Objects as classes 1 and 2 (odd ids 1, even ids 2), shifted by a pixel."""
    pred = np.where(labels > 0, 2 - labels % 2, 0).astype(np.uint8)
    return np.roll(pred, 1, axis=1)


def test_instance_image_looks_like_instances_and_class_images_do_not(sample):
    labels = sample.labels
    check = metrics.instance_check(labels)
    assert check.n_ids == len(np.unique(labels)) - 1
    assert check.n_single == check.n_checked
    assert check.looks_like_instances
    assert metrics.looks_like_instances(data.nuclei_3d().labels)
    # few ids: classes
    assert not metrics.looks_like_instances(sample.semantic)
    assert not metrics.looks_like_instances(two_class_prediction(labels))
    # many ids, each in two separate places: classes (e.g. tissue types), not objects
    split = labels.copy()
    split[:, 64:] = np.where(labels[:, :64] > 0, labels[:, :64], 0)
    split[:, :64] = np.where(labels[:, :64] > 0, labels[:, :64], 0)
    split[:, 64:] = np.fliplr(split[:, :64])
    assert len(np.unique(split)) > 10
    assert not metrics.looks_like_instances(split)
    # with a sample of the ids the verdict is the same
    sampled = metrics.instance_check(labels, max_checked=5)
    assert sampled.n_checked == 5
    assert sampled.looks_like_instances


def test_foreground_and_class_map_equal_the_merged_inputs(sample):
    pred = two_class_prediction(sample.labels)
    gt = sample.semantic
    spacing = (0.5, 0.25)
    plain = metrics.semantic(pred, gt, spacing=spacing)
    assert sorted(plain) == [1, 2]
    merged = metrics.semantic((pred > 0).astype(np.uint8), gt, spacing=spacing)
    assert merged[1]["dice"] > plain[1]["dice"] + 0.2
    mapped = metrics.semantic(pred, gt, spacing=spacing, class_map={1: 1, 2: 1})
    assert mapped == merged
    foreground = metrics.semantic(pred, sample.labels, spacing=spacing, foreground=True)
    assert foreground == merged
    # mapping to 0 makes a class background; unmapped ids keep theirs
    only_one = metrics.semantic(pred, gt, class_map={2: 0})
    expected = metrics.semantic(np.where(pred == 2, 0, pred), gt)
    assert only_one == expected


def test_foreground_keeps_the_ignore_label():
    gt = np.array([[0, 3, 3, 9], [0, 5, 9, 9]], dtype=np.uint8)
    pred = np.array([[0, 1, 0, 1], [1, 1, 1, 1]], dtype=np.uint8)
    scores = metrics.semantic(pred, gt, foreground=True, ignore_label=9, surface=False)
    # counted voxels: gt != 9 -> (0,0) (0,1) (0,2) (1,0) (1,1); pred fg at (0,1) (1,0) (1,1)
    assert list(scores) == [1]
    assert scores[1]["volume_gt"] == 3
    assert scores[1]["volume_pred"] == 3
    assert scores[1]["dice"] == pytest.approx(2 * 2 / 6)


def test_mapped_labels_stay_lazy_on_dask(sample):
    da = pytest.importorskip("dask.array")
    pred = two_class_prediction(sample.labels)
    lazy = da.from_array(pred, chunks=(16, 128))
    view = metrics.MappedLabels(lazy, mapping={2: 1})
    assert view.shape == pred.shape
    assert view.chunks == lazy.chunks
    np.testing.assert_array_equal(view[10:20], np.where(pred == 2, 1, pred)[10:20])
    assert metrics.semantic(lazy, sample.semantic, class_map={2: 1}) == metrics.semantic(
        pred, sample.semantic, class_map={2: 1}
    )


def test_parse_class_map():
    assert metrics.parse_class_map("1:1, 2:1") == {1: 1, 2: 1}
    assert metrics.parse_class_map("3:0") == {3: 0}
    with pytest.raises(ValueError, match=r"PRED:GT.*'1-2'"):
        metrics.parse_class_map("1-2")
    with pytest.raises(ValueError, match="at least one pair"):
        metrics.parse_class_map(",")


def test_evaluation_warns_about_instance_ground_truth(sample):
    pred = np.roll(sample.semantic, 1, axis=0)
    evaluation = metrics.evaluate(pred, sample.labels, mode="semantic")
    assert len(evaluation.result) > 10  # every object id scored as a class...
    assert len(evaluation.warnings) == 1
    assert "looks like instances" in evaluation.warnings[0]
    # ... and foreground vs background gives the meaningful score, without the warning
    fixed = metrics.evaluate(pred, sample.labels, mode="semantic", foreground=True)
    assert fixed.warnings == ()
    assert list(fixed.result) == [1]
    assert fixed.result[1]["dice"] == pytest.approx(metrics.foreground_dice(pred, sample.labels))
    # a class image as ground truth: no warning
    assert metrics.evaluate(pred, sample.semantic, mode="semantic").warnings == ()


def test_evaluation_warns_when_no_class_is_in_both(sample):
    pred = np.where(sample.labels > 0, 2 - sample.labels % 2, 0).astype(np.uint8) + 0
    gt = (sample.labels > 0).astype(np.uint8) * 3
    evaluation = metrics.evaluate(pred, gt, mode="semantic", surface=False)
    assert any("No class is in both" in w for w in evaluation.warnings)
    assert "{1, 2}" in evaluation.warnings[0]
    assert "{3}" in evaluation.warnings[0]
    mapped = metrics.evaluate(pred, gt, class_map={1: 3, 2: 3}, surface=False)
    assert mapped.warnings == ()
    assert mapped.result[3]["dice"] == pytest.approx(1.0)
    # the error images are of the mapped classes: no error left
    with_errors = metrics.evaluate(pred, gt, class_map={1: 3, 2: 3}, error_images=True)
    assert not with_errors.false_positives.any()
    assert not with_errors.false_negatives.any()


def test_class_mapping_needs_semantic_mode(sample):
    with pytest.raises(ValueError, match="expected mode 'semantic'"):
        metrics.evaluate(sample.labels, sample.labels, mode="instance", foreground=True)
