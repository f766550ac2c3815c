"""Active learning: where is the model least sure?

:func:`suggest_slices` predicts the image, computes the predictive entropy
``H = -sum_c p_c log p_c`` per pixel (optionally of the mean over Monte-Carlo
dropout passes) and ranks planes of a 3D stack, or tiles of a 2D image, by
their mean entropy. Annotating the top suggestions first teaches the model
the most per stroke. :func:`suggest_events` is the same as a job (see
:mod:`napari_seglab.jobs`) yielding
:class:`~napari_seglab.unet.inference.PredictionProgress` over all passes.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..jobs import CancelCheck, run_to_end
from .inference import PredictionProgress, dropout_layers, predict_events, relay_progress
from .model import SegmentationModel


@dataclass(frozen=True)
class Suggestion:
    """One place to annotate next.

    Attributes
    ----------
    score : float
        Mean predictive entropy (nats; ``log(C)`` is the maximum).
    plane : int or None
        3D: index of the plane along ``axis``.
    axis : int or None
        3D: axis the plane is perpendicular to (0 = Z).
    box : tuple of int or None
        2D: tile ``(row0, col0, row1, col1)``, end exclusive.
    """

    score: float
    plane: int | None = None
    axis: int | None = None
    box: tuple[int, int, int, int] | None = None

    @property
    def center(self) -> tuple[float, ...]:
        """2D: tile centre ``(row, col)``; 3D: ``(plane,)``."""
        if self.box is not None:
            r0, c0, r1, c1 = self.box
            return ((r0 + r1) / 2.0, (c0 + c1) / 2.0)
        return (float(self.plane),)

    def describe(self) -> str:
        """Short text for lists, e.g. ``"plane 12 (entropy 0.41)"``."""
        if self.box is not None:
            r0, c0, r1, c1 = self.box
            return f"rows {r0}-{r1}, cols {c0}-{c1} (entropy {self.score:.3f})"
        return f"plane {self.plane} (entropy {self.score:.3f})"


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Per-pixel entropy ``-sum_c p log p`` of ``(C, *spatial)`` probabilities (float32)."""
    probs = np.asarray(probabilities, dtype=np.float32)
    out = np.zeros(probs.shape[1:], dtype=np.float32)
    for channel in probs:
        p = np.clip(channel, 1e-12, 1.0)
        out -= channel * np.log(p)
    return out


def require_dropout(model: SegmentationModel) -> None:
    """Raise ``ValueError`` unless ``model``'s network has dropout (for Monte-Carlo passes)."""
    if not dropout_layers(model.network):
        raise ValueError(
            "Monte-Carlo dropout needs a network with dropout: this model has none with p > 0. "
            "Train with network_kwargs={'dropout': 0.1} or use mc_dropout=0."
        )


def mc_dropout_events(
    model: SegmentationModel, image: np.ndarray, passes: int, *, cancel=None, **predict_kwargs
) -> Generator[PredictionProgress, None, np.ndarray]:
    """Mean probabilities ``(C, *spatial)`` over ``passes`` predictions with dropout active.

    A job: yields progress over all passes (``stage == "mc dropout"``) and
    raises :class:`~napari_seglab.jobs.JobCancelled` when ``cancel`` is set.

    Raises
    ------
    ValueError
        If the network has no dropout layer with ``p > 0``, or ``passes < 1``.
    """
    require_dropout(model)
    if passes < 1:
        raise ValueError(f"Expected at least one Monte-Carlo pass, got {passes}.")
    check = CancelCheck(cancel)
    mean = None
    for index in range(passes):
        events = predict_events(model, image, mc_dropout=True, cancel=check, **predict_kwargs)
        probs = yield from relay_progress(events, index, passes, "mc dropout")
        mean = probs if mean is None else mean + probs
    return mean / float(passes)


def mc_dropout_probabilities(
    model: SegmentationModel, image: np.ndarray, passes: int, **predict_kwargs
) -> np.ndarray:
    """:func:`mc_dropout_events` run to the end (same arguments)."""
    return run_to_end(mc_dropout_events(model, image, passes, **predict_kwargs))


