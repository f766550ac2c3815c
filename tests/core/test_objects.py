"""Where new and grown objects go in a label array."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab.objects import grow_object, new_object, next_label


def test_new_object_takes_max_plus_one_and_keeps_existing_labels():
    labels = np.zeros((5, 5), np.uint16)
    labels[0, :] = 7
    mask = np.zeros((5, 5), bool)
    mask[:2, :2] = True
    write = new_object(labels, mask)
    assert write.value == 8
    assert write.size == 2  # row 0 belongs to object 7
    write.apply(labels)
    assert labels[1, :2].tolist() == [8, 8]
    assert labels[0, :2].tolist() == [7, 7]


def test_new_object_overwrite_and_offset_on_a_stack():
    labels = np.zeros((3, 4, 4), np.int32)
    labels[1, 0, 0] = 2
    plane = np.ones((1, 4, 4), bool)
    write = new_object(labels, plane, offset=(1, 0, 0), overwrite=True)
    write.apply(labels)
    assert (labels[1] == 3).all()
    assert not labels[[0, 2]].any()


def test_nothing_new_gives_value_zero():
    labels = np.ones((3, 3), np.int32)
    write = new_object(labels, np.ones((3, 3), bool))
    assert write.value == 0
    assert write.size == 0


def test_id_past_the_dtype_is_refused():
    labels = np.full((2, 2), 255, np.uint8)
    labels[0, 0] = 0
    with pytest.raises(ValueError, match="uint8 labels"):
        next_label(labels)
    with pytest.raises(ValueError, match="wider integer type"):
        new_object(labels, np.ones((2, 2), bool))


def test_mask_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"2 axes.*\(4, 4\)"):
        new_object(np.zeros((4, 4), int), np.ones((1, 4, 4), bool))
    with pytest.raises(ValueError, match="does not fit"):
        new_object(np.zeros((2, 4, 4), int), np.ones((1, 4, 4), bool), offset=(2, 0, 0))


def test_grow_object_fills_only_free_pixels_unless_overwrite():
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = 1
    labels[3, 3] = 2
    volume = np.ones((4, 4), bool)
    write = grow_object(labels, volume, 1)
    assert write.size == 14
    grabbed = grow_object(labels, volume, 1, overwrite=True)
    assert grabbed.size == 15
