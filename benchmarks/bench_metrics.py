"""Evaluation metrics: instance matching and semantic Dice against references, same run.

Requirements (issue 6):

* instance matching on a ``(128, 512, 512)`` volume with about 10,000 objects:
  at least 20x faster than a dense contingency table + assignment solver over
  the whole IoU matrix (stardist/cellpose-style ``matching``), and within 5x of
  a single ``np.bincount`` pass over the same voxels; peak memory reported;
* semantic Dice/IoU on ``(256, 512, 512)``: within 3x of one pass over the data
  (a single ``np.bincount`` of the ground truth).

Requirement (issue 11): the surface metrics (HD95, ASSD, surface Dice) faster
than MONAI's ``compute_hausdorff_distance``, ``compute_average_surface_distance``
and ``compute_surface_dice`` on the same masks (their agreement to 1e-6 is
checked here and in ``tests/core/test_metrics_surface.py``).

``--quick`` runs the same comparisons on small volumes (a smoke run);
``--surface`` runs only the surface comparison.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import astuple
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _harness import median_time, python_peak_memory, report
from napari_seglab import metrics


def touching_cells(shape, n_objects, radius, seed=0):
    """Instance labels: ``n_objects`` Voronoi cells cut to a ball of ``radius`` (z spacing 2)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.int32)
    where = tuple(rng.integers(0, s, n_objects) for s in shape)
    seeds[where] = np.arange(1, n_objects + 1, dtype=np.int32)
    distance, nearest = ndi.distance_transform_edt(
        seeds == 0, sampling=(2.0, 1.0, 1.0), return_indices=True
    )
    labels = seeds[tuple(nearest)]
    del nearest
    labels[distance > radius] = 0
    return labels


