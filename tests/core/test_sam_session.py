"""The Qt-free SAM prompting session, driven as a script would (tiny SAM, real classes)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("segment_anything")

from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.sam import EmbeddingCache
from napari_seglab.sessions import SamPromptSession


@pytest.fixture(scope="module")
def model(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    data = rng.normal(50, 5, (5, 48, 64)).astype(np.float32)
    data[:, 10:30, 20:40] += 100
    return data


def _session(model, data, signals=None):
    session = SamPromptSession(EmbeddingCache(max_items=8))
    if signals is not None:
        for name in ("prompts_changed", "prediction_changed", "committed", "status"):
            getattr(session, name).connect(lambda *a, name=name: signals.append((name, a)))
    session.set_model(model)
    session.set_image(data)
    return session


def test_point_predict_commit_round_trip_on_a_stack(model, stack):
    signals = []
    session = _session(model, stack, signals)
    assert session.labels_shape == (5, 48, 64)
    session.add_point((2, 20, 30))
    session.add_point((2, 5, 5), positive=False)
    prompts = session.prompts(2)
    assert prompts.positive.tolist() == [True, False]
    assert prompts.points.tolist() == [[20, 30], [5, 5]]
    assert session.prompts(1).empty
    prediction = session.predict(2)
    assert prediction is not None
    assert len(prediction.scores) == 1  # two points: one proposal
    assert session.prediction_plane == 2
    mask = session.mask()
    assert mask.shape == (48, 64)
    labels = np.zeros(session.labels_shape, np.int32)
    labels[0, 0, 0] = 4
    assert mask.any()  # seed 3 proposes a non-empty mask here
    new_id = session.commit(labels)
    assert new_id == 5
    assert (labels[2] == 5).sum() == mask.sum()
    assert ("committed", (5,)) in signals
    assert not labels[[1, 3, 4]].any()
    assert session.prediction is None
    assert session.prompts(2).empty
    assert signals[-1][0] == "status"


def test_single_point_offers_three_proposals_and_next_cycles(model, stack):
    session = _session(model, stack[0])
    session.add_point((20, 30))
    session.predict()
    assert len(session.prediction.scores) == 3
    first = session.proposal
    assert session.next_proposal() == (first + 1) % 3


def test_stale_result_is_dropped(model, stack):
    session = _session(model, stack)
    session.add_point((1, 20, 30))
    result = run_to_end(session.prediction_job(1))
    session.add_point((1, 22, 30))  # the user clicked again meanwhile
    assert not session.accept(result)
    assert session.prediction is None


def test_commit_writer_receives_the_write_and_handle_is_remembered(model, stack):
    session = _session(model, stack[0])
    session.add_point((20, 30))
    session.predict()
    labels = np.zeros((48, 64), np.uint8)
    calls = []
    new_id = session.commit(labels, writer=lambda ix, v: calls.append((ix, v)), handle="layer")
    assert new_id == 1
    assert calls[0][1] == new_id
    assert not labels.any()  # the writer wrote, not the session
    assert session.last_object == ("layer", new_id)


def test_bad_input_is_refused_with_what_was_expected(model, stack):
    session = _session(model, stack)
    with pytest.raises(ValueError, match="3 coordinates"):
        session.add_point((20, 30))
    with pytest.raises(ValueError, match=r"plane in 0\.\.4"):
        session.add_point((9, 20, 30))
    with pytest.raises(ValueError, match="finite"):
        session.set_prompts(1, [[np.nan, 3]])
    session.add_point((1, 20, 30))
    session.predict(1)
    with pytest.raises(ValueError, match=r"image's shape \(5, 48, 64\)"):
        session.commit(np.zeros((48, 64), np.int32))
    empty = SamPromptSession(EmbeddingCache(max_items=2))
    with pytest.raises(RuntimeError, match="No image"):
        empty.add_point((1, 2))


def test_neighbour_order_starts_at_the_visible_plane(model, stack):
    session = _session(model, stack)
    session.neighbours = 2
    assert session.neighbour_order(0) == [0, 1, 2]
    assert session.neighbour_order(3) == [3, 4, 2, 1]


def test_propagation_grows_the_committed_object_and_cancels_cleanly(model, stack):
    session = _session(model, stack)
    session.add_point((2, 20, 30))
    session.add_point((2, 25, 35))
    session.predict(2)
    labels = np.zeros(session.labels_shape, np.int32)
    new_id = session.commit(labels)
    assert new_id == 1
    before = labels.copy()
    flag = threading.Event()
    flag.set()
    with pytest.raises(JobCancelled):
        run_to_end(session.propagation_job(2, cancel=flag))
    np.testing.assert_array_equal(labels, before)
    object_id = session.propagate(labels, plane=2)
    assert object_id == new_id
    assert set(np.unique(labels)) <= {0, new_id}
    assert (labels[2] == new_id).sum() >= (before[2] == new_id).sum()
