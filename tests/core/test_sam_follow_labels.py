"""Committed SAM objects recorded from tool writes and following the labels (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab.sessions import SamPromptSession
from napari_seglab.sessions.sam_objects import present_ids


def test_present_ids_small_and_large_ids():
    labels = np.zeros((3, 4, 5), np.uint16)
    labels[0, 1, 1], labels[2, 3, 4] = 4, 9
    assert present_ids(labels) == {4, 9}
    wide = labels.astype(np.int64)
    wide[1, 0, 0] = 2**40  # beyond bincount's range: np.unique
    assert present_ids(wide) == {4, 9, 2**40}
    assert present_ids(np.zeros((0, 3), np.int32)) == set()


def test_tool_objects_recorded_and_following_undo_and_redo():
    session = SamPromptSession()
    nucleus = session.add_class("nucleus")
    assert session.record_objects([3, 4], class_id=nucleus, plane=2) == [3, 4]
    assert session.record_objects([4, 5]) == [5]  # 4 keeps its class
    assert session.object_classes == {3: nucleus, 4: nucleus, 5: 0}
    assert session.committed_objects[3] == {"class_id": nucleus, "plane": 2, "prompts": {}}
    with pytest.raises(ValueError, match="Expected a class id"):
        session.record_objects([6], class_id=7)

    labels = np.zeros((4, 6), np.int32)
    labels[0, :2], labels[1, :2], labels[2, :2] = 3, 4, 5
    undone = labels.copy()
    undone[undone == 4] = 0
    undone[3, 5] = 8  # painted by hand: not recorded
    assert session.follow_labels(undone) == ([4], [])
    assert session.object_classes == {3: nucleus, 5: 0}
    assert session.follow_labels(labels) == ([], [4])  # a redo: the record comes back
    assert session.object_classes == {3: nucleus, 4: nucleus, 5: 0}
    assert list(session.class_features()["index"]) == [3, 4, 5]
