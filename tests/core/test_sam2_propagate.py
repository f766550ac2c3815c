"""SAM 2 memory propagation: parity with the official video predictor, corrections, cancel.

A random-weight SAM 2.1 Hiera tiny built from the package's real config, with
a 64 px encoder input (the memory-attention RoPE sizes follow it), tracks
objects through small synthetic stacks. Random weights make no meaningful
segmentation, so the tests check the mechanics against the official code and
the rules of this plugin (seed kept, affected range, nothing kept on cancel).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest

pytest.importorskip("sam2")

from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.sam import EmbeddingCache, propagate_steps
from napari_seglab.sam.image import SamInput
from napari_seglab.sam.sam2_model import preprocess_plane
from napari_seglab.sam.sam2_tracker import Sam2Tracker, affected_range


@pytest.fixture(scope="module")
def model(one_torch_thread, tiny_sam2_models):
    return tiny_sam2_models(image_size=64)


@pytest.fixture(scope="module")
def cache():
    """One cache for the module: every test uses planes of :func:`_stack`, each encoded once."""
    return EmbeddingCache(max_items=16)


def _stack(n=8, shape=(48, 56)):
    """``(Z, Y, X)`` uint8: a bright ellipse drifting right over a noisy background.

    The first ``n`` planes of one fixed stack (so that tests share embeddings).
    """
    rng = np.random.default_rng(0)
    volume = (rng.random((8, *shape)) * 60).astype(np.uint8)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for z in range(8):
        inside = ((rows - 24) / 10) ** 2 + ((cols - 20 - 2 * z) / 12) ** 2 <= 1
        volume[z][inside] += 150
    return volume[:n]


class _Segmenter:
    """What propagate() needs of a segmenter for a SAM 2 model: ``model`` and ``cache``."""

    def __init__(self, model, cache):
        self.model, self.cache = model, cache


def _official(net, planes_rgb, model, prompts):
    """The official SAM2VideoPredictor fed the same preprocessed planes.

    ``init_state`` only reads a JPEG folder or an MP4 (a lossy round trip), so
    the state it would build is built here with the same keys and the planes
    preprocessed exactly as the plugin does (``preprocess_plane``); the
    predictor then computes ``forward_image`` itself on a cache miss, as it
    does for frames it loaded.
    """
    import torch

    images = torch.cat([preprocess_plane(model, rgb) for rgb in planes_rgb])
    height, width = planes_rgb[0].shape[:2]
    state = {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": True,
        "video_height": height,
        "video_width": width,
        "device": model.device,
        "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    for plane, obj, points, labels, box in prompts:
        xy = None if points is None else np.asarray(points, np.float32)[:, ::-1].copy()
        xyxy = None if box is None else np.asarray(box, np.float32)[[1, 0, 3, 2]]
        net.add_new_points_or_box(
            state, plane, obj, points=xy, labels=labels, box=xyxy, clear_old_points=True
        )
    out = {}
    for reverse in (False, True):
        for plane, ids, masks in net.propagate_in_video(state, reverse=reverse):
            for k, obj in enumerate(ids):
                out.setdefault(obj, {})[plane] = (masks[k, 0] > 0).numpy()
    return out


def _iou(a, b):
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def test_parity_with_official_video_predictor(model, cache):
    volume = _stack(6)
    source = SamInput(volume)
    prompts = [
        (2, 1, [[24, 24], [5, 5]], [1, 0], None),  # object 1: two points on plane 2
        (2, 7, None, None, [14, 30, 34, 50]),  # object 7: a box on plane 2
        (4, 1, [[24, 28]], [1], None),  # object 1: a second prompted plane
    ]
    before = cache.misses
    tracker = Sam2Tracker(model, source, cache=cache)
    for plane, obj, points, labels, box in prompts:
        tracker.set_points(plane, obj, points, labels, box=box)
    ours = tracker.propagate()
    assert cache.misses - before <= volume.shape[0]  # at most one encode per plane
    reference = _official(model.net, [source.plane(z) for z in range(len(volume))], model, prompts)
    assert sorted(ours) == sorted(reference) == [1, 7]
    for obj in (1, 7):
        assert sorted(reference[obj]) == list(range(len(volume)))
        for z in range(len(volume)):
            assert _iou(ours[obj][z], reference[obj][z]) >= 0.99, (obj, z)


def test_propagate_with_sam2_visits_both_directions_and_keeps_the_seed(model, cache):
    volume = _stack(7)
    seed = np.zeros(volume.shape[1:], bool)
    seed[16:32, 20:40] = True
    events = []
    result = run_to_end(
        propagate_steps(volume, 3, seed, segmenter=_Segmenter(model, cache)),
        events.append,
    )
    assert result.shape == volume.shape
    assert result.dtype == bool
    np.testing.assert_array_equal(result[3], seed)
    visited = [e.plane for e in events]
    assert sorted(set(visited)) == list(range(7))
    forward = [e.plane for e in events if e.direction == 1]
    backward = [e.plane for e in events if e.direction == -1]
    assert forward == [3, 4, 5, 6]
    assert backward == [3, 2, 1, 0]
    assert events[-1].done == events[-1].total == len(events)
    seen = []
    near = propagate_steps(
        volume, 3, seed, segmenter=_Segmenter(model, cache), max_planes=1, min_area=10**6
    )
    limited = run_to_end(near, lambda event: seen.append(event.plane))
    assert sorted(set(seen)) == [2, 3, 4]
    np.testing.assert_array_equal(limited[3], seed)  # the seed plane stays whatever its area
    assert not np.delete(limited, 3, axis=0).any()  # planes 2 and 4 under min_area, others unseen


def test_affected_range():
    assert affected_range([2, 9], 5, 12) == (3, 8)
    assert affected_range([2, 5, 9], 5, 12) == (3, 8)
    assert affected_range([5], 5, 12) == (0, 11)
    assert affected_range([2], 0, 12) == (0, 1)


def test_correction_repropagates_only_the_affected_range(model, cache):
    volume = _stack(8)
    tracker = Sam2Tracker(model, volume, cache=cache)
    tracker.set_points(1, 1, [[24, 22]], [1])
    tracker.set_points(6, 1, [[24, 32]], [1])
    before = np.array(tracker.propagate()[1])
    preview = tracker.set_points(3, 1, [[24, 26], [24, 40]], [1, 0])
    assert tracker.pending() == {1: [3]}
    steps = []
    after = run_to_end(tracker.propagate_steps(), steps.append)[1]
    # plane 3 lies between prompted planes 1 and 6: planes 2..5 are re-propagated
    assert sorted({s.plane for s in steps}) == [2, 3, 4, 5]
    assert [s.plane for s in steps if s.direction == 1] == [3, 4, 5]
    assert [s.plane for s in steps if s.direction == -1] == [3, 2]
    for z in (0, 1, 6, 7):
        np.testing.assert_array_equal(after[z], before[z])
    np.testing.assert_array_equal(after[3], preview)
    assert tracker.pending() == {}


def test_cancel_keeps_masks_and_memory(model, cache):
    volume = _stack(6)
    tracker = Sam2Tracker(model, volume, cache=cache)
    tracker.set_points(2, 1, [[24, 24]], [1])
    flag = threading.Event()
    job = tracker.propagate_steps(cancel=flag)
    next(job), next(job)
    flag.set()
    with pytest.raises(JobCancelled) as caught:
        next(job)
    assert caught.value.partial is None
    with pytest.raises(KeyError):
        tracker.masks(1)  # nothing of the cancelled run was kept
    assert tracker.pending() == {1: [2]}
    done = tracker.propagate()[1]
    fresh = Sam2Tracker(model, volume, cache=cache)
    fresh.set_points(2, 1, [[24, 24]], [1])
    np.testing.assert_array_equal(done, fresh.propagate()[1])


def test_time_series_rgb_several_objects_and_new_object_later(model, cache):
    series = np.repeat(_stack(5)[..., None], 3, axis=-1)  # (T, Y, X, 3)
    tracker = Sam2Tracker(model, series, cache=cache)
    assert tracker.n_planes == 5
    assert tracker.plane_shape == (48, 56)
    mask = np.zeros((48, 56), bool)
    mask[18:30, 14:30] = True
    tracker.set_mask(0, 1, mask)
    tracker.set_points(0, 2, [[5, 5]], [1])
    first = tracker.propagate()
    assert sorted(first) == [1, 2]
    assert first[1].shape == (5, 48, 56)
    steps = []
    tracker.set_points(4, 3, None, None, box=[10, 30, 40, 55])
    run_to_end(tracker.propagate_steps(), steps.append)
    assert {s.object_id for s in steps} == {3}  # objects 1 and 2 were up to date
    assert [(s.plane, s.direction) for s in steps] == [(4, 1)] + [
        (t, -1) for t in range(4, -1, -1)
    ]
    np.testing.assert_array_equal(tracker.masks(1), first[1])
    with pytest.raises(ValueError, match="Unknown object ids"):
        run_to_end(tracker.propagate_steps([9]))
    with pytest.raises(TypeError, match="SAM 2 model"):
        Sam2Tracker(object(), series)


def test_update_changes_replace_the_object_on_propagated_planes_only():
    from napari_seglab.sam.sam2_stack import Sam2Update

    labels = np.zeros((4, 5, 5), np.int32)
    labels[:, 1:3, 1:3] = 2  # the object, on every plane
    labels[:, 4, 4] = 9  # another object
    volume = np.zeros((4, 5, 5), bool)
    volume[:, 2:4, 2:4] = True
    volume[:, 4, 4] = True
    update = Sam2Update(volume, first=1, last=2, label_id=2, tracker_id=1)
    indices, values = update.changes(labels)
    out = labels.copy()
    out[indices] = values
    np.testing.assert_array_equal(out[[0, 3]], labels[[0, 3]])  # planes not propagated
    for z in (1, 2):
        expected = np.where(volume[z], 2, 0)
        expected[4, 4] = 9  # not taken without overwrite
        np.testing.assert_array_equal(out[z], expected)
    indices, values = update.changes(labels, overwrite=True)
    out = labels.copy()
    out[indices] = values
    assert out[1, 4, 4] == 2
    with pytest.raises(ValueError, match="no label id"):
        Sam2Update(volume, 0, 3, 0, 1).changes(labels)


def test_prefetch_reads_each_plane_ahead_and_changes_nothing(model, cache):
    """The prefetch path (a worker thread; on CUDA also a side stream) equals direct lookups.

    The prefetching tracker also computes planes in groups of 4 per autocast
    region, as with autocast on CUDA: the same masks and the same events.
    """
    volume = _stack(6)
    runs, events = {}, {}
    for prefetch in (False, True):
        tracker = Sam2Tracker(model, volume, cache=cache, prefetch=prefetch)
        assert tracker._group == 1  # CPU: one plane per progress event
        if prefetch:
            tracker._group = 4
        tracker.set_points(2, 1, [[24, 24]], [1])
        steps = []
        first = run_to_end(tracker.propagate_steps(), steps.append)[1]
        tracker.set_points(4, 1, [[24, 30], [5, 5]], [1, 0])
        second = run_to_end(tracker.propagate_steps(), steps.append)[1]
        runs[prefetch] = (first, second, tracker.features.prefetch_hits, tracker.encoded)
        events[prefetch] = [(s.plane, s.direction, s.done, s.total, s.area) for s in steps]
    assert events[True] == events[False]
    assert Sam2Tracker(model, volume, cache=cache).features.prefetching is False  # CPU default
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    np.testing.assert_array_equal(runs[True][1], runs[False][1])
    assert runs[False][2] == 0
    # every plane tracked from memory was read from a prefetch: 5 planes (all but the
    # prompted plane 2), then 5 and 3 (planes 3..5 re-tracked, 4 prompted)
    assert runs[True][2] == 5 + 2
    assert runs[True][3] == runs[False][3] == set(range(6))  # nothing fetched beyond need


def test_prefetch_keeps_two_planes_ahead_and_reports_errors():
    import torch

    from napari_seglab.sam.sam2_model import Sam2Embedding
    from napari_seglab.sam.sam2_video import CachedFeatures

    asked = []

    def embed(plane):
        asked.append(plane)
        if plane == 9:
            raise OSError("plane 9 cannot be read")
        level = torch.full((1, 2, 4, 4), float(plane))
        return Sam2Embedding([level, level], [level, level], level, (4, 4))

    features = CachedFeatures(embed, torch.device("cpu"), prefetch=True)
    for plane in (0, 1, 2):
        features.prefetch(plane)  # plane 0 is dropped: at most AHEAD = 2 wait
    for plane in (1, 2, 0):
        _, backbone = features.get(plane, (None, None))
        assert float(backbone["vision_features"].max()) == plane
    assert features.prefetch_hits == 2
    assert sorted(asked) == [0, 0, 1, 2]  # plane 0 looked up again when asked
    features.prefetch(9)
    with pytest.raises(OSError, match="plane 9"):
        features.get(9)
    features.prefetch(3)
    features.drop_prefetched()
    assert features.get(3)[1]["backbone_fpn"][0].shape == (1, 2, 4, 4)
    assert features.prefetch_hits == 2
