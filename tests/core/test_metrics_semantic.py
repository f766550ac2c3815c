"""Semantic and surface metrics against MONAI and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from napari_seglab import data, metrics

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")
get_edge_surface_distance = pytest.importorskip("monai.metrics.utils").get_edge_surface_distance

# MONAI passes its own deprecated argument internally; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _one_hot(labels: np.ndarray, classes: list[int]):
    """MONAI layout: ``(batch=1, channel=len(classes), *spatial)`` float tensor."""
    stacked = np.stack([labels == c for c in classes])[None].astype(np.float32)
    return torch.from_numpy(stacked)


def _monai_scores(pred, gt, classes, spacing, tolerance):
    """Per-class scores from MONAI's own metric implementations."""
    y_pred, y = _one_hot(pred, classes), _one_hot(gt, classes)
    dice = monai_metrics.DiceMetric(include_background=True, reduction="none")(y_pred, y)
    iou = monai_metrics.MeanIoU(include_background=True, reduction="none")(y_pred, y)
    hd95 = monai_metrics.HausdorffDistanceMetric(
        include_background=True, percentile=95, reduction="none"
    )
    hd95 = hd95(y_pred, y, spacing=spacing)
    assd = monai_metrics.SurfaceDistanceMetric(
        include_background=True, symmetric=True, reduction="none"
    )
    assd = assd(y_pred, y, spacing=spacing)
    nsd = monai_metrics.compute_surface_dice(
        y_pred,
        y,
        class_thresholds=[tolerance] * len(classes),
        include_background=True,
        spacing=spacing,
    )
    out = {
        c: {
            "dice": float(dice[0, i]),
            "iou": float(iou[0, i]),
            "hd95": float(hd95[0, i]),
            "assd": float(assd[0, i]),
            "surface_dice": float(nsd[0, i]),
        }
        for i, c in enumerate(classes)
    }
    for c in classes:
        # MONAI's HausdorffDistanceMetric takes the percentile with torch.quantile in
        # float32, whose interpolation position is rounded to float32 (errors ~1e-6
        # relative). For the 1e-6 check use MONAI's own surface distances
        # (get_edge_surface_distance: its surface definition and Euclidean distances)
        # with a float64 percentile.
        _, (d_pg, d_gp), _ = get_edge_surface_distance(
            torch.from_numpy(pred == c), torch.from_numpy(gt == c), spacing=spacing, symmetric=True
        )
        d_pg, d_gp = d_pg.numpy().astype(np.float64), d_gp.numpy().astype(np.float64)
        out[c]["hd95_float32_quantile"] = out[c].pop("hd95")
        out[c]["hd95"] = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
        out[c]["distances"] = (d_pg, d_gp)
    return out


def _check_against_monai(ours, reference, pred, gt, spacing):
    for c, expected in reference.items():
        for key in ("dice", "iou", "hd95", "assd", "surface_dice"):
            # MONAI computes in float32: agree to float32 precision
            assert ours[c][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-6), (c, key)
        assert ours[c]["hd95"] == pytest.approx(expected["hd95_float32_quantile"], rel=1e-5)
        d_pg, d_gp = metrics.surface_distances(pred == c, gt == c, spacing)
        np.testing.assert_allclose(np.sort(d_pg), np.sort(expected["distances"][0]), rtol=1e-6)
        np.testing.assert_allclose(np.sort(d_gp), np.sort(expected["distances"][1]), rtol=1e-6)


def _blobs(rng, shape, n_classes, n_blobs=6):
    """Random class blobs (ellipses/ellipsoids) on background."""
    grid = np.indices(shape).astype(float)
    labels = np.zeros(shape, dtype=np.int32)
    for _ in range(n_blobs):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(2, max(3, min(shape) / 2.5), size=len(shape))
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
        labels[inside] = rng.integers(1, n_classes + 1)
    return labels


def _perturb(rng, labels, n_classes):
    out = np.roll(labels, tuple(rng.integers(-2, 3, size=labels.ndim)), axis=range(labels.ndim))
    flip = rng.random(labels.shape) < 0.01
    out[flip] = rng.integers(0, n_classes + 1, size=int(flip.sum()))
    return out


CASES = [
    ((48, 56), (0.7, 1.3)),
    ((40, 40), None),
    ((14, 30, 26), (2.5, 0.6, 0.8)),
    ((12, 24, 24), (1.0, 1.0, 1.0)),
]


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_agrees_with_monai_on_random_blobs(shape, spacing):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    gt = _blobs(rng, shape, 3)
    pred = _perturb(rng, gt, 3)
    classes = sorted(set(np.unique(gt)) & set(np.unique(pred)) - {0})
    assert classes
    tolerance = 1.37  # not a lattice distance: no float32 tie at the tolerance
    ours = metrics.semantic(pred, gt, classes=classes, spacing=spacing, tolerance=tolerance)
    reference = _monai_scores(pred, gt, classes, spacing, tolerance)
    _check_against_monai(ours, reference, pred, gt, spacing)


