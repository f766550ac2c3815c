"""Dense CRF refinement: our ``crf.refine`` / ``crf.refine_labels`` against bare pydensecrf2.

Results (``name: ours …, reference …, ratio …``):

* ``crf 2d 512x512 time``: ``refine`` (validation, percentile normalisation,
  features, 5 iterations, argmax) against a bare ``DenseCRF2D`` call with the
  same kernels and parameters (target ratio <= 1.1).
* ``crf 2d rgb time``: the same on an RGB image, against ``DenseCRF2D``'s
  own ``addPairwiseBilateral`` on the uint8 RGB image (no target).
* ``crf 3d … time`` / ``peak memory``: ``refine`` on a ``(64, 256, 256)`` stack,
  tiled with the default block size and untiled, against one bare whole-volume
  ``DenseCRF`` with the same features. Memory is the peak resident memory added
  while each runs, each measured in a fresh process.
* ``crf 3d per-object vs whole-volume``: ``refine_labels`` (one small CRF per
  object) on a sparse instance stack against the bare whole-volume CRF.

Usage: ``python benchmarks/bench_crf.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import statistics

import numpy as np

from _harness import arguments, median_time, peak_memory, report
from napari_seglab import crf, data
from napari_seglab.crf import CrfParameters
from napari_seglab.imaging import percentile_range

PARAMS = CrfParameters()


def bare_refine(image: np.ndarray, probs: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """The reference: pydensecrf2 called directly with the same kernels and parameters."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import (
        create_pairwise_bilateral,
        create_pairwise_gaussian,
        unary_from_softmax,
    )

    params = PARAMS.resolved(spacing)
    shape = probs.shape[1:]
    lo, hi = percentile_range(image)  # the same intensity scale as ours (no clipping)
    schan = (params.intensity_sigma * (hi - lo),)
    bilateral_sdims = [params.spatial_sigma / s for s in spacing]
    smooth_sdims = [params.smoothness_sigma / s for s in spacing]
    if len(shape) == 2:
        model = dcrf.DenseCRF2D(shape[1], shape[0], probs.shape[0])
        model.setUnaryEnergy(unary_from_softmax(probs))
        model.addPairwiseGaussian(sxy=smooth_sdims[::-1], compat=params.smoothness_weight)
    else:
        model = dcrf.DenseCRF(int(np.prod(shape)), probs.shape[0])
        model.setUnaryEnergy(unary_from_softmax(probs))
        model.addPairwiseEnergy(
            create_pairwise_gaussian(smooth_sdims, shape), compat=params.smoothness_weight
        )
    feats = create_pairwise_bilateral(bilateral_sdims, schan, image, chdim=-1)
    model.addPairwiseEnergy(feats, compat=params.bilateral_weight)
    q = np.array(model.inference(params.iterations))
    return q.argmax(axis=0).reshape(shape).astype(np.uint8)


