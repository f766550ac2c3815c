"""Per-object refinement of instance labels: objects never merge, never get new numbers."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_seglab import crf, metrics


@st.composite
def instance_scenes(draw):
    """Random rectangles with random label values over a random image, 2D or small 3D."""
    ndim = draw(st.sampled_from([2, 2, 3]))
    shape = (6, 20, 20) if ndim == 3 else (32, 32)
    labels = np.zeros(shape, dtype=draw(st.sampled_from([np.uint8, np.uint16, np.int32])))
    values = draw(st.lists(st.integers(1, 250), min_size=1, max_size=5, unique=True))
    for value in values:
        lo = [draw(st.integers(0, n - 2)) for n in shape]
        hi = [draw(st.integers(a + 1, min(a + 12, n))) for a, n in zip(lo, shape)]
        labels[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape) + (labels > 0) * draw(st.floats(0.0, 4.0))
    confidence = draw(st.sampled_from([0.6, 0.7, 0.9]))
    return image.astype(np.float32), labels, confidence


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_scenes(), st.randoms(use_true_random=False))
def test_objects_never_merge_or_get_renumbered(scene, random):
    image, labels, confidence = scene
    original = labels.copy()
    refined = crf.refine_labels(image, labels, confidence=confidence)
    assert np.array_equal(labels, original)  # input untouched
    assert refined.dtype == labels.dtype
    assert refined.shape == labels.shape
    present = set(np.unique(labels).tolist())
    # no new values: every object is kept (same value) or removed
    assert set(np.unique(refined).tolist()) <= present
    # an object that survives still covers some of its own pixels (it was not replaced)
    for value in set(np.unique(refined).tolist()) - {0}:
        assert np.any((refined == value) & (labels == value))
    # the result does not depend on which numbers the objects carry (or their order)
    values = sorted(present - {0})
    shuffled = values.copy()
    random.shuffle(shuffled)
    lut = np.zeros(
        int(np.iinfo(labels.dtype).max) + 1 if labels.dtype.itemsize < 4 else 256,
        dtype=labels.dtype,
    )
    lut[values] = shuffled
    relabelled = crf.refine_labels(image, lut[labels], confidence=confidence)
    assert np.array_equal(relabelled, lut[refined])


def test_touching_objects_of_equal_brightness_stay_apart():
    """One bright blob labelled as two halves: a semantic CRF would merge them, we do not."""
    yy, xx = np.mgrid[:40, :60]
    blob = ((yy - 20) / 12.0) ** 2 + ((xx - 30) / 22.0) ** 2 <= 1
    image = blob * 100.0 + np.random.default_rng(0).normal(0, 3, blob.shape)
    labels = np.zeros(blob.shape, dtype=np.int32)
    labels[blob & (xx < 30)] = 7
    labels[blob & (xx >= 30)] = 3
    refined = crf.refine_labels(image, labels)
    assert not np.any((labels == 7) & (refined == 3))
    assert not np.any((labels == 3) & (refined == 7))
    for value in (3, 7):
        assert metrics.foreground_dice(refined == value, labels == value) > 0.98


def test_pixels_an_object_keeps_are_never_taken():
    """A grown object cannot take pixels its neighbour keeps; released ones may be claimed."""
    yy, xx = np.mgrid[:40, :60]
    left = (yy - 20) ** 2 + (xx - 18) ** 2 <= 100
    right = (yy - 20) ** 2 + (xx - 41) ** 2 <= 100
    image = (left | right) * 100.0 + np.random.default_rng(1).normal(0, 3, left.shape)
    labels = np.zeros(left.shape, dtype=np.int32)
    labels[right] = 2
    # object 1 grossly overgrown: it covers its disc, the gap, and ends before disc 2
    labels[(left | ((xx > 5) & (xx < 31) & (yy > 8) & (yy < 32))) & ~right] = 1
    refined = crf.refine_labels(image, labels)
    assert np.array_equal(refined == 2, right)
    assert metrics.foreground_dice(refined == 1, left) > 0.95


def test_object_without_image_support_can_be_removed():
    """An object drawn on empty background is removed when the image disagrees strongly."""
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 12) ** 2 <= 64
    image = disc * 100.0
    labels = np.zeros(disc.shape, dtype=np.int32)
    labels[disc] = 1
    labels[30:33, 30:33] = 5  # tiny and on a flat dark area next to nothing
    refined = crf.refine_labels(image, labels, confidence=0.6, smoothness_weight=10.0)
    assert 5 not in refined
    assert metrics.foreground_dice(refined == 1, disc) > 0.95
