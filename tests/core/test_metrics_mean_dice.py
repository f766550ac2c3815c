"""metrics.mean_dice: the one Dice that training, the CRF demo and the tests share."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab.metrics import foreground_dice as crf_dice
from napari_seglab.metrics import mean_dice


def test_mean_dice_averages_classes_present_and_skips_absent_ones():
    gt = np.array([[0, 1, 1, 2, 2, 0]])
    pred = np.array([[0, 1, 0, 2, 2, 2]])
    # class 1: 2*1/(1+2); class 2: 2*2/(3+2); class 3 absent from both is skipped.
    expected = np.mean([2 / 3, 4 / 5])
    assert mean_dice(pred, gt, classes=(1, 2, 3)) == pytest.approx(expected)
    assert mean_dice(pred, gt) == pytest.approx(expected)


def test_mean_dice_leaves_out_ignored_pixels():
    gt = np.array([[0, 1, 2, 2]])  # 2 marks unannotated pixels
    pred = np.array([[0, 1, 1, 0]])  # the wrong 1 lies on an unannotated pixel
    assert mean_dice(pred, gt, classes=(1,), ignore_label=2) == pytest.approx(1.0)
    assert mean_dice(pred, gt, classes=(1,)) == pytest.approx(2 / 3)


def test_mean_dice_is_nan_when_no_class_is_present():
    empty = np.zeros((4, 4), np.uint8)
    assert np.isnan(mean_dice(empty, empty, classes=(1,)))


def test_crf_demo_dice_uses_it_with_empty_masks_scoring_one():
    a = np.zeros((3, 5), np.uint8)
    b = a.copy()
    assert crf_dice(a, b) == 1.0
    a[1, 1:3] = 4
    b[1, 2:4] = 7
    assert crf_dice(a, b) == pytest.approx(0.5)
