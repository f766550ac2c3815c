"""``metrics.surface`` against MONAI's functional surface metrics, one pair of masks at a time.

Issue 11: the hand-written surface metrics stay only while they agree with
MONAI's ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice``
to 1e-6 with anisotropic spacing (``benchmarks/bench_metrics.py --surface``
times both). MONAI returns float32, so the agreement is relative (float32
carries about 6e-8); below 1 the 1e-6 is absolute.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from napari_seglab.metrics import surface

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")
monai_utils = pytest.importorskip("monai.metrics.utils")

pytestmark = [
    # MONAI passes its own deprecated argument internally; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning"),
    # MONAI warns on empty masks; the empty cases below are deliberate.
    pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class:UserWarning"),
]


def _one_hot(mask: np.ndarray):
    """MONAI layout: ``(batch=1, channel=1, *spatial)`` float tensor."""
    return torch.from_numpy(mask[None, None].astype(np.float32))


def _monai(pred, gt, spacing, tolerance) -> tuple[float, float, float]:
    """HD95, ASSD and surface Dice from MONAI's public functions."""
    y_pred, y = _one_hot(pred), _one_hot(gt)
    common = {"include_background": True, "spacing": spacing}
    hd95 = monai_metrics.compute_hausdorff_distance(y_pred, y, percentile=95, **common)
    assd = monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=True, **common)
    nsd = monai_metrics.compute_surface_dice(y_pred, y, [tolerance], **common)
    return float(hd95[0, 0]), float(assd[0, 0]), float(nsd[0, 0])


def _ellipsoid(shape, centre, radii):
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def _random_pair(rng, shape):
    """Salt-and-pepper masks: most voxels are surface voxels, many on both surfaces."""
    return rng.random(shape) < 0.3, rng.random(shape) < 0.4


def _shifted_ellipsoids(rng, shape):
    """A smooth object and a shifted, slightly noisy copy of it."""
    gt = _ellipsoid(shape, rng.uniform(0.3, 0.7, len(shape)) * shape, np.array(shape) / 3)
    pred = np.roll(gt, tuple(rng.integers(-3, 4, len(shape))), axis=tuple(range(len(shape))))
    return pred ^ (rng.random(shape) < 0.01), gt


