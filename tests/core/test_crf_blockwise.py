"""crf.refine_blockwise: the CRF and its guards a block at a time, equal to crf.refine."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import zarr

from napari_seglab import crf
from napari_seglab.jobs import JobCancelled


def _blobs(shape, spacing, seed=0):
    """A noisy image of a few bright ellipsoids and a noisy foreground probability map."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = np.zeros(shape, bool)
    for _ in range(6):
        centre = [rng.uniform(0, n) for n in shape]
        radius = rng.uniform(4, 9)
        truth |= sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) < radius**2
    image = (truth + rng.normal(0, 0.3, shape)).astype(np.float32)
    p = 0.5 + 0.35 * (2 * truth.astype(np.float32) - 1) + rng.normal(0, 0.25, shape)
    p = np.clip(p, 0.01, 0.99).astype(np.float32)
    return image, np.stack([1 - p, p])


def _both(image, probabilities, **kwargs):
    """``refine`` on the whole arrays and ``refine_blockwise`` on zarr copies."""
    guard = kwargs.pop("guard_block_voxels", None)
    whole = crf.refine(image, probabilities, **kwargs)
    out = zarr.zeros(whole.shape, chunks=16, dtype=np.uint8)
    result = crf.refine_blockwise(
        zarr.array(image, chunks=16),
        zarr.array(probabilities, chunks=16),
        out,
        guard_block_voxels=guard,
        **kwargs,
    )
    return whole, out[...], result


@pytest.mark.parametrize(
    ("shape", "spacing"), [((96, 120), (1.0, 1.0)), ((12, 60, 70), (3.0, 1.0, 1.0))]
)
def test_blockwise_equals_whole_volume(shape, spacing):
    image, probabilities = _blobs(shape, spacing)
    crf_voxels, guard = (4000, 6000) if len(shape) == 2 else (20000, 45000)
    whole, blockwise, result = _both(
        image,
        probabilities,
        spacing=spacing,
        max_block_voxels=crf_voxels,
        guard_block_voxels=guard,
    )
    assert result.crf_blocks > 1
    assert result.guard_blocks > 1
    np.testing.assert_array_equal(blockwise, whole)
    assert (whole != (probabilities[1] > probabilities[0])).sum() > 0  # the CRF did something


def test_an_erased_object_across_guard_blocks_is_put_back_as_whole():
    shape = (80, 90)
    image = np.random.default_rng(1).normal(0, 0.05, shape).astype(np.float32)
    p = np.full(shape, 0.2, np.float32)
    p[30:45, 40:55] = 0.56  # held weakly, not in the image: strong kernels erase it
    p[5:20, 5:20] = 0.95
    image[5:20, 5:20] += 1
    probabilities = np.stack([1 - p, p])
    strong = {"smoothness_weight": 8.0, "bilateral_weight": 8.0, "max_block_voxels": 1500}
    whole, blockwise, result = _both(image, probabilities, guard_block_voxels=2500, **strong)
    assert result.guard_blocks > 2
    assert result.restored_objects >= 2
    np.testing.assert_array_equal(blockwise, whole)
    assert blockwise[30:45, 40:55].all()  # kept as the input had it
    plain, _, _ = _both(image, probabilities, keep_objects=False, verify=False, **strong)
    assert not plain[30:45, 40:55].any()  # without the guard the CRF erases it


def test_three_classes_one_channel_maps_rgb_and_keep_confident_match():
    rng = np.random.default_rng(2)
    image, probabilities = _blobs((50, 64), (1.0, 1.0), seed=3)
    three = rng.random((3, 50, 64)).astype(np.float32)
    three /= three.sum(axis=0)
    rgb = np.stack([image, image * 0.5, -image], axis=-1)
    cases = [
        (image, three, {}),
        (image, probabilities[1:], {}),
        (rgb, probabilities, {}),
        (image, probabilities, {"keep_confident": 0.8}),
        (image, probabilities, {"intensity_range": (-0.5, 1.5), "verify": False}),
    ]
    for img, probs, kwargs in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            whole, blockwise, _ = _both(
                img, probs, max_block_voxels=900, guard_block_voxels=1800, **kwargs
            )
        np.testing.assert_array_equal(blockwise, whole, err_msg=str(kwargs))


def test_scratch_on_disk_and_the_same_warning(tmp_path):
    image, probabilities = _blobs((40, 50), (1.0, 1.0))
    shuffled = probabilities[:, ::-1].copy()  # misaligned with the image
    with pytest.warns(RuntimeWarning, match="CRF refinement changed") as expected:
        whole = crf.refine(image, shuffled, warn_fraction=0.001)
    out = np.zeros(whole.shape, np.uint8)
    with pytest.warns(RuntimeWarning, match="CRF refinement changed") as got:
        crf.refine_blockwise(image, shuffled, out, warn_fraction=0.001, scratch=tmp_path)
    assert str(got[0].message) == str(expected[0].message)
    np.testing.assert_array_equal(out, whole)
    assert (tmp_path / "crf.zarr").exists()
    assert (tmp_path / "ids.zarr").exists()


def test_bad_inputs_name_what_was_expected():
    image, probabilities = _blobs((30, 40), (1.0, 1.0))
    with pytest.raises(ValueError, match=r"out of shape \(30, 40\)"):
        crf.refine_blockwise(image, probabilities, np.zeros((30, 41), np.uint8))
    with pytest.raises(ValueError, match="image of shape"):
        crf.refine_blockwise(image[:, :39], probabilities, np.zeros((30, 40), np.uint8))
    with pytest.raises(ValueError, match="summing to 1"):
        crf.refine_blockwise(image, probabilities * 0.7, np.zeros((30, 40), np.uint8))
    bad = image.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="image region"):
        crf.refine_blockwise(bad, probabilities, np.zeros((30, 40), np.uint8))


def test_cancel_stops_the_job():
    image, probabilities = _blobs((30, 40), (1.0, 1.0))
    stop = threading.Event()
    steps = crf.refine_blockwise_steps(
        image, probabilities, np.zeros((30, 40), np.uint8), cancel=stop
    )
    next(steps)
    stop.set()
    with pytest.raises(JobCancelled):
        for _ in steps:
            pass
