"""What a prompt file holds, once read: objects per image, and how they match the inputs.

Plain data for :mod:`.prompts` (which reads and checks prompt files) and the
``sam`` pipeline. Coordinates are napari's: points ``(row, col)``, boxes
``(row0, col0, row1, col1)``, on the plane :attr:`PromptObject.plane`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PromptMatch", "PromptObject", "PromptSet", "match_names"]


@dataclass(frozen=True, eq=False)
class PromptObject:
    """One object to segment: its prompts on one plane.

    Attributes
    ----------
    image, key : str
        Item name and the object's name within it (CSV ``object``; JSON: its index).
    points : float array ``(N, 2)``
        ``(row, col)`` of the points.
    positive : bool array ``(N,)``
        True for positive points, False for negative ones.
    box : float array ``(4,)`` or None
        ``(row0, col0, row1, col1)``.
    plane : int or None
        The plane prompted on a stack; None on a 2D image.
    label : int or None
        The id to write; None takes the next free id.
    where : str
        Where the object is defined (``"p.csv line 3"``, ``"p.json images['a'][0]"``).
    point_where : tuple of str
        Where each point is defined, in the order of :attr:`points`.
    box_where : str
        Where the box is defined ("" without a box).
    """

    image: str
    key: str
    points: np.ndarray
    positive: np.ndarray
    box: np.ndarray | None
    plane: int | None
    label: int | None
    where: str
    point_where: tuple[str, ...] = ()
    box_where: str = ""

    def predict_args(self) -> dict[str, Any]:
        """``points``, ``positive`` and ``box`` as a session's ``set_prompts`` takes them."""
        return {"points": self.points, "positive": self.positive, "box": self.box}


@dataclass(frozen=True, eq=False)
class PromptSet:
    """The objects of a prompt file, per image, in file order.

    Attributes
    ----------
    path : Path
    digest : str
        ``"sha256:<hex>"`` of the file's bytes (part of a pipeline's fingerprint).
    images : dict of str to tuple of PromptObject
    """

    path: Path
    digest: str
    images: dict[str, tuple[PromptObject, ...]] = field(default_factory=dict)

    def objects_for(self, name: str) -> tuple[PromptObject, ...]:
        """The objects of image ``name``.

        Raises
        ------
        ValueError
            The file has no prompts for ``name``.
        """
        objects = self.images.get(name)
        if not objects:
            raise ValueError(
                f"No prompts for the image {name!r} in {self.path}: add lines with "
                f"image={name!r} (the input's name without its suffix), or leave the input "
                "out of the run."
            )
        return objects

    def digest_for(self, name: str) -> str:
        """A hash of the prompts of image ``name`` alone (stable across unrelated edits)."""
        digest = hashlib.sha256()
        for obj in self.images.get(name, ()):
            digest.update(
                json.dumps(
                    [
                        obj.key,
                        obj.points.tolist(),
                        obj.positive.tolist(),
                        None if obj.box is None else obj.box.tolist(),
                        obj.plane,
                        obj.label,
                    ]
                ).encode()
            )
        return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class PromptMatch:
    """How a prompt file's images and the inputs of a run correspond.

    Attributes
    ----------
    unknown : list of str
        Images of the prompt file that are not among the inputs.
    unprompted : list of str
        Inputs that the prompt file does not mention.
    """

    unknown: list[str]
    unprompted: list[str]

    def describe(self, path: Path | str, names: Sequence[str] = ()) -> str:
        """One paragraph for the user ("" when everything matches)."""
        import difflib

        lines = []
        if self.unknown:
            shown = []
            for name in self.unknown[:10]:
                close = difflib.get_close_matches(name, list(names), n=1)
                shown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            more = f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else ""
            lines.append(
                f"{len(self.unknown)} image(s) of the prompt file {path} are not among the "
                f"inputs: {', '.join(shown)}{more}."
            )
        if self.unprompted:
            shown = ", ".join(repr(n) for n in self.unprompted[:10])
            more = f" and {len(self.unprompted) - 10} more" if len(self.unprompted) > 10 else ""
            lines.append(
                f"{len(self.unprompted)} input(s) have no prompts in {path} and will fail: "
                f"{shown}{more}."
            )
        return " ".join(lines)


def match_names(prompts: PromptSet, names: Iterable[str]) -> PromptMatch:
    """Compare the images of ``prompts`` with the item names of a run."""
    names = list(names)
    known = set(names)
    return PromptMatch(
        unknown=[n for n in prompts.images if n not in known],
        unprompted=[n for n in names if n not in prompts.images],
    )
