"""Active learning: where is the model least sure?

:func:`suggest_slices` predicts the image, computes the predictive entropy
``H = -sum_c p_c log p_c`` per pixel (optionally of the mean over Monte-Carlo
dropout passes) and ranks planes of a 3D stack, or tiles of a 2D image, by
their mean entropy. Annotating the top suggestions first teaches the model
the most per stroke.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .inference import dropout_layers, predict
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


def mc_dropout_probabilities(
    model: SegmentationModel, image: np.ndarray, passes: int, **predict_kwargs
) -> np.ndarray:
    """Mean probabilities over ``passes`` predictions with dropout active.

    Raises
    ------
    ValueError
        If the network has no dropout layer with ``p > 0``.
    """
    layers = dropout_layers(model.network)
    if not layers:
        raise ValueError(
            "Monte-Carlo dropout needs a network with dropout: this model has none with p > 0. "
            "Train with network_kwargs={'dropout': 0.1} or use mc_dropout=0."
        )
    mean = None
    for _ in range(passes):
        probs = predict(model, image, mc_dropout=True, **predict_kwargs)
        mean = probs if mean is None else mean + probs
    return mean / float(passes)


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
        2D: tile size ``(rows, cols)``; default the model's patch size.
    exclude : iterable of int
        3D: plane indices not to suggest (already annotated).
    probabilities : array ``(C, *spatial)``, optional
        Reuse an existing prediction instead of predicting again.
    **predict_kwargs
        Passed to :func:`predict` (``device``, ``overlap``, ``batch_size``...).

    Returns
    -------
    list of Suggestion
        At most ``k``, in decreasing entropy.
    """
    if k < 1:
        raise ValueError(f"Expected k >= 1, got {k}.")
    if mc_dropout < 0:
        raise ValueError(f"Expected mc_dropout >= 0, got {mc_dropout}.")
    if probabilities is None:
        if mc_dropout:
            probabilities = mc_dropout_probabilities(model, image, mc_dropout, **predict_kwargs)
        else:
            probabilities = predict(model, image, **predict_kwargs)
    entropy = predictive_entropy(probabilities)
    if entropy.ndim == 3:
        if not 0 <= axis < 3:
            raise ValueError(f"Expected axis 0, 1 or 2 for a 3D stack, got {axis}.")
        other = tuple(a for a in range(3) if a != axis)
        scores = entropy.mean(axis=other)
        skip = {int(i) for i in exclude}
        order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in skip]
        return [Suggestion(float(scores[i]), plane=i, axis=axis) for i in order[:k]]
    rows, cols = entropy.shape
    tr, tc = tile_size if tile_size is not None else model.patch_size[-2:]
    tr, tc = max(1, min(int(tr), rows)), max(1, min(int(tc), cols))
    tiles = []
    for r0 in range(0, rows, tr):
        for c0 in range(0, cols, tc):
            r1, c1 = min(r0 + tr, rows), min(c0 + tc, cols)
            tiles.append((float(entropy[r0:r1, c0:c1].mean()), (r0, c0, r1, c1)))
    tiles.sort(key=lambda item: -item[0])
    return [Suggestion(score, box=box) for score, box in tiles[:k]]