def bare_refine_rgb(rgb: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Reference for RGB: ``DenseCRF2D.addPairwiseBilateral`` on the uint8 image."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    params = PARAMS.resolved((1.0, 1.0))
    model = dcrf.DenseCRF2D(rgb.shape[1], rgb.shape[0], probs.shape[0])
    model.setUnaryEnergy(unary_from_softmax(probs))
    model.addPairwiseGaussian(sxy=params.smoothness_sigma, compat=params.smoothness_weight)
    model.addPairwiseBilateral(
        sxy=params.spatial_sigma,
        srgb=params.intensity_sigma * 255.0,
        rgbim=np.ascontiguousarray(rgb),
        compat=params.bilateral_weight,
    )
    q = np.array(model.inference(params.iterations))
    return q.argmax(axis=0).reshape(rgb.shape[:2]).astype(np.uint8)


def interleaved_times(functions, rounds: int, warmup: bool = True) -> list[float]:
    """Median seconds of each function, run in turn every round (after one warm-up each).

    Alternating keeps a busy, shared machine from favouring either side.
    """
    if warmup:
        for function in functions:
            function()
    times = [[] for _ in functions]
    for _ in range(rounds):
        for function, seen in zip(functions, times):
            seen.append(median_time(function, repeats=1, warmup=0))
    return [statistics.median(seen) for seen in times]


def stack(shape: tuple[int, int, int], n_objects: int):
    sample = data.nuclei_3d(shape=shape, n_objects=n_objects, seed=1)
    probs = data.degrade_probabilities(sample.labels, spacing=sample.spacing, shift=(0, 2, 2))
    return sample, probs


def _memory_job(job: tuple) -> float:
    """Peak memory (MiB) of one 3D run, in a fresh process (see ``main``)."""
    kind, shape, n_objects = job
    sample, probs = stack(shape, n_objects)
    image, spacing = sample.image, sample.spacing
    grown = data.blobby_labels(sample.labels, grow=1.5, spacing=spacing)
    runs = {
        "bare": lambda: bare_refine(image, probs, spacing),
        "tiled": lambda: crf.refine(image, probs, spacing=spacing),
        "untiled": lambda: crf.refine(image, probs, spacing=spacing, max_block_voxels=2**40),
        "objects": lambda: crf.refine_labels(image, grown, spacing=spacing),
    }
    return peak_memory(runs[kind])


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    side = 256 if args.quick else 512
    repeats = 3 if args.quick else 11

    # 2D, two classes, five iterations
    sample = data.nuclei_2d(shape=(side, side), n_objects=side * side // 1600, seed=1)
    probs = data.degrade_probabilities(sample.labels)
    ours = crf.refine(sample.image, probs)
    reference = bare_refine(sample.image, probs, (1.0, 1.0))
    agree = float((ours == reference).mean())
    t_ours, t_ref = interleaved_times(
        [
            lambda: crf.refine(sample.image, probs),
            lambda: bare_refine(sample.image, probs, (1.0, 1.0)),
        ],
        repeats,
    )
    report(
        f"crf 2d {side}x{side} time",
        t_ours,
        t_ref,
        target=1.1,
        note=f"2 classes, 5 iterations, {agree:.2%} pixels equal to the bare call",
    )
    norm = (sample.image - sample.image.min()) / np.ptp(sample.image)
    rgb = (np.stack([norm, norm**0.8, norm**1.2], axis=-1) * 255).astype(np.uint8)
    t_ours, t_ref = interleaved_times(
        [lambda: crf.refine(rgb, probs), lambda: bare_refine_rgb(rgb, probs)], repeats
    )
    report(f"crf 2d {side}x{side} rgb time", t_ours, t_ref, note="vs addPairwiseBilateral")

    # 3D stack: time and memory, tiled (default) and untiled, against the bare whole volume
    shape = (32, 128, 128) if args.quick else (64, 256, 256)
    sample, probs = stack(shape, 40 if args.quick else 120)
    image, spacing = sample.image, sample.spacing
    blocks = len(
        crf.plan_blocks(
            shape,
            crf._engine.block_margin(PARAMS.resolved(spacing), spacing),
            crf._params.DEFAULT_MAX_BLOCK_VOXELS,
        )
    )
    repeats3 = 1 if args.quick else 3
    t_ref, t_tiled, t_whole = interleaved_times(
        [
            lambda: bare_refine(image, probs, spacing),
            lambda: crf.refine(image, probs, spacing=spacing),
            lambda: crf.refine(image, probs, spacing=spacing, max_block_voxels=2**40),
        ],
        repeats3,
        warmup=False,
    )
    name = "x".join(map(str, shape))
    report(f"crf 3d {name} time (tiled)", t_tiled, t_ref, note=f"{blocks} blocks")
    report(f"crf 3d {name} time (untiled)", t_whole, t_ref)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        mem = {
            kind: pool.apply(_memory_job, ((kind, shape, 40 if args.quick else 120),))
            for kind in ("bare", "tiled", "untiled")
        }
    report(
        f"crf 3d {name} peak memory (tiled)",
        mem["tiled"],
        mem["bare"],
        unit="MiB",
        note=f"default max_block_voxels={crf._params.DEFAULT_MAX_BLOCK_VOXELS}",
    )
    report(f"crf 3d {name} peak memory (untiled)", mem["untiled"], mem["bare"], unit="MiB")

    # sparse instances: one small CRF per object against the whole volume
    sparse_objects = 4 if args.quick else 8
    sample, probs = stack(shape, sparse_objects)
    image, spacing = sample.image, sample.spacing
    grown = data.blobby_labels(sample.labels, grow=1.5, spacing=spacing)
    fraction = float((grown > 0).mean())
    t_obj, t_ref = interleaved_times(
        [
            lambda: crf.refine_labels(image, grown, spacing=spacing),
            lambda: bare_refine(image, probs, spacing),
        ],
        repeats3,
    )
    report(
        f"crf 3d {name} per-object vs whole-volume time",
        t_obj,
        t_ref,
        target=0.5,
        note=f"{int(grown.max())} objects, {fraction:.1%} of voxels",
    )
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        m_obj = pool.apply(_memory_job, (("objects", shape, sparse_objects),))
        m_ref = pool.apply(_memory_job, (("bare", shape, sparse_objects),))
    report(f"crf 3d {name} per-object vs whole-volume peak memory", m_obj, m_ref, unit="MiB")


if __name__ == "__main__":
    main()
