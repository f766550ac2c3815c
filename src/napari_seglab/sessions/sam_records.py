"""What a SAM prompting session stores and hands around: prompts, and job results.

Plain data, no behaviour beyond formatting prompts for
:meth:`~napari_seglab.sam.PromptSegmenter.predict`; the session that uses them
is :class:`~napari_seglab.sessions.SamPromptSession`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PlanePrompts", "PredictionResult", "PropagationResult", "Writer"]

#: Writes ``value`` at ``indices`` into the target labels (a widget passes an undoable writer).
Writer = Callable[[tuple[np.ndarray, ...], int], None]


@dataclass
class PlanePrompts:
    """The prompts on one plane.

    Attributes
    ----------
    points : float array ``(N, 2)``
        ``(row, col)`` pixel coordinates.
    positive : bool array ``(N,)``
        True for object, False for background points.
    box : float array ``(4,)`` or None
        ``(row0, col0, row1, col1)``.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    positive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    box: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None

    def predict_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`PromptSegmenter.predict` for these prompts.

        One point alone is ambiguous: three proposals. Several points or a box: one.
        """
        kwargs: dict[str, Any] = {}
        if len(self.points):
            kwargs["points"] = self.points
            kwargs["labels"] = self.positive.astype(int)
        if self.box is not None:
            kwargs["box"] = self.box
        kwargs["multimask"] = len(self.points) <= 1 and self.box is None
        return kwargs


@dataclass(frozen=True)
class PredictionResult:
    """What :meth:`SamPromptSession.prediction_job` returns, for :meth:`~SamPromptSession.accept`.

    Attributes
    ----------
    plane : int or None
        The plane prompted (None on a 2D image).
    prediction : Prediction or None
        None when the plane had no prompts.
    generation : int
        The prompt state it was computed for; stale results are dropped.
    """

    plane: int | None
    prediction: Any
    generation: int


@dataclass(frozen=True)
class PropagationResult:
    """What :meth:`SamPromptSession.propagation_job` returns.

    Attributes
    ----------
    volume : bool array ``(Z, Y, X)``
        The object through the stack.
    object_id : int
        The committed object to grow, or 0 for a new object.
    handle : object
        The labels the grown object lives in (as passed to :meth:`~SamPromptSession.commit`).
    """

    volume: np.ndarray
    object_id: int = 0
    handle: Any = None
