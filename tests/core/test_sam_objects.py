"""Several pending objects, classes, and committing them together (tiny SAM, real classes)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")

from napari_seglab.jobs import run_to_end
from napari_seglab.sam import EmbeddingCache
from napari_seglab.sessions import SamPromptSession, class_image


@pytest.fixture(scope="module")
def model(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    data = rng.normal(50, 5, (48, 64)).astype(np.float32)
    data[10:30, 20:40] += 100
    return data


def _session(model, data):
    session = SamPromptSession(EmbeddingCache(max_items=8))
    session.set_model(model)
    session.set_image(data)
    return session


def _prompt(session, point, positive=True):
    session.add_point(point, positive)
    session.predict(point[0] if session.is_stack else None)
    return session.mask().copy()


def test_each_object_keeps_its_own_prompts_and_proposals(model, image):
    session = _session(model, image)
    first = session.active_object
    mask_a = _prompt(session, (20, 30))
    assert session.add_object() is not first  # a fresh object once the first has prompts
    assert session.prediction is None
    assert not session.has_prompts
    assert session.add_object() is session.active_object  # an empty active one is reused
    mask_b = _prompt(session, (40, 10))
    second = session.active_object
    assert [o.uid for o in session.objects] == [first.uid, second.uid]
    session.select_object(first.uid)
    assert session.prompts().points.tolist() == [[20, 30]]
    np.testing.assert_array_equal(session.mask(), mask_a)
    session.clear_prompts()  # Esc clears the active object only
    assert first.prediction is None
    np.testing.assert_array_equal(second.mask(), mask_b)
    session.delete_object(first.uid)
    assert session.objects == [second]
    assert session.active_object is second
    session.delete_object()
    assert len(session.objects) == 1
    assert session.active_object.prediction is None
    with pytest.raises(ValueError, match="pending object id"):
        session.select_object(99)


def test_a_result_is_stale_only_when_its_own_object_changed(model, image):
    session = _session(model, image)
    session.add_point((20, 30))
    first = session.active_object
    result = run_to_end(session.prediction_job())
    session.add_object()
    session.add_point((40, 10))  # prompting another object does not make it stale
    assert session.accept(result)
    assert first.prediction is result.prediction
    assert session.prediction is None
    session.select_object(first.uid)
    late = run_to_end(session.prediction_job())
    session.add_point((22, 30))
    assert not session.accept(late)
    gone = run_to_end(session.prediction_job())
    session.delete_object(first.uid)
    assert not session.accept(gone)


def test_commit_all_writes_every_object_in_one_write_with_classes(model, image):
    session = _session(model, image)
    nucleus, cell = session.add_class("nucleus"), session.add_class("cell")
    assert (nucleus, cell) == (1, 2)
    session.set_object_class(nucleus)
    mask_a = _prompt(session, (20, 30))
    session.add_object(class_id=cell)
    mask_b = _prompt(session, (40, 10))
    session.add_object(class_id=0)
    session.add_point((5, 55))  # prompted, not predicted yet: it stays pending
    third = session.active_object
    labels = np.zeros((48, 64), np.int32)
    labels[0, 0] = 7
    calls, seen = [], []
    session.committed_all.connect(seen.append)
    ids = session.commit_all(labels, writer=lambda ix, v: calls.append((ix, v)))
    assert ids == [8, 9]
    assert len(calls) == 1  # one write: one undo step in a layer
    indices, values = calls[0]
    written = labels.copy()
    written[indices] = values
    assert not labels[1:].any()  # the writer wrote, not the session
    free = labels == 0
    np.testing.assert_array_equal(written == 8, mask_a & free)
    np.testing.assert_array_equal(written == 9, mask_b & free & ~mask_a)  # first keeps its pixels
    assert len(set(zip(*indices))) == len(values)  # each pixel written once
    assert seen == [[8, 9]]
    assert session.object_classes == {8: nucleus, 9: cell}
    features = session.class_features()
    assert features["index"].tolist() == [8, 9]
    assert features["class_name"].tolist() == ["nucleus", "cell"]
    assert session.objects == [third]  # without a proposal: still pending
    semantic = class_image(written, session.object_classes)
    np.testing.assert_array_equal(semantic == nucleus, written == 8)
    np.testing.assert_array_equal(semantic == cell, written == 9)
    assert semantic[0, 0] == 0  # an object without class


def test_commit_is_the_active_object_only_and_overwrite_takes_pixels(model, image):
    session = _session(model, image)
    _prompt(session, (20, 30))
    keep = session.active_object
    session.add_object()
    mask_b = _prompt(session, (40, 10))
    labels = np.zeros((48, 64), np.uint8)
    labels[mask_b] = 3
    assert session.commit(labels) == 0  # all on an existing object: nothing new, kept
    assert session.prediction is not None
    assert session.commit(labels, overwrite=True) == 4
    np.testing.assert_array_equal(labels == 4, mask_b)
    assert session.objects == [keep]
    assert session.active_object is keep
    assert session.object_classes == {4: 0}


def test_commit_all_on_a_stack_writes_each_plane_and_refuses_full_dtype(model, image):
    stack = np.stack([image, image[::-1]])
    session = _session(model, stack)
    mask_a = _prompt(session, (0, 20, 30))
    session.add_object()
    mask_b = _prompt(session, (1, 20, 30))
    labels = np.zeros((2, 48, 64), np.uint8)
    labels[0, 0, 0] = 254
    with pytest.raises(ValueError, match="wider integer type"):
        session.commit_all(labels)
    assert len(session.objects) == 2
    assert labels.max() == 254
    labels[0, 0, 0] = 3
    free = labels[0] == 0
    assert session.commit_all(labels) == [4, 5]
    np.testing.assert_array_equal(labels[0] == 4, mask_a & free)
    np.testing.assert_array_equal(labels[1] == 5, mask_b)


def test_class_table_refuses_unknown_and_duplicate_ids(model, image):
    session = _session(model, image)
    assert session.add_class("a", 5) == 5
    assert session.add_class("b") == 6
    with pytest.raises(ValueError, match="new class id"):
        session.add_class("c", 5)
    with pytest.raises(ValueError, match="empty"):
        session.add_class("  ")
    with pytest.raises(ValueError, match=r"class id in \[5, 6\] or 0"):
        session.set_object_class(3)
    session.rename_class(5, "apple")
    assert session.classes == {5: "apple", 6: "b"}
    session.set_object_class(6)
    session.remove_class(6)
    assert session.classes == {5: "apple"}
    assert session.active_object.class_id == 0
    session.set_object_class(5)
    _prompt(session, (20, 30))
    session.commit(np.zeros((48, 64), np.int32))
    with pytest.raises(ValueError, match=r"objects \[1\] are of class 5"):
        session.remove_class(5)
