"""The job contract: cancel forms, the base progress event, run_to_end, how cancel ends."""

from __future__ import annotations

import itertools
import threading

import pytest

from napari_seglab.jobs import CancelCheck, JobCancelled, ProgressEvent, Stopwatch, run_to_end


def _counting_job(n, cancel=None):
    check = CancelCheck(cancel)
    clock = Stopwatch()
    total = 0
    for i in range(n):
        check.raise_if_set("Counting", partial=total)
        total += i
        yield ProgressEvent("counting", i + 1, n, clock.elapsed)
    return total


def test_run_to_end_returns_value_and_forwards_every_event():
    seen = []
    assert run_to_end(_counting_job(5), seen.append) == 10
    assert [e.done for e in seen] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 and e.stage == "counting" for e in seen)
    assert seen[-1].fraction == 1.0
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize("form", ["event", "callable", "check"])
def test_every_cancel_form_ends_the_job_with_job_cancelled(form):
    flag = threading.Event()
    cancel = {"event": flag, "callable": flag.is_set, "check": CancelCheck(flag)}[form]
    job = _counting_job(10, cancel)
    seen = []

    def watch(event):
        seen.append(event)
        if event.done == 3:
            flag.set()

    with pytest.raises(JobCancelled, match="Counting was cancelled") as info:
        run_to_end(job, watch)
    assert len(seen) == 3
    assert info.value.partial == 0 + 1 + 2
    assert isinstance(info.value, RuntimeError)


def test_cancel_check_without_flag_never_cancels_and_rejects_other_types():
    assert not CancelCheck(None)
    assert not CancelCheck(lambda: False)
    assert CancelCheck(lambda: True)
    with pytest.raises(TypeError, match="got int"):
        CancelCheck(3)


def test_fraction_is_none_when_total_unknown():
    assert ProgressEvent("x", 4, 0).fraction is None
    assert ProgressEvent("x", 7, 4).fraction == 1.0