def test_agrees_with_monai_on_synthetic_anisotropic_nuclei():
    sample = data.nuclei_3d()
    gt = sample.semantic
    pred = np.roll(gt, (1, -2, 3), axis=(0, 1, 2))
    ours = metrics.semantic(pred, gt, spacing=sample.spacing, tolerance=1.1)
    reference = _monai_scores(pred, gt, [1], sample.spacing, 1.1)
    _check_against_monai(ours, reference, pred, gt, sample.spacing)


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (outside the image counts)."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    touching = np.zeros(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            touching |= ~np.roll(padded, step, axis=axis)[inner]
    return mask & touching


def _brute_force_scores(pred_mask, gt_mask, spacing, tolerance):
    scale = np.ones(pred_mask.ndim) if spacing is None else np.asarray(spacing)
    a = np.argwhere(_brute_surface(pred_mask)) * scale
    b = np.argwhere(_brute_surface(gt_mask)) * scale
    distances = cdist(a, b)
    d_ab, d_ba = distances.min(axis=1), distances.min(axis=0)
    pooled = np.concatenate([d_ab, d_ba])
    tp = np.sum(pred_mask & gt_mask)
    return {
        "dice": 2 * tp / (pred_mask.sum() + gt_mask.sum()),
        "iou": tp / np.sum(pred_mask | gt_mask),
        "precision": tp / pred_mask.sum(),
        "recall": tp / gt_mask.sum(),
        "hd95": max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)),
        "assd": pooled.mean(),
        "surface_dice": np.mean(pooled <= tolerance),
    }


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_agrees_with_brute_force_in_float64(shape, spacing):
    rng = np.random.default_rng(7 + shape[0])
    gt = _blobs(rng, shape, 2)
    pred = _perturb(rng, gt, 2)
    tolerance = 1.5
    ours = metrics.semantic(pred, gt, spacing=spacing, tolerance=tolerance)
    for c in ours:
        if not ((pred == c).any() and (gt == c).any()):
            continue
        expected = _brute_force_scores(pred == c, gt == c, spacing, tolerance)
        for key, value in expected.items():
            assert ours[c][key] == pytest.approx(value, rel=1e-12, abs=1e-12), (c, key)


def test_masks_touching_the_image_border():
    gt = np.zeros((10, 12), dtype=np.uint8)
    gt[:5, :] = 1  # touches three borders
    pred = np.zeros_like(gt)
    pred[:6, 2:] = 1
    ours = metrics.semantic(pred, gt, spacing=(1.5, 0.5))[1]
    expected = _brute_force_scores(pred == 1, gt == 1, (1.5, 0.5), 1.0)
    for key in ("hd95", "assd", "surface_dice"):
        assert ours[key] == pytest.approx(expected[key], rel=1e-12)
    reference = _monai_scores(pred, gt, [1], (1.5, 0.5), 1.0)
    _check_against_monai({1: ours}, reference, pred, gt, (1.5, 0.5))


def test_volumes_precision_recall_in_physical_units():
    gt = np.zeros((4, 10, 10), dtype=np.uint16)
    gt[1:3, 2:6, 2:6] = 5  # 32 voxels
    pred = np.zeros_like(gt)
    pred[1:3, 2:6, 2:8] = 5  # 48 voxels, 32 shared
    result = metrics.semantic(pred, gt, spacing=(2.0, 0.5, 0.25), surface=False)
    scores = result[5]
    assert list(result) == [5]
    assert scores["volume_gt"] == pytest.approx(32 * 0.25)
    assert scores["volume_pred"] == pytest.approx(48 * 0.25)
    assert scores["precision"] == pytest.approx(32 / 48)
    assert scores["recall"] == 1.0
    assert scores["dice"] == pytest.approx(64 / 80)
    assert scores["iou"] == pytest.approx(32 / 48)
    assert np.isnan(scores["hd95"])  # surface=False


