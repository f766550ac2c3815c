"""Undoable label writes shared by every widget."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab._widgets import _layers


@pytest.fixture
def labels_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.zeros((3, 20, 20), dtype=np.int32)
    data[1, 2:6, 2:6] = 1
    return viewer, viewer.add_labels(data, name="target")


def test_commit_object_takes_next_id_keeps_existing_and_undoes(labels_layer):
    _, layer = labels_layer
    before = layer.data.copy()
    mask = np.zeros((1, 20, 20), dtype=bool)
    mask[0, 4:10, 4:10] = True  # overlaps object 1 at [4:6, 4:6]
    new_id = _layers.commit_object(layer, mask, offset=(1, 0, 0))
    assert new_id == 2
    assert np.all(layer.data[1, 2:6, 2:6] == 1)  # existing object kept
    assert np.sum(layer.data == 2) == 36 - 4
    layer.undo()
    assert np.array_equal(layer.data, before)


def test_commit_object_overwrite(labels_layer):
    _, layer = labels_layer
    mask = np.zeros((3, 20, 20), dtype=bool)
    mask[1, 4:10, 4:10] = True
    assert _layers.commit_object(layer, mask, overwrite=True) == 2
    assert np.sum(layer.data == 2) == 36
    assert _layers.commit_object(layer, np.zeros((3, 20, 20), bool)) == 0


def test_replace_labels_is_one_undo_step(labels_layer):
    _, layer = labels_layer
    before = layer.data.copy()
    new = before.copy()
    new[0] = 5
    new[2, :3, :3] = 7
    assert _layers.replace_labels(layer, new) == 400 + 9
    assert np.array_equal(layer.data, new)
    layer.undo()
    assert np.array_equal(layer.data, before)
    with pytest.raises(ValueError, match=r"shape \(3, 20, 20\).*\(20, 20\)"):
        _layers.replace_labels(layer, np.zeros((20, 20), dtype=np.int32))


def test_current_plane_follows_the_viewer(labels_layer):
    viewer, layer = labels_layer
    viewer.dims.set_point(0, 2)
    assert _layers.current_plane(viewer, layer) == 2
    flat = viewer.add_labels(np.zeros((5, 5), dtype=np.int32))
    assert _layers.current_plane(viewer, flat) is None
