"""Panoptic prediction from a semantic and an instance image (models.panoptic)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab import metrics
from napari_seglab.models import panoptic

THINGS = (1, 2)  # 1 cell, 2 nucleus; 3 tissue (stuff)


def scene():
    semantic = np.zeros((12, 12), np.uint8)
    semantic[:, 8:] = 3
    semantic[1:5, 1:5] = 1  # a cell
    semantic[1:5, 4] = 2  # a quarter of it says nucleus
    semantic[7:10, 1:4] = 2  # a nucleus
    semantic[10:12, 5:7] = 1  # thing voxels no instance covers
    instances = np.zeros((12, 12), np.uint16)
    instances[1:5, 1:5] = 40
    instances[7:10, 1:5] = 7  # one column beyond the semantic nucleus: on background
    instances[1:4, 8:11] = 9  # an object where the semantic image says tissue
    instances[6, 6] = 12  # a one-voxel object on background
    instances[5, 6] = 13
    semantic[5, 6] = 1
    return semantic, instances


def test_combine_rules():
    semantic, instances = scene()
    copies = semantic.copy(), instances.copy()
    cls, inst = panoptic.combine(semantic, instances, things=THINGS, min_size=2)
    assert np.array_equal(semantic, copies[0])
    assert np.array_equal(instances, copies[1])
    assert cls.dtype == np.int32
    assert inst.dtype == instances.dtype
    # majority among thing classes: object 40 is a cell, all of it
    assert (cls[1:5, 1:5] == 1).all()
    assert (inst[1:5, 1:5] == 40).all()
    # objects win over background inside them
    assert (cls[7:10, 1:5] == 2).all()
    assert (inst[7:10, 1:5] == 7).all()
    # an object the semantic image calls tissue is dropped: tissue, id 0
    assert (cls[1:4, 8:11] == 3).all()
    assert (inst[1:4, 8:11] == 0).all()
    # a one-voxel object is below min_size: its thing voxel becomes background
    assert cls[5, 6] == 0
    assert inst[5, 6] == 0
    # thing voxels without an object: leftover class (0)
    assert (cls[10:12, 5:7] == 0).all()
    assert (inst[10:12, 5:7] == 0).all()
    assert set(np.unique(inst).tolist()) == {0, 7, 40}
    kept, _ = panoptic.combine(semantic, instances, things=THINGS, leftover_class=3)
    assert (kept[10:12, 5:7] == 3).all()
    assert kept[5, 6] == 1  # min_size 0 keeps the one-voxel object
    tiny_stuff = panoptic.combine(semantic, instances, things=THINGS, min_stuff_size=1000)[0]
    assert not (tiny_stuff == 3).any()


def test_combine_3d_matches_ground_truth_and_round_trips_through_one_layer():
    rng = np.random.default_rng(0)
    gt_class = np.full((4, 16, 16), 3, np.uint8)
    gt_instance = np.zeros((4, 16, 16), np.int32)
    for object_id, (z, y, x) in enumerate(rng.integers(0, 12, size=(5, 3)), start=1):
        z = min(z, 2)
        gt_instance[z : z + 2, y : y + 4, x : x + 4] = object_id
        gt_class[z : z + 2, y : y + 4, x : x + 4] = 1 + object_id % 2
    # a noisy semantic map that still has the majority right inside each object
    semantic = gt_class.copy()
    noise = (rng.random(semantic.shape) < 0.1) & (gt_instance > 0)
    semantic[noise] = 3
    cls, inst = panoptic.combine(semantic, gt_instance, things=THINGS)
    assert np.array_equal(cls, gt_class)
    assert np.array_equal(inst, gt_instance)
    score = metrics.panoptic(cls, inst, gt_class, gt_instance, things=THINGS)
    assert score["pq"] == 1.0
    labels, features = panoptic.to_labels(cls, inst, things=THINGS)
    classes = metrics.classes_from_features(features)
    assert classes[int(labels.max())] == 3  # the tissue is one new object
    back_class, back_instance = metrics.labels_to_panoptic(labels, classes)
    assert np.array_equal(back_class, cls)
    again = metrics.panoptic(back_class, back_instance, gt_class, gt_instance, things=THINGS)
    assert again["pq"] == 1.0


def test_combine_errors():
    semantic, instances = scene()
    with pytest.raises(ValueError, match="same shape"):
        panoptic.combine(semantic, instances[:3], things=THINGS)
    with pytest.raises(ValueError, match="at least one thing class"):
        panoptic.combine(semantic, instances, things=())
    with pytest.raises(ValueError, match="leftover_class: expected 0 or a stuff class"):
        panoptic.combine(semantic, instances, things=THINGS, leftover_class=1)
    with pytest.raises(ValueError, match="expected a 'class' column"):
        metrics.classes_from_features({"index": [1], "label": [2]})
