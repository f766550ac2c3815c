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

__all__ = [
    "PendingObject",
    "PlanePrompts",
    "PredictionResult",
    "PropagationResult",
    "Writer",
    "prompts_from_json",
    "prompts_to_json",
]

#: Writes ``value`` at ``indices`` into the target labels (a widget passes an undoable writer);
#: ``value`` is one id, or an int array with one id per index (several objects in one write).
Writer = Callable[[tuple[np.ndarray, ...], Any], None]


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
    obj : int or None
        ``uid`` of the pending object it belongs to (None: the active one).
    """

    plane: int | None
    prediction: Any
    generation: int
    obj: int | None = None


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


@dataclass(eq=False)
class PendingObject:
    """One object being prompted, not yet written into the labels.

    Attributes
    ----------
    uid : int
        Unique within its session (never reused).
    class_id : int
        Its class in the session's class table (0: no class).
    prompts : dict of (int or None) to PlanePrompts
        Prompts per plane (key None on a 2D image).
    prediction : Prediction or None
        The proposals last computed for it.
    proposal : int
        The chosen proposal.
    plane : int or None
        The plane ``prediction`` lies on (None on a 2D image).
    changed_at : int
        Session generation of its last prompt change; older results are stale.
    resume_proposal : int or None
        The proposal chosen before a saved session was reopened, taken by its next prediction.
    """

    uid: int
    class_id: int = 0
    prompts: dict = field(default_factory=dict)
    prediction: Any = None
    proposal: int = 0
    plane: int | None = None
    changed_at: int = 0
    resume_proposal: int | None = None

    @property
    def has_prompts(self) -> bool:
        return bool(self.prompts)

    def mask(self) -> np.ndarray | None:
        """The chosen proposal ``(Y, X)`` bool, or None without a prediction."""
        return None if self.prediction is None else self.prediction.mask_at(self.proposal)


def prompts_to_json(prompts: dict) -> list[dict]:
    """Prompts per plane as JSON-able records ``{"plane", "points", "positive", "box"}``."""
    return [
        {
            "plane": None if plane is None else int(plane),
            "points": np.asarray(p.points, dtype=float).tolist(),
            "positive": np.asarray(p.positive, dtype=bool).tolist(),
            "box": None if p.box is None else np.asarray(p.box, dtype=float).tolist(),
        }
        for plane, p in prompts.items()
    ]


def prompts_from_json(records: list[dict]) -> dict:
    """The inverse of :func:`prompts_to_json`: ``{plane: PlanePrompts}``."""
    prompts = {}
    for record in records:
        points = np.asarray(record.get("points", []), dtype=float).reshape(-1, 2)
        positive = np.asarray(record.get("positive", [True] * len(points)), dtype=bool)
        if len(positive) != len(points):
            raise ValueError(
                f"Expected {len(points)} positive flags in a saved prompt, got {len(positive)}."
            )
        box = record.get("box")
        box = None if box is None else np.asarray(box, dtype=float).reshape(4)
        plane = record.get("plane")
        prompts[None if plane is None else int(plane)] = PlanePrompts(points, positive, box)
    return prompts
