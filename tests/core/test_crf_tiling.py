"""Tiled processing of large volumes, progress events and cancellation (the job contract)."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_seglab import crf, data
from napari_seglab.jobs import JobCancelled, ProgressEvent, run_to_end


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=2, max_size=3).map(tuple),
    margin_seed=st.integers(0, 2**16),
    max_voxels=st.integers(50, 5000),
)
def test_block_cores_tile_the_volume_exactly(shape, margin_seed, max_voxels):
    margin = tuple(int(m) for m in np.random.default_rng(margin_seed).integers(0, 8, len(shape)))
    smallest = math.prod(min(2 * m + 1, n) for m, n in zip(margin, shape))
    if smallest > max_voxels:
        with pytest.raises(ValueError, match="max_block_voxels"):
            crf.plan_blocks(shape, margin, max_voxels)
        return
    blocks = crf.plan_blocks(shape, margin, max_voxels)
    cover = np.zeros(shape, dtype=np.int32)
    for block in blocks:
        cover[block.core] += 1
        read_size = math.prod(s.stop - s.start for s in block.read)
        assert read_size <= max_voxels
        for core, read, inner, m, n in zip(
            block.core, block.read, block.core_in_read, margin, shape
        ):
            assert read.start == max(core.start - m, 0)
            assert read.stop == min(core.stop + m, n)
            assert inner.start == core.start - read.start
            assert inner.stop - inner.start == core.stop - core.start
    assert (cover == 1).all()


@pytest.fixture(scope="module")
def stack():
    sample = data.nuclei_3d(shape=(16, 96, 96), n_objects=8, seed=2)
    probs = data.degrade_probabilities(sample.labels, spacing=sample.spacing, shift=(0, 2, 2))
    return sample, probs


def test_tiled_result_matches_whole_volume(stack):
    sample, probs = stack
    whole = crf.refine(sample.image, probs, spacing=sample.spacing)
    events = []
    steps = crf.refine_steps(sample.image, probs, spacing=sample.spacing, max_block_voxels=40_000)
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            tiled = stop.value
            break
    n_blocks = events[-1].total // 5
    assert n_blocks > 4  # really tiled
    assert "block" in events[0].message
    assert [e.done for e in events] == list(range(1, events[-1].total + 1))
    assert (tiled == whole).mean() > 0.995


def test_progress_counts_iterations_and_objects():
    sample = data.nuclei_2d(shape=(96, 96), n_objects=6, seed=1)
    n_objects = len(np.unique(sample.labels)) - 1
    events = list(crf.refine_labels_steps(sample.image, sample.labels, iterations=3))
    assert events[-1].done == events[-1].total == 3 * n_objects
    assert all(a.done <= b.done for a, b in itertools.pairwise(events))
    assert "object" in events[0].message


@pytest.mark.parametrize("which", ["refine", "refine_labels"])
def test_cancel_stops_early_and_raises_job_cancelled(stack, which):
    sample, probs = stack
    seen = []

    def cancel() -> bool:
        return len(seen) >= 3

    labels = sample.labels.copy()
    if which == "refine":
        steps = crf.refine_steps(
            sample.image, probs, spacing=sample.spacing, max_block_voxels=40_000, cancel=cancel
        )
    else:
        steps = crf.refine_labels_steps(
            sample.image, labels, spacing=sample.spacing, cancel=cancel
        )
    with pytest.raises(JobCancelled, match="CRF refinement was cancelled") as cancelled:
        run_to_end(steps, seen.append)
    assert cancelled.value.partial is None
    assert len(seen) == 3
    assert seen[-1].done < seen[-1].total
    assert np.array_equal(labels, sample.labels)  # the input is never written


def test_events_follow_the_job_contract_and_an_event_cancels_before_any_work():
    sample = data.nuclei_2d(shape=(64, 64), n_objects=4, seed=3)
    probs = data.degrade_probabilities(sample.labels)
    events = list(crf.refine_steps(sample.image, probs, iterations=2))
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert {e.stage for e in events} == {"refining"}
    assert events[-1].fraction == 1.0
    assert all(a.elapsed <= b.elapsed for a, b in itertools.pairwise(events))
    flag = threading.Event()
    flag.set()
    with pytest.raises(JobCancelled):
        next(crf.refine_labels_steps(sample.image, sample.labels, cancel=flag))
