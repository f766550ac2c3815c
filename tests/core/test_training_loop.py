"""The shared training loop: limits, patience, best-epoch keeping, cancel, one event shape."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.training_loop import EpochEvent, LoopSettings, training_loop


class _LineFit:
    """Fit y = 2x with one weight; validation score follows a given script per epoch."""

    def __init__(self, scores=None, batches_per_epoch=4):
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.scores = list(scores) if scores is not None else None
        self.batches_per_epoch = batches_per_epoch
        self.validations = 0
        self.modes = []

    def parameters(self):
        return [self.weight]

    def batches(self, epoch):
        for _ in range(self.batches_per_epoch):
            x = torch.rand(8)
            yield x, 2 * x

    def loss(self, batch):
        x, y = batch
        return ((self.weight * x - y) ** 2).mean(), len(x)

    def validate(self):
        self.validations += 1
        if self.scores is None:
            return {}
        return {"mean": self.scores[min(self.validations - 1, len(self.scores) - 1)]}

    def train_mode(self, training):
        self.modes.append(training)

    def snapshot(self):
        return self.weight.detach().clone()

    def restore(self, state):
        with torch.no_grad():
            self.weight.copy_(state)


def _run(task, **settings):
    events = []
    result = run_to_end(
        training_loop(task, LoopSettings(**settings), device=torch.device("cpu")), events.append
    )
    return result, events


def test_loss_falls_and_events_have_one_shape():
    task = _LineFit()
    result, events = _run(task, learning_rate=0.1, max_epochs=5)
    assert [e.epoch for e in events] == [1, 2, 3, 4, 5]
    assert all(isinstance(e, EpochEvent) and e.stage == "epoch" for e in events)
    assert [e.done for e in events] == [1, 2, 3, 4, 5]
    assert events[0].total == 5
    assert events[-1].loss < events[0].loss
    assert events[-1].final
    assert not any(e.final for e in events[:-1])
    assert events[-1].samples == 5 * 4 * 8
    assert events[-1].step == 20
    assert result.stopped_by == "epochs"
    assert result.epochs == 5
    assert len(result.history) == 5
    assert result.history[0]["epoch"] == 1
    assert task.modes[-1] is False  # left in evaluation mode


def test_best_epoch_weights_are_restored_and_patience_stops():
    task = _LineFit(scores=[0.1, 0.5, 0.4, 0.3, 0.2, 0.1])
    weights = {}
    original = task.snapshot

    def snapshot():
        state = original()
        weights[task.validations] = state
        return state

    task.snapshot = snapshot
    result, events = _run(task, learning_rate=0.1, max_epochs=20, patience=2)
    assert result.stopped_by == "patience"
    assert result.stopped_early
    assert result.best_epoch == 2
    assert result.best_score == pytest.approx(0.5)
    assert [e.epoch for e in events] == [1, 2, 3, 4]
    assert torch.equal(task.weight.detach(), weights[2])
    assert events[-1].best_epoch == 2


def test_validate_first_reports_epoch_zero_and_min_improvement():
    task = _LineFit(scores=[0.5, 0.50001, 0.6])
    _result, events = _run(
        task, learning_rate=0.1, max_epochs=2, validate_first=True, min_improvement=1e-3
    )
    assert [e.epoch for e in events] == [0, 1, 2]
    assert events[0].loss is None
    # 0.50001 does not beat 0.5 by more than 1e-3; 0.6 does.
    assert events[1].best_epoch == 0
    assert events[2].best_epoch == 2


def test_step_and_time_limits():
    result, events = _run(_LineFit(), learning_rate=0.1, max_steps=6)
    assert result.steps == 6
    assert result.stopped_by == "steps"
    assert len(events) == 2
    result, events = _run(_LineFit(batches_per_epoch=1000), time_budget_s=1e-6)
    assert result.stopped_by == "time"
    assert result.steps == 1
    assert events[-1].fraction == 1.0
    assert events[-1].budget_s == 1e-6


def test_cancel_raises_with_best_result_so_far():
    flag = threading.Event()
    task = _LineFit(scores=[0.3, 0.9, 0.1])
    job = training_loop(task, LoopSettings(max_epochs=10), device=torch.device("cpu"), cancel=flag)

    def watch(event):
        if event.epoch == 3:
            flag.set()

    with pytest.raises(JobCancelled) as info:
        run_to_end(job, watch)
    partial = info.value.partial
    assert partial.cancelled
    assert partial.best_epoch == 2
    assert partial.epochs == 3


def test_cancel_before_any_epoch_has_no_partial():
    job = training_loop(_LineFit(), LoopSettings(max_epochs=3), device="cpu", cancel=lambda: True)
    with pytest.raises(JobCancelled) as info:
        run_to_end(job)
    assert info.value.partial is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "at least one of"),
        ({"max_epochs": 0}, "max_epochs >= 1"),
        ({"max_epochs": 1, "learning_rate": 0}, "positive learning rate"),
        ({"time_budget_s": float("nan")}, "positive time budget"),
    ],
)
def test_settings_errors_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        run_to_end(training_loop(_LineFit(), LoopSettings(**settings), device="cpu"))


def test_nan_validation_counts_as_no_score():
    task = _LineFit(scores=[float("nan"), 0.2])
    result, events = _run(task, max_epochs=2)
    assert events[0].score is None
    assert events[1].score == pytest.approx(0.2)
    assert result.best_epoch == 2
    assert np.isfinite(events[-1].loss)