def _ring_and_blob(rng, shape):
    """A hollow shell (inner and outer surface) against a solid blob touching the border."""
    centre = np.array(shape) / 2
    outer = _ellipsoid(shape, centre, np.array(shape) / 2.5)
    ring = outer & ~_ellipsoid(shape, centre, np.array(shape) / 5)
    blob = np.zeros(shape, dtype=bool)
    blob[tuple(slice(0, s // 2 + int(rng.integers(0, 3))) for s in shape)] = True
    return ring, blob


def _thin_structures(rng, shape):
    """One-voxel-thick lines and isolated voxels: every voxel is a surface voxel."""
    pred = np.zeros(shape, dtype=bool)
    pred[(slice(None),) + tuple(s // 2 for s in shape[1:])] = True
    gt = np.zeros(shape, dtype=bool)
    gt[tuple(rng.integers(0, s, 5) for s in shape)] = True
    return pred, gt


def _splitting_tolerance(pooled: np.ndarray) -> float:
    """A tolerance halfway between two distinct distances, splitting them near the median.

    No distance lies within float32 rounding of it, so MONAI's float32 distances
    and our float64 ones fall on the same side.
    """
    values = np.unique(pooled)
    midpoints = (values[:-1] + values[1:]) / 2
    usable = (values[1:] - values[:-1]) > 1e-4
    below = np.searchsorted(np.sort(pooled), midpoints) / pooled.size
    return float(midpoints[usable][np.argmin(np.abs(below[usable] - 0.5))])


PAIRS = [_random_pair, _shifted_ellipsoids, _ring_and_blob, _thin_structures]
GEOMETRIES = [
    ((37, 45), (0.7, 1.3)),
    ((30, 28), (2.5, 0.4)),
    ((13, 29, 26), (2.5, 0.6, 0.8)),
    ((18, 20, 15), (0.45, 1.7, 1.1)),
]


@pytest.mark.parametrize("make_pair", PAIRS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(("shape", "spacing"), GEOMETRIES, ids=str)
def test_agrees_with_monai_functions_to_1e6(make_pair, shape, spacing):
    rng = np.random.default_rng(sum(shape))
    pred, gt = make_pair(rng, shape)
    assert pred.any()
    assert gt.any()
    tolerance = _splitting_tolerance(np.concatenate(surface.surface_distances(pred, gt, spacing)))
    ours = surface.surface_scores(pred, gt, spacing, tolerance)
    hd95, assd, nsd = _monai(pred, gt, spacing, tolerance)
    # MONAI's float32 torch.quantile alone can be ~1e-6 off the exact percentile of its
    # own distances (1.15e-6 in one case of test_metrics_semantic.py); these cases are not
    assert ours.hd95 == pytest.approx(hd95, rel=1e-6, abs=1e-6)
    assert ours.assd == pytest.approx(assd, rel=1e-6, abs=1e-6)
    assert ours.surface_dice == pytest.approx(nsd, rel=1e-6, abs=1e-6)
    assert 0 < ours.surface_dice < 1  # the tolerance splits the distances


@pytest.mark.parametrize("make_pair", PAIRS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(("shape", "spacing"), GEOMETRIES, ids=str)
def test_surfaces_and_distances_are_monais(make_pair, shape, spacing):
    rng = np.random.default_rng(sum(shape) + 1)
    pred, gt = make_pair(rng, shape)
    edges, distances, _ = monai_utils.get_edge_surface_distance(
        torch.from_numpy(pred), torch.from_numpy(gt), spacing=spacing, symmetric=True
    )
    # MONAI's edges live in its crop (the union's box plus one voxel); ours in the full image
    box = ndi.find_objects((pred | gt).astype(np.uint8))[0]
    crop = tuple(slice(1, -1) for _ in shape)
    for ours, theirs in zip((pred, gt), edges):
        np.testing.assert_array_equal(surface.mask_surface(ours)[box], theirs.numpy()[crop])
    for ours, theirs in zip(surface.surface_distances(pred, gt, spacing), distances):
        np.testing.assert_allclose(np.sort(ours), np.sort(theirs.numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make_pair", PAIRS, ids=lambda f: f.__name__.strip("_"))
def test_surface_is_the_erosion_rim_and_distances_come_in_raster_order(make_pair):
    rng = np.random.default_rng(3)
    shape, spacing = (11, 17, 14), (1.9, 0.5, 0.75)
    pred, gt = make_pair(rng, shape)
    for mask in (pred, gt):
        expected = mask & ~ndi.binary_erosion(mask, border_value=0)
        np.testing.assert_array_equal(surface.mask_surface(mask), expected)
    # brute force: every pair of surface voxel centres, in physical units, float64
    a = np.argwhere(surface.mask_surface(pred)) * spacing
    b = np.argwhere(surface.mask_surface(gt)) * spacing
    pairwise = cdist(a, b)
    pred_to_gt, gt_to_pred = surface.surface_distances(pred, gt, spacing)
    np.testing.assert_allclose(pred_to_gt, pairwise.min(axis=1), rtol=1e-12, atol=0)
    np.testing.assert_allclose(gt_to_pred, pairwise.min(axis=0), rtol=1e-12, atol=0)


def test_identical_masks_and_unit_spacing():
    mask = _ellipsoid((20, 24), (10, 11), (6, 8))
    ours = surface.surface_scores(mask, mask)
    assert ours == surface.SurfaceScores(0.0, 0.0, 1.0)
    assert ours == surface.SurfaceScores(*_monai(mask, mask, None, 1.0))


def test_empty_masks_documented_conventions():
    shape, spacing = (12, 10), (1.0, 2.0)
    empty = np.zeros(shape, dtype=bool)
    blob = _ellipsoid(shape, (5, 5), (3, 2))

    both = surface.surface_scores(empty, empty, spacing)
    assert np.isnan([both.hd95, both.assd, both.surface_dice]).all()
    assert np.isnan(_monai(empty, empty, spacing, 1.0)).all()

    for pred, gt in ((empty, blob), (blob, empty)):
        ours = surface.surface_scores(pred, gt, spacing)
        hd95, assd, nsd = _monai(pred, gt, spacing, 1.0)
        assert ours.assd == assd == np.inf
        assert ours.surface_dice == nsd == 0.0
        # ours: an infinite distance, never NaN (which a nanmean would skip); MONAI: NaN
        assert ours.hd95 == np.inf
        assert not np.isfinite(hd95)


def test_surface_distances_reject_empty_and_mismatched_masks():
    blob = _ellipsoid((8, 8), (4, 4), (2, 2))
    with pytest.raises(ValueError, match="non-empty"):
        surface.surface_distances(blob, np.zeros_like(blob))
    with pytest.raises(ValueError, match="same shape"):
        surface.surface_distances(blob, blob[:-1])
