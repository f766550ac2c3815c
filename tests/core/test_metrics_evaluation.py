"""The evaluation job (what the widget runs): progress events, the same numbers as the API."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_seglab import data, metrics
from napari_seglab.jobs import JobCancelled, ProgressEvent, run_to_end


def test_steps_yield_progress_and_return_the_api_results():
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 1, axis=1)
    steps = metrics.evaluation_steps(
        pred, gt, mode="instance", iou_threshold=0.6, error_images=True
    )
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            evaluation = stop.value
            break
    assert [e.done for e in events] == list(range(len(events)))
    assert all(e.total == len(events) - 1 for e in events)
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert [e.stage for e in events] == ["scoring", "slices", "errors", "done"]
    expected = metrics.instances(pred, gt, iou_threshold=0.6)
    for key in metrics.INSTANCE_KEYS:
        np.testing.assert_equal(evaluation.result[key], expected[key])
    np.testing.assert_allclose(
        evaluation.per_slice[1], metrics.per_slice(pred, gt, foreground=True)[1], equal_nan=True
    )
    fp, fn = metrics.instance_errors(pred, gt, expected)
    assert np.array_equal(evaluation.false_positives, fp)
    assert np.array_equal(evaluation.false_negatives, fn)
    assert evaluation.object_ious().size == expected["n_gt"]
    np.testing.assert_equal(evaluation.table(), metrics.results_table(expected))  # NaN == NaN


def test_semantic_2d_has_no_slices_and_semantic_error_images():
    gt = (data.nuclei_2d(seed=2).labels % 4).astype(np.uint8)
    pred = np.roll(gt, 2, axis=0)
    evaluation = metrics.evaluate(pred, gt, mode="semantic", spacing=(0.5, 0.5), error_images=True)
    assert evaluation.per_slice is None
    assert evaluation.object_ious().size == 0
    expected = metrics.semantic(pred, gt, spacing=(0.5, 0.5))
    assert evaluation.result.keys() == expected.keys()
    for c in expected:
        np.testing.assert_equal(evaluation.result[c], expected[c])
    fp, fn = metrics.semantic_errors(pred, gt, classes=list(expected))
    assert np.array_equal(evaluation.false_positives, fp)
    assert np.array_equal(evaluation.false_negatives, fn)


def test_bad_mode():
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"mode: expected one of .*'panoptic'.*got 'bogus'"):
        metrics.evaluate(labels, labels, mode="bogus")


def test_cancel_stops_between_classes_and_steps():
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 1, axis=2)
    asked = []

    def cancel_after(n):
        def cancel():
            asked.append(1)
            return len(asked) > n

        return cancel

    # Semantic surface metrics ask before every class: stop after the third class.
    with pytest.raises(JobCancelled, match="Evaluation was cancelled"):
        metrics.semantic(pred, gt, spacing=sample.spacing, cancel=cancel_after(3))
    assert len(asked) == 4
    asked.clear()
    with pytest.raises(JobCancelled, match="Evaluation was cancelled"):
        metrics.evaluate(pred, gt, mode="instance", cancel=cancel_after(0))
    asked.clear()
    steps = metrics.evaluation_steps(pred, gt, mode="semantic", cancel=cancel_after(2))
    events = []
    with pytest.raises(JobCancelled) as cancelled:
        run_to_end(steps, events.append)
    assert cancelled.value.partial is None
    assert events
    assert events[-1].message != "done"
    # A threading.Event works the same way; set before the start, no event at all.
    flag = threading.Event()
    flag.set()
    with pytest.raises(JobCancelled):
        next(metrics.evaluation_steps(pred, gt, cancel=flag))
    # Never asked to stop: the full result, equal to the plain call.
    full = metrics.evaluate(pred, gt, mode="semantic", cancel=lambda: False)
    assert full.result == metrics.semantic(pred, gt)


def test_cli_options_skip_surfaces_and_slices():
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 1, axis=2)
    events = []
    evaluation = run_to_end(
        metrics.evaluation_steps(pred, gt, surface=False, slices=False), events.append
    )
    assert [e.stage for e in events] == ["scoring", "done"]
    assert evaluation.per_slice is None
    np.testing.assert_equal(evaluation.result, metrics.semantic(pred, gt, surface=False))