def test_empty_class_conventions():
    gt = np.zeros((8, 8), dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4] = 1  # class 1 only in gt
    pred[5:7, 5:7] = 2  # class 2 only in pred
    result = metrics.semantic(pred, gt, classes=[1, 2, 3])
    missed, spurious, absent = result[1], result[2], result[3]
    assert missed["dice"] == 0
    assert missed["iou"] == 0
    assert missed["recall"] == 0
    assert np.isnan(missed["precision"])  # nothing predicted: 0/0
    assert missed["hd95"] == np.inf
    assert missed["assd"] == np.inf
    assert missed["surface_dice"] == 0
    assert spurious["dice"] == 0
    assert spurious["precision"] == 0
    assert np.isnan(spurious["recall"])
    assert spurious["hd95"] == np.inf
    for key in ("dice", "iou", "precision", "recall", "hd95", "assd", "surface_dice"):
        assert np.isnan(absent[key]), key  # absent from both: NaN, never a fake 1
    assert absent["volume_gt"] == 0
    assert absent["volume_pred"] == 0


def test_default_classes_are_the_nonzero_ids_of_either_input_and_background_on_request():
    gt = np.array([[0, 1, 1], [0, 4, 4]])
    pred = np.array([[0, 1, 7], [0, 4, 0]])
    assert list(metrics.semantic(pred, gt, surface=False)) == [1, 4, 7]
    with_background = metrics.semantic(pred, gt, classes=[0, 1], surface=False)
    assert with_background[0]["dice"] == pytest.approx(2 * 2 / (3 + 2))


def test_ignore_label_leaves_voxels_out_of_every_metric():
    rng = np.random.default_rng(11)
    gt = _blobs(rng, (30, 30), 2)
    pred = _perturb(rng, gt, 2)
    ignore = np.zeros(gt.shape, dtype=bool)
    ignore[:, :8] = True
    gt_with_ignore = gt.copy()
    gt_with_ignore[ignore] = 255
    ours = metrics.semantic(pred, gt_with_ignore, ignore_label=255, spacing=(1.0, 2.0))
    assert 255 not in ours
    # reference: the same voxels set to background in both images
    pred_cleared, gt_cleared = pred.copy(), gt.copy()
    pred_cleared[ignore] = 0
    gt_cleared[ignore] = 0
    expected = metrics.semantic(pred_cleared, gt_cleared, spacing=(1.0, 2.0))
    for c, scores in expected.items():
        for key, value in scores.items():
            np.testing.assert_allclose(ours[c][key], value, rtol=1e-12, err_msg=f"{c} {key}")


def test_dask_input_gives_the_same_scores():
    dask_array = pytest.importorskip("dask.array")
    sample = data.nuclei_3d()
    gt = (sample.labels % 3).astype(np.uint8)
    pred = np.roll(gt, 1, axis=1)
    expected = metrics.semantic(pred, gt, spacing=sample.spacing)
    lazy = metrics.semantic(
        dask_array.from_array(pred, chunks=(4, 64, 64)),
        dask_array.from_array(gt, chunks=(8, 128, 128)),
        spacing=sample.spacing,
    )
    assert lazy.keys() == expected.keys()
    for c in expected:
        for key in expected[c]:
            np.testing.assert_allclose(lazy[c][key], expected[c][key], rtol=1e-12)


def test_bad_spacing_and_tolerance():
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"spacing: expected 3 positive numbers.*\(1, 2\)"):
        metrics.semantic(labels, labels, spacing=(1, 2))
    with pytest.raises(ValueError, match="spacing"):
        metrics.semantic(labels, labels, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.semantic(labels, labels, tolerance=-1)


def _brute_dice_per_plane(pred, gt, label, axis):
    out = []
    for i in range(pred.shape[axis]):
        p = np.take(pred, i, axis=axis) == label
        g = np.take(gt, i, axis=axis) == label
        total = p.sum() + g.sum()
        out.append(2 * np.sum(p & g) / total if total else np.nan)
    return np.array(out)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_per_slice_dice_matches_plane_by_plane_reference(axis):
    rng = np.random.default_rng(3)
    gt = _blobs(rng, (10, 20, 16), 3)
    pred = _perturb(rng, gt, 3)
    result = metrics.per_slice(pred, gt, axis=axis)
    assert sorted(result) == sorted((set(np.unique(gt)) | set(np.unique(pred))) - {0})
    for label, dice in result.items():
        expected = _brute_dice_per_plane(pred, gt, label, axis)
        assert dice.shape == (gt.shape[axis],)
        np.testing.assert_allclose(dice, expected, rtol=1e-12, equal_nan=True)


def test_per_slice_foreground_and_dask():
    dask_array = pytest.importorskip("dask.array")
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 2, axis=2)
    result = metrics.per_slice(
        dask_array.from_array(pred, chunks=(3, 128, 128)), gt, foreground=True
    )
    assert list(result) == [1]
    expected = _brute_dice_per_plane((pred > 0).astype(int), (gt > 0).astype(int), 1, 0)
    np.testing.assert_allclose(result[1], expected, rtol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="axis"):
        metrics.per_slice(pred, gt, axis=3)