def imperfect_prediction(gt, seed=1):
    """Shift by one voxel in y and x, drop 3% of objects, merge 3% of neighbours, relabel."""
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, (1, 1), axis=(1, 2))
    n = int(gt.max())
    lut = np.arange(n + 1, dtype=np.int64)
    lut[rng.choice(np.arange(1, n + 1), n // 33, replace=False)] = 0  # dropped
    merged = rng.choice(np.arange(2, n + 1), n // 33, replace=False)
    lut[merged] = lut[merged - 1]  # merged with the previous id
    shuffled = np.zeros(n + 1, dtype=np.int64)
    shuffled[1:] = rng.permutation(n) + 1
    lut = shuffled[lut]
    return lut.astype(np.int32)[pred]


def dense_matching(pred, gt, threshold=0.5):
    """Reference: dense (N+1) x (M+1) overlap table, dense IoU, one global assignment."""
    from skimage.segmentation import relabel_sequential

    pred = relabel_sequential(pred)[0]
    gt = relabel_sequential(gt)[0]
    n, m = int(pred.max()) + 1, int(gt.max()) + 1
    key = pred.ravel().astype(np.int64) * m + gt.ravel()
    overlap = np.bincount(key, minlength=n * m).reshape(n, m)
    del key
    size_pred = overlap.sum(axis=1, keepdims=True)
    size_gt = overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(size_pred + size_gt - overlap, 1)
    del overlap
    iou = iou[1:, 1:]
    # stardist's cost: most matches first, then the largest IoU (built in place)
    cost = iou / (-2.0 * min(iou.shape))
    cost -= iou >= threshold
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero(iou[rows, cols] >= threshold))


def bench_instances(shape, n_objects, radius, repeats, targets=True):
    gt = touching_cells(shape, n_objects, radius)
    pred = imperfect_prediction(gt)
    n_found = len(np.unique(gt)) - 1
    print(
        f"# instance volume {shape}, {n_found} objects, {np.mean(gt > 0):.0%} foreground",
        flush=True,
    )

    def ours():
        return metrics.instances(pred, gt, iou_threshold=0.5, thresholds=())

    result = ours()
    tp_reference = dense_matching(pred, gt, 0.5)
    if result["tp"] != tp_reference:
        raise RuntimeError(f"TP differs: ours {result['tp']}, reference {tp_reference}")
    t_ours = median_time(ours, repeats=repeats)
    t_dense = median_time(lambda: dense_matching(pred, gt, 0.5), repeats=1, warmup=0)
    t_bincount = median_time(lambda: np.bincount(gt.ravel()), repeats=repeats)
    report(
        "instance matching vs dense table + solver",
        t_ours,
        t_dense,
        target=1 / 20 if targets else None,
        note=f"speed-up {t_dense / t_ours:.1f}x",
    )
    report(
        "instance matching vs one np.bincount pass",
        t_ours,
        t_bincount,
        target=5 if targets else None,
    )
    report(
        "instance matching peak memory vs dense table + solver",
        python_peak_memory(ours),
        python_peak_memory(lambda: dense_matching(pred, gt, 0.5)),
        unit="MiB",
    )
    report(
        "instance matching peak memory vs input volumes",
        python_peak_memory(ours),
        (pred.nbytes + gt.nbytes) / 2**20,
        unit="MiB",
        note="numpy allocations (tracemalloc) vs the bytes of both inputs",
    )
    t_all = median_time(lambda: metrics.instances(pred, gt), repeats=repeats)
    report(
        "instances incl. 10 thresholds vs one threshold",
        t_all,
        t_ours,
        note="per-threshold list reuses the contingency table",
    )


def bench_semantic(shape, repeats, targets=True):
    rng = np.random.default_rng(2)
    coarse = rng.integers(0, 4, size=tuple(max(1, s // 16) for s in shape)).astype(np.uint8)
    gt = ndi.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=0)[
        tuple(slice(0, s) for s in shape)
    ]
    pred = np.roll(gt, 3, axis=2)
    print(f"# semantic volume {gt.shape}, classes {np.unique(gt).tolist()}", flush=True)

    def ours():
        return metrics.semantic(pred, gt, surface=False)

    scores = ours()
    confusion = np.bincount(pred.ravel().astype(np.intp) * 4 + gt.ravel(), minlength=16)
    confusion = confusion.reshape(4, 4)
    for c in (1, 2, 3):
        dice = 2 * confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum())
        if not np.isclose(scores[c]["dice"], dice, rtol=1e-12):
            raise RuntimeError(f"Dice of class {c} differs: {scores[c]['dice']} vs {dice}")
    t_ours = median_time(ours, repeats=repeats)
    t_pass = median_time(lambda: np.bincount(gt.ravel()), repeats=repeats)
    t_equal = median_time(lambda: np.count_nonzero(pred == gt), repeats=repeats)
    report(
        "semantic Dice/IoU vs one np.bincount pass",
        t_ours,
        t_pass,
        target=3 if targets else None,
    )
    report(
        "semantic Dice/IoU vs one elementwise comparison",
        t_ours,
        t_equal,
        note="uint8 pred == gt, the cheapest conceivable pass",
    )
    report(
        "semantic Dice/IoU vs dense confusion-matrix bincount",
        t_ours,
        median_time(
            lambda: np.bincount(pred.ravel().astype(np.intp) * 4 + gt.ravel(), minlength=16),
            repeats=repeats,
        ),
        note="the usual numpy implementation",
    )
    report("semantic Dice/IoU peak memory vs input volumes", python_peak_memory(ours),
           (pred.nbytes + gt.nbytes) / 2**20, unit="MiB")  # fmt: skip


def bench_surface(shape, spacing, repeats):
    """HD95, ASSD and surface Dice of one object: ours against MONAI, same masks, same run.

    References: MONAI's three public functions (what a user calls for the same
    three numbers), and MONAI's shared core alone (one ``get_edge_surface_distance``
    call: edges plus both directions' distances, before any percentile or mean).
    """
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )
    from monai.metrics.utils import get_edge_surface_distance

    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(shape) / 2
    radii = np.array(shape) / 3
    gt = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    del grid
    pred = np.roll(gt, 2, axis=1)
    tolerance = 1.37
    print(f"# surface {shape}, spacing {spacing}, {np.count_nonzero(gt)} voxels", flush=True)

    def ours():
        return metrics.surface_scores(pred, gt, spacing, tolerance)

    def monai():
        y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
        y = torch.from_numpy(gt[None, None].astype(np.float32))
        common = {"include_background": True, "spacing": spacing}
        return (
            float(compute_hausdorff_distance(y_pred, y, percentile=95, **common)[0, 0]),
            float(compute_average_surface_distance(y_pred, y, symmetric=True, **common)[0, 0]),
            float(compute_surface_dice(y_pred, y, [tolerance], **common)[0, 0]),
        )

    def monai_core():
        pair = torch.from_numpy(pred), torch.from_numpy(gt)
        return get_edge_surface_distance(*pair, spacing=spacing, symmetric=True)

    found, expected = ours(), monai()
    for name, a, b in zip(("HD95", "ASSD", "NSD"), astuple(found), expected):
        if not np.isclose(a, b, rtol=1e-6, atol=1e-6):
            raise RuntimeError(f"{name} differs: ours {a}, MONAI {b}")
    t_ours = median_time(ours, repeats=repeats)
    report(
        f"surface HD95+ASSD+NSD vs MONAI's 3 functions {shape}",
        t_ours,
        median_time(monai, repeats=repeats),
        target=1,
    )
    report(
        f"surface HD95+ASSD+NSD vs MONAI edges+distances once {shape}",
        t_ours,
        median_time(monai_core, repeats=repeats),
        note="MONAI's shared core: get_edge_surface_distance(symmetric=True)",
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--surface", action="store_true", help="only the surface metrics")
    return parser.parse_args()


def main() -> int:
    warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
    args = _arguments()
    if args.quick:
        # smoke run: the targets apply to the full sizes only
        if not args.surface:
            bench_instances((32, 128, 128), 600, 9.0, repeats=3, targets=False)
            bench_semantic((64, 128, 128), repeats=3, targets=False)
        bench_surface((256, 256), (0.7, 1.3), repeats=3)
        bench_surface((24, 64, 64), (2.0, 0.5, 0.5), repeats=3)
    else:
        if not args.surface:
            bench_instances((128, 512, 512), 10_000, 9.0, repeats=5)
            bench_semantic((256, 512, 512), repeats=5)
        bench_surface((1024, 1024), (0.7, 1.3), repeats=5)
        bench_surface((64, 192, 192), (2.0, 0.5, 0.5), repeats=5)
        bench_surface((128, 384, 384), (2.0, 0.5, 0.5), repeats=3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