def tile_grid(
    shape: Sequence[int], tile_size: Sequence[int], k: int = 1, *, shrink: bool = False
) -> list[tuple[int, int, int, int]]:
    """Tiles ``(row0, col0, row1, col1)`` (end exclusive) covering a ``(rows, cols)`` image.

    With ``shrink``, tiles are halved (the longer side first) until there are at
    least ``k`` of them or they are single pixels.
    """
    rows, cols = (int(n) for n in shape)
    tr, tc = (max(1, min(int(t), n)) for t, n in zip(tile_size, (rows, cols)))
    while shrink and math.ceil(rows / tr) * math.ceil(cols / tc) < k and (tr > 1 or tc > 1):
        if tr >= tc:
            tr = (tr + 1) // 2
        else:
            tc = (tc + 1) // 2
    return [
        (r0, c0, min(r0 + tr, rows), min(c0 + tc, cols))
        for r0 in range(0, rows, tr)
        for c0 in range(0, cols, tc)
    ]


def suggest_events(
    model: SegmentationModel,
    image: np.ndarray,
    k: int = 5,
    *,
    mc_dropout: int = 0,
    axis: int = 0,
    tile_size: Sequence[int] | None = None,
    exclude: Iterable[int] = (),
    probabilities: np.ndarray | None = None,
    cancel=None,
    **predict_kwargs,
) -> Generator[PredictionProgress, None, list[Suggestion]]:
    """:func:`suggest_slices` as a job: yields prediction progress, returns the suggestions.

    Raises :class:`~napari_seglab.jobs.JobCancelled` when ``cancel`` is set.
    """
    if k < 1:
        raise ValueError(f"Expected k >= 1, got {k}.")
    if mc_dropout < 0:
        raise ValueError(f"Expected mc_dropout >= 0, got {mc_dropout}.")
    if probabilities is None:
        if mc_dropout:
            probabilities = yield from mc_dropout_events(
                model, image, mc_dropout, cancel=cancel, **predict_kwargs
            )
        else:
            probabilities = yield from predict_events(
                model, image, cancel=cancel, **predict_kwargs
            )
    CancelCheck(cancel).raise_if_set("Suggesting")
    entropy = predictive_entropy(probabilities)
    if entropy.ndim == 3:
        if not 0 <= axis < 3:
            raise ValueError(f"Expected axis 0, 1 or 2 for a 3D stack, got {axis}.")
        other = tuple(a for a in range(3) if a != axis)
        scores = entropy.mean(axis=other)
        skip = {int(i) for i in exclude}
        order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in skip]
        return [Suggestion(float(scores[i]), plane=i, axis=axis) for i in order[:k]]
    tile = tile_size if tile_size is not None else model.patch_size[-2:]
    tiles = [
        (float(entropy[r0:r1, c0:c1].mean()), (r0, c0, r1, c1))
        for r0, c0, r1, c1 in tile_grid(entropy.shape, tile, k, shrink=tile_size is None)
    ]
    tiles.sort(key=lambda item: -item[0])
    return [Suggestion(score, box=box) for score, box in tiles[:k]]


def suggest_slices(
    model: SegmentationModel,
    image: np.ndarray,
    k: int = 5,
    *,
    mc_dropout: int = 0,
    axis: int = 0,
    tile_size: Sequence[int] | None = None,
    exclude: Iterable[int] = (),
    probabilities: np.ndarray | None = None,
    **predict_kwargs,
) -> list[Suggestion]:
    """Rank planes (3D) or tiles (2D) by mean predictive entropy, most uncertain first.

    Parameters
    ----------
    model : SegmentationModel
    image : array
        As for :func:`~napari_seglab.unet.inference.predict`.
    k : int
        Number of suggestions.
    mc_dropout : int
        Monte-Carlo dropout passes (0: one deterministic prediction).
    axis : int
        3D: rank planes perpendicular to this spatial axis (0 = Z).
    tile_size : (int, int), optional
        2D: tile size ``(rows, cols)``. Default the model's patch size, halved
        until the image holds at least ``k`` tiles.
    exclude : iterable of int
        3D: plane indices not to suggest (already annotated).
    probabilities : array ``(C, *spatial)``, optional
        Reuse an existing prediction instead of predicting again.
    **predict_kwargs
        Passed to :func:`predict` (``device``, ``overlap``, ``batch_size``,
        ``cancel``...).

    Returns
    -------
    list of Suggestion
        ``k``, in decreasing entropy; fewer only when there are fewer planes
        (or pixels, or tiles of an explicit ``tile_size``).

    Raises
    ------
    ValueError
        For ``k < 1``, a bad ``axis``, or ``mc_dropout`` on a model without dropout.
    """
    return run_to_end(
        suggest_events(
            model,
            image,
            k,
            mc_dropout=mc_dropout,
            axis=axis,
            tile_size=tile_size,
            exclude=exclude,
            probabilities=probabilities,
            **predict_kwargs,
        )
    )
