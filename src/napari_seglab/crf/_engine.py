"""Mean-field inference of the dense CRF on one block, and over a tiled volume.

One block is one ``pydensecrf`` model: ``DenseCRF2D`` for 2D blocks (its own
Gaussian smoothness kernel, our bilateral features) and the general
``DenseCRF`` with explicit ``(z, y, x)`` features for 3D blocks. Volumes larger
than ``max_block_voxels`` are cut into blocks whose cores tile the volume and
which overlap by a margin of two kernel widths, so that each core sees its
neighbourhood; peak memory then depends on the block size, not the volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np

from ..jobs import CancelCheck, CancelLike, ProgressEvent, Stopwatch
from ._features import IntensityScaler, bilateral_features, gaussian_features
from ._params import CrfParameters

#: Probabilities are clipped to this minimum before taking ``-log``.
PROBABILITY_FLOOR = 1e-5

Slices = tuple[slice, ...]
ProbabilitySource = Callable[[Slices], np.ndarray]


@dataclass(frozen=True)
class CrfProgress(ProgressEvent):
    """Progress event yielded by the ``*_steps`` generators.

    Attributes
    ----------
    stage : str
        ``"refining"``.
    done, total : int
        Completed and total units of work (mean-field iterations summed over
        blocks or objects).
    elapsed : float
        Seconds since the job started.
    message : str
        What is being done, e.g. ``"block 2/4, iteration 3/5"``.
    """

    message: str = ""


@dataclass(frozen=True)
class Block:
    """One block of a tiled volume.

    Attributes
    ----------
    read : tuple of slice
        Region given to the CRF (core plus overlap), in volume coordinates.
    core : tuple of slice
        Region whose result is kept, in volume coordinates.
    core_in_read : tuple of slice
        ``core`` relative to ``read``.
    """

    read: Slices
    core: Slices
    core_in_read: Slices


def block_margin(
    params: CrfParameters, spacing: tuple[float, ...], widths: float = 2.0
) -> tuple[int, ...]:
    """Overlap per axis in voxels: ``widths`` times the widest active kernel."""
    sigma = 0.0
    if params.bilateral_weight > 0:
        sigma = max(sigma, params.spatial_sigma)
    if params.smoothness_weight > 0:
        sigma = max(sigma, params.smoothness_sigma)
    return tuple(math.ceil(widths * sigma / s) for s in spacing)


def plan_blocks(shape: tuple[int, ...], margin: tuple[int, ...], max_voxels: int) -> list[Block]:
    """Cut ``shape`` into blocks of at most ``max_voxels`` voxels, overlap included.

    The core of the axis with the largest core is halved until a core plus
    its margins fits; cores tile ``shape`` exactly.
    """
    core = list(shape)

    def read_size() -> int:
        return math.prod(min(c + 2 * m, n) for c, m, n in zip(core, margin, shape))

    while read_size() > max_voxels:
        axis = int(np.argmax(core))
        if core[axis] == 1:
            raise ValueError(
                f"Expected max_block_voxels large enough for the CRF kernel overlap "
                f"{margin} voxels per axis, got max_block_voxels={max_voxels}; raise it or use "
                "smaller kernel widths."
            )
        core[axis] = math.ceil(core[axis] / 2)
    starts = [range(0, n, c) for n, c in zip(shape, core)]
    blocks = []
    for origin in itertools.product(*starts):
        core_sl = tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, core, shape))
        read_sl = tuple(
            slice(max(s.start - m, 0), min(s.stop + m, n))
            for s, m, n in zip(core_sl, margin, shape)
        )
        inner = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core_sl, read_sl))
        blocks.append(Block(read_sl, core_sl, inner))
    return blocks


def _unary(probabilities: np.ndarray) -> np.ndarray:
    """``-log p`` as float32 ``(K, N)``, C-contiguous."""
    flat = np.asarray(probabilities, dtype=np.float32).reshape(probabilities.shape[0], -1)
    unary = np.clip(flat, PROBABILITY_FLOOR, 1.0)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    return np.ascontiguousarray(unary)


def block_marginals(
    intensities: np.ndarray,
    probabilities: np.ndarray,
    spacing: tuple[float, ...],
    params: CrfParameters,
    cancel: CancelLike = None,
) -> Generator[int, None, np.ndarray]:
    """Mean-field marginals of one block; yields after every iteration.

    Parameters
    ----------
    intensities : array, float32 ``(C, *spatial)``
        Normalised intensities in ``[0, 1]``.
    probabilities : array, float32 ``(K, *spatial)``
        Unary class probabilities, ``K >= 2``.
    spacing : tuple of float
        Voxel size per spatial axis.
    params : CrfParameters
        With resolved (non-``None``) sigmas.
    cancel : threading.Event, callable or CancelCheck, optional
        Checked before every iteration (:class:`~napari_seglab.jobs.CancelCheck`).

    Yields
    ------
    int
        Number of iterations done.

    Returns
    -------
    array, float32 ``(K, *spatial)``
        Marginal probabilities per class.

    Raises
    ------
    JobCancelled
        When ``cancel`` is set before an iteration.
    """
    import pydensecrf.densecrf as dcrf

    check = CancelCheck(cancel)
    shape = probabilities.shape[1:]
    n_classes = probabilities.shape[0]
    n_voxels = math.prod(shape)
    if len(shape) == 2:
        model = dcrf.DenseCRF2D(shape[1], shape[0], n_classes)
    else:
        model = dcrf.DenseCRF(n_voxels, n_classes)
    model.setUnaryEnergy(_unary(probabilities))
    if params.smoothness_weight > 0:
        if len(shape) == 2:
            sxy = (params.smoothness_sigma / spacing[1], params.smoothness_sigma / spacing[0])
            model.addPairwiseGaussian(sxy=sxy, compat=params.smoothness_weight)
        else:
            feats = gaussian_features(shape, spacing, params.smoothness_sigma)
            model.addPairwiseEnergy(feats, compat=params.smoothness_weight)
            del feats
    if params.bilateral_weight > 0:
        feats = bilateral_features(
            intensities, spacing, params.spatial_sigma, params.intensity_sigma
        )
        model.addPairwiseEnergy(feats, compat=params.bilateral_weight)
        del feats
    q, tmp1, tmp2 = model.startInference()
    for step in range(params.iterations):
        check.raise_if_set("CRF refinement")
        model.stepInference(q, tmp1, tmp2)
        yield step + 1
    return np.array(q, dtype=np.float32).reshape(n_classes, *shape)


def tiled_crf(
    channels: np.ndarray,
    scaler: IntensityScaler,
    probabilities_for: ProbabilitySource,
    out: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray],
    spacing: tuple[float, ...],
    params: CrfParameters,
    *,
    max_block_voxels: int,
    cancel: CancelLike = None,
    label: str = "",
    clock: Stopwatch | None = None,
) -> Iterator[CrfProgress]:
    """Run the CRF block by block and write ``reduce(marginals)`` of each core into ``out``.

    Parameters
    ----------
    channels : array ``(C, *spatial)``
        Raw image channels (normalised per block with ``scaler``).
    scaler : IntensityScaler
        Fitted on the whole image.
    probabilities_for : callable
        ``probabilities_for(read_slices) -> (K, *block)`` float32 unary probabilities.
    out : array ``(*spatial)``
        Receives ``reduce(marginals)[core]`` for each block.
    reduce : callable
        Maps marginals ``(K, *block)`` to one value per voxel ``(*block)``.
    spacing, params, max_block_voxels, cancel
        As in :func:`block_marginals` and :func:`plan_blocks`.
    label : str
        Prefix of progress messages.
    clock : Stopwatch, optional
        Started with the job, for the events' ``elapsed``; default: now.

    Yields
    ------
    CrfProgress
        After every iteration.

    Raises
    ------
    JobCancelled
        When ``cancel`` is set (``out`` is then partly written: callers own it
        and drop it).
    """
    clock = clock or Stopwatch()
    shape = out.shape
    blocks = plan_blocks(shape, block_margin(params, spacing), max_block_voxels)
    total = len(blocks) * params.iterations
    for index, block in enumerate(blocks):
        intensities = scaler.apply(channels[(slice(None), *block.read)])
        probabilities = probabilities_for(block.read)
        steps = block_marginals(intensities, probabilities, spacing, params, cancel)
        where = f"block {index + 1}/{len(blocks)}, " if len(blocks) > 1 else ""
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                marginals = stop.value
                break
            yield CrfProgress(
                "refining",
                index * params.iterations + step,
                total,
                clock.elapsed,
                message=f"{label}{where}iteration {step}/{params.iterations}",
            )
        out[block.core] = reduce(marginals)[block.core_in_read]
