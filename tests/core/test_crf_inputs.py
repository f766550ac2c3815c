"""CRF input validation and channel layouts: clear errors, no in-place changes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_seglab import crf, metrics


@pytest.fixture
def scene():
    """A bright disc on a dark background with soft, slightly wrong probabilities."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24) ** 2 + (xx - 24) ** 2 <= 100
    image = (disc * 200 + rng.normal(30, 5, disc.shape)).astype(np.float32)
    p = np.clip(np.where(disc, 0.65, 0.35) + rng.normal(0, 0.1, disc.shape), 0.01, 0.99)
    probs = np.stack([1 - p, p]).astype(np.float32)
    return image, probs, disc


def test_single_foreground_channel_is_binary(scene):
    image, probs, _ = scene
    assert np.array_equal(crf.refine(image, probs[1:]), crf.refine(image, probs))


def test_inputs_are_not_modified(scene):
    image, probs, _ = scene
    image_copy, probs_copy = image.copy(), probs.copy()
    labels = (probs[1] > 0.5).astype(np.int32)
    labels_copy = labels.copy()
    crf.refine(image, probs)
    crf.refine_labels(image, labels)
    assert np.array_equal(image, image_copy)
    assert np.array_equal(probs, probs_copy)
    assert np.array_equal(labels, labels_copy)


def test_channel_layouts_agree(scene):
    image, probs, disc = scene
    rgb = np.stack([image, image * 0.5, image * 0.25], axis=-1)
    last = crf.refine(rgb, probs)
    first = crf.refine(np.moveaxis(rgb, -1, 0), probs)
    named = crf.refine(np.moveaxis(rgb, -1, 1), probs, channel_axis=1)
    assert np.array_equal(last, first)
    assert np.array_equal(last, named)
    assert last.shape == disc.shape
    assert last.dtype == np.uint8
    # an RGB uint8 image works too and still finds the disc
    as_uint8 = np.clip(rgb, 0, 255).astype(np.uint8)
    assert metrics.foreground_dice(crf.refine(as_uint8, probs), disc) > 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im, p: (im[:40], p), "shape"),
        (lambda im, p: (im, p[:, :, :40]), "shape"),
        (lambda im, p: (im, np.where(np.arange(48) == 3, np.nan, p).astype(np.float32)), "finite"),
        (lambda im, p: (im, p * 0.5), "summing to 1"),
        (lambda im, p: (im, np.stack([p[0], p[1], p[1]])), "summing to 1"),
        (lambda im, p: (im, p * 4 - 2), r"\[0, 1\]"),
        (lambda im, p: (im, p[1]), r"\(C, Y, X\)"),
        (lambda im, p: (im.astype(str), p), "numeric image"),
    ],
)
def test_bad_probabilities_or_image_raise(scene, change, message):
    image, probs = change(*scene[:2])
    with pytest.raises(ValueError, match=message):
        crf.refine(image, probs)


def test_shape_error_names_both_shapes(scene):
    image, probs, _ = scene
    with pytest.raises(ValueError, match=r"\(48, 48\).*\(40, 48\)"):
        crf.refine(image[:40], probs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, 1.0, 1.0)}, "spacing with 2 values"),
        ({"spacing": (0.0, 1.0)}, "positive"),
        ({"iterations": 0}, "iterations"),
        ({"spatial_sigma": -1.0}, "spatial_sigma"),
        ({"intensity_sigma": 0.0}, "intensity_sigma"),
        ({"bilateral_weight": float("nan")}, "bilateral_weight"),
        ({"intensity_range": (5.0, 1.0)}, "intensity_range"),
        ({"max_block_voxels": 10}, "max_block_voxels"),
    ],
)
def test_bad_parameters_raise(scene, kwargs, message):
    image, probs, _ = scene
    with pytest.raises(ValueError, match=message):
        crf.refine(image, probs, **kwargs)


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.full((48, 48), -1), {}, ">= 0"),
        (np.zeros((48, 48), dtype=float), {}, "integer labels"),
        (np.zeros((48,), dtype=int), {}, "2D"),
        (np.zeros((48, 48), dtype=int), {"confidence": 0.5}, "confidence"),
        (np.zeros((48, 48), dtype=int), {"confidence": 1.0}, "confidence"),
        (np.zeros((48, 48), dtype=int), {"mode": "panoptic"}, "mode"),
        (np.zeros((40, 48), dtype=int), {}, "shape"),
    ],
)
def test_bad_labels_raise(scene, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        crf.refine_labels(scene[0], labels, **kwargs)


def test_empty_labels_stay_empty(scene):
    labels = np.zeros((48, 48), dtype=np.uint16)
    for mode in ("instance", "semantic"):
        out = crf.refine_labels(scene[0], labels, mode=mode)
        assert out.dtype == np.uint16
        assert not out.any()


def test_parameters_resolve_defaults_from_finest_spacing():
    params = crf.CrfParameters().resolved((2.0, 0.5, 0.5))
    assert params.spatial_sigma == pytest.approx(5 * 0.5)
    assert params.smoothness_sigma == pytest.approx(0.5)
    explicit = crf.CrfParameters(spatial_sigma=3.0).resolved((2.0, 0.5, 0.5))
    assert explicit.spatial_sigma == 3.0


def test_importing_crf_loads_no_gui_or_torch():
    code = (
        "import sys, napari_seglab.crf as c; import numpy as np; "
        "c.refine(np.zeros((8, 8)), np.full((1, 8, 8), 0.5)); "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
