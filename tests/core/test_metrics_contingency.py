"""The sparse contingency table against scikit-image and a brute-force count."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import contingency_table as skimage_contingency

from napari_seglab import data, metrics
from napari_seglab.metrics.contingency import contingency_table


def _as_dict(table) -> dict[tuple[int, int], int]:
    return {
        (int(p), int(g)): int(c)
        for p, g, c in zip(table.pred_ids, table.gt_ids, table.counts)
        if c
    }


def _skimage_dict(pred: np.ndarray, gt: np.ndarray) -> dict[tuple[int, int], int]:
    cont = skimage_contingency(gt, pred).tocoo()
    return {(int(p), int(g)): int(c) for g, p, c in zip(cont.row, cont.col, cont.data) if c}


def _brute_force(pred: np.ndarray, gt: np.ndarray) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        counts[(p, g)] = counts.get((p, g), 0) + 1
    return counts


def _random_labels(rng, shape, n_ids, blocky=True):
    """Label image mixing blocks (long runs) and salt noise (runs of one voxel)."""
    coarse = rng.integers(0, n_ids, size=tuple(max(1, s // 4) for s in shape))
    labels = coarse.repeat(4, axis=0)
    for axis in range(1, len(shape)):
        labels = labels.repeat(4, axis=axis)
    labels = labels[tuple(slice(0, s) for s in shape)]
    labels = np.pad(labels, [(0, s - labels.shape[i]) for i, s in enumerate(shape)])
    noise = rng.random(shape) < (0.05 if blocky else 0.6)
    labels[noise] = rng.integers(0, n_ids, size=int(noise.sum()))
    return labels


@pytest.mark.parametrize("shape", [(37, 53), (9, 31, 22)])
def test_matches_skimage_and_brute_force_on_random_labels(shape):
    rng = np.random.default_rng(0)
    gt = _random_labels(rng, shape, 7)
    pred = _random_labels(rng, shape, 11, blocky=False)
    table = contingency_table(pred, gt)
    assert table.shape == shape
    assert table.n_voxels == gt.size
    expected = _skimage_dict(pred, gt)
    assert _as_dict(table) == expected == _brute_force(pred, gt)


def test_matches_skimage_on_synthetic_nuclei_with_many_slabs(monkeypatch):
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, (1, 3, -2), axis=(0, 1, 2))
    expected = _skimage_dict(pred, gt)
    # small slabs: the table is accumulated over many slabs along axis 0
    table = contingency_table(pred, gt, slab_voxels=5000)
    assert _as_dict(table) == expected
    assert _as_dict(contingency_table(pred, gt)) == expected
    # and merged every few slabs, as on huge volumes
    monkeypatch.setattr("napari_seglab.metrics.contingency.MERGE_PAIRS", 60)
    assert _as_dict(contingency_table(pred, gt, slab_voxels=5000)) == expected


def test_pairs_are_unique_and_sorted():
    rng = np.random.default_rng(1)
    gt = _random_labels(rng, (20, 40), 5)
    pred = _random_labels(rng, (20, 40), 5)
    table = contingency_table(pred, gt, slab_voxels=100)
    keys = list(zip(table.pred_ids.tolist(), table.gt_ids.tolist()))
    assert keys == sorted(set(keys))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, np.uint64])
def test_any_integer_dtype(dtype):
    rng = np.random.default_rng(2)
    gt = _random_labels(rng, (30, 30), 6)
    pred = _random_labels(rng, (30, 30), 6)
    expected = _brute_force(pred, gt)
    table = contingency_table(pred.astype(dtype), gt.astype(dtype))
    assert table.pred_ids.dtype == np.dtype(dtype)
    assert _as_dict(table) == expected


def test_huge_non_consecutive_uint64_ids_and_negative_ids():
    rng = np.random.default_rng(3)
    small = _random_labels(rng, (25, 40), 5)
    other = _random_labels(rng, (25, 40), 4)
    big_ids = np.array([0, 2**64 - 1, 2**63 + 7, 12345678901234, 3], dtype=np.uint64)
    neg_ids = np.array([0, -5, -(2**40), 17], dtype=np.int64)
    pred = big_ids[small]
    gt = neg_ids[other]
    table = contingency_table(pred, gt)
    expected = {
        (int(big_ids[a]), int(neg_ids[b])): c for (a, b), c in _brute_force(small, other).items()
    }
    assert _as_dict(table) == expected


def test_bool_inputs_count_like_zero_and_one():
    rng = np.random.default_rng(4)
    pred = rng.random((10, 12)) > 0.5
    gt = rng.random((10, 12)) > 0.3
    table = contingency_table(pred, gt)
    assert _as_dict(table) == _brute_force(pred.astype(int), gt.astype(int))


def test_chunked_dask_and_zarr_inputs_give_the_same_table():
    dask_array = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 2, axis=2)
    expected = _as_dict(contingency_table(pred, gt))
    lazy = contingency_table(
        dask_array.from_array(pred, chunks=(4, 64, 64)),
        dask_array.from_array(gt, chunks=(5, 128, 128)),
        slab_voxels=20000,
    )
    assert _as_dict(lazy) == expected
    stored_pred = zarr.create_array(
        store={}, shape=pred.shape, chunks=(3, 128, 128), dtype=pred.dtype
    )
    stored_pred[:] = pred
    stored_gt = zarr.create_array(store={}, shape=gt.shape, chunks=(3, 128, 128), dtype=gt.dtype)
    stored_gt[:] = gt
    assert _as_dict(contingency_table(stored_pred, stored_gt, slab_voxels=20000)) == expected


class _SliceOnly:
    """An array that only supports shape, dtype and slicing along axis 0 (counts reads)."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.largest_read = 0

    def __getitem__(self, index):
        piece = self._array[index]
        self.largest_read = max(self.largest_read, piece.size)
        return piece


def test_reads_slab_by_slab_never_the_whole_volume():
    sample = data.nuclei_3d()
    pred = _SliceOnly(np.roll(sample.labels, 1, axis=1))
    gt = _SliceOnly(sample.labels)
    table = contingency_table(pred, gt, slab_voxels=128 * 128 * 4)
    assert table.n_voxels == sample.labels.size
    plane = 128 * 128
    assert pred.largest_read <= 4 * plane
    assert gt.largest_read <= 4 * plane


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    pred = _random_labels(rng, (16, 16), 4)
    gt = _random_labels(rng, (16, 16), 4)
    before = pred.copy(), gt.copy()
    metrics.semantic(pred, gt)
    metrics.instances(pred, gt)
    metrics.per_slice(pred, gt)
    assert np.array_equal(pred, before[0])
    assert np.array_equal(gt, before[1])


def test_bad_inputs_name_expected_and_received():
    with pytest.raises(ValueError, match=r"same shape.*\(4, 5\).*\(4, 6\)"):
        contingency_table(np.zeros((4, 5), int), np.zeros((4, 6), int))
    with pytest.raises(ValueError, match=r"integer labels.*float32"):
        contingency_table(np.zeros((4, 5), np.float32), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match=r"array with \.shape"):
        contingency_table([[1, 2]], np.zeros((1, 2), int))
