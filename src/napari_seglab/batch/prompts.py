"""Prompt files for ``seglab batch sam``: points and boxes per image, CSV or JSON.

A prompt file lists, per image, the objects to segment. Images are matched by
the batch item name, i.e. the input's stem (``cells_01`` for
``cells_01.tif``, ``ct_001`` for ``ct_001.nii.gz``, a DICOM folder's name).
Coordinates are napari's pixel coordinates: ``(row, col)`` on a 2D image and
``(plane, row, col)`` on a stack ``(Z, Y, X)``; a box is
``(row0, col0, row1, col1)`` on one plane. Each object is prompted on one
plane; with propagation the object is followed from there through the stack.

CSV
---
One prompt per line, with a header naming the columns (any order). Required:
``image``, ``object``, ``kind``, ``row``, ``col``; optional: ``plane``,
``row1``, ``col1``, ``label``. No other columns are accepted::

    image,object,kind,plane,row,col,row1,col1,label
    cells_01,1,positive,,120,64,,,
    cells_01,1,negative,,130,70,,,
    cells_01,2,box,,10,10,50,60,
    stack_02,nucleus,positive,12,80,64,,,5
    stack_02,nucleus,box,12,60,40,100,90,5

* ``image``: the item name; ``object``: any text naming the object within
  its image; the lines of one object (positive/negative points, at most one
  box) need not be adjacent. Objects are segmented in order of first mention.
* ``kind``: ``positive`` or ``negative`` (a point at ``row, col``) or ``box``
  (corners ``row, col`` and ``row1, col1``; ``row1``/``col1`` stay empty for
  points).
* ``plane``: the plane index, required on stacks, empty on 2D images; every
  line of an object names the same plane.
* ``label``: optional positive integer written for the object (several
  objects may share one, e.g. a class); without it the object gets the next
  free id (``max + 1``, above every label the file names for that image).

JSON
----
::

    {"images": {
        "cells_01": [
            {"positive": [[120, 64]], "negative": [[130, 70]]},
            {"box": [10, 10, 50, 60], "label": 7}
        ],
        "stack_02": [
            {"positive": [[12, 80, 64]], "box": [12, 60, 40, 100, 90]}
        ]
    }}

An object holds ``positive`` and/or ``negative`` point lists, an optional
``box`` and an optional ``label``; on a stack points are
``[plane, row, col]`` and the box ``[plane, row0, col0, row1, col1]``.

Validation
----------
:func:`read_prompts` refuses, naming the file, the line (CSV) or the JSON
location, and the value: unknown or missing columns or keys, unknown kinds,
values that are not numbers, NaN/Inf, negative coordinates, non-integer
planes or labels, an object without a positive point or a box, two boxes, an
object spread over several planes or given conflicting labels, an image
listed with no objects, an image named twice (JSON). Coordinates are checked
against each image's shape when it is read (:func:`check_prompts`): outside
the image, a plane on a 2D image, no plane on a stack. :func:`match_names`
tells the images of the file that are not among the inputs and the inputs
without prompts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .prompt_records import PromptMatch, PromptObject, PromptSet, match_names

__all__ = [
    "CSV_COLUMNS",
    "PromptMatch",
    "PromptObject",
    "PromptSet",
    "check_prompts",
    "match_names",
    "read_prompts",
]

#: Columns of a CSV prompt file: required ones first.
CSV_COLUMNS = ("image", "object", "kind", "row", "col", "plane", "row1", "col1", "label")
_REQUIRED = frozenset(CSV_COLUMNS[:5])
_KINDS = ("positive", "negative", "box")
_JSON_KEYS = ("positive", "negative", "box", "label")
_MAX_LABEL = 2**31 - 1


# -- reading --------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> PromptSet:
    """Read and validate a CSV (``.csv``) or JSON (``.json``) prompt file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    PromptSet

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Another suffix, or content that breaks a rule of the module docstring;
        the message names the file, the line (CSV) or JSON location, and the value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(
            f"Unsupported prompt file {path}: expected a .csv or .json file, got "
            f"{path.suffix or 'no suffix'!r}."
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}).") from None
    images = _parse_csv(path, text) if suffix == ".csv" else _parse_json(path, text)
    if not images:
        raise ValueError(f"{path}: the file holds no prompts.")
    return PromptSet(path, "sha256:" + hashlib.sha256(raw).hexdigest(), images)


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} must be a number, got {text!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} must be a finite number, got {text!r}.")
    if value < 0:
        raise ValueError(f"{where}: {what} must not be negative, got {text!r}.")
    return value


def _integer(text: Any, where: str, what: str, *, minimum: int) -> int:
    if isinstance(text, bool):
        raise ValueError(f"{where}: {what} must be an integer, got {text!r}.")
    if isinstance(text, int):
        value = text
    elif isinstance(text, float) and text.is_integer():
        value = int(text)
    else:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"{where}: {what} must be an integer, got {text!r}.") from None
    if not minimum <= value <= _MAX_LABEL:
        raise ValueError(f"{where}: {what} must be an integer >= {minimum}, got {text!r}.")
    return value


class _Builder:
    """Collects the prompts of one object while a file is read."""

    def __init__(self, image: str, key: str, where: str) -> None:
        self.image, self.key, self.where = image, key, where
        self.points: list[tuple[float, float]] = []
        self.positive: list[bool] = []
        self.point_where: list[str] = []
        self.box: tuple[float, ...] | None = None
        self.box_where = ""
        self.plane: int | None = None
        self.plane_where = ""
        self.label: int | None = None
        self.label_where = ""
        self.planes_seen = False

    def set_plane(self, plane: int | None, where: str) -> None:
        if not self.planes_seen:
            self.plane, self.plane_where, self.planes_seen = plane, where, True
        elif plane != self.plane:
            raise ValueError(
                f"{where}: object {self.key!r} of image {self.image!r} is prompted on plane "
                f"{_plane_text(self.plane)} at {self.plane_where} and on plane "
                f"{_plane_text(plane)} here; an object's prompts lie on one plane (propagation "
                "takes it through the stack)."
            )

    def set_label(self, label: int | None, where: str) -> None:
        if label is None:
            return
        if self.label is not None and label != self.label:
            raise ValueError(
                f"{where}: object {self.key!r} of image {self.image!r} has label {label} here "
                f"and {self.label} at {self.label_where}; give one label per object."
            )
        self.label, self.label_where = label, where

    def add_point(self, row: float, col: float, positive: bool, where: str) -> None:
        self.points.append((row, col))
        self.positive.append(positive)
        self.point_where.append(where)

    def set_box(self, box: tuple[float, ...], where: str) -> None:
        if self.box is not None:
            raise ValueError(
                f"{where}: object {self.key!r} of image {self.image!r} already has a box "
                f"({self.box_where}); an object takes at most one box."
            )
        self.box, self.box_where = box, where

    def build(self) -> PromptObject:
        if not any(self.positive) and self.box is None:
            raise ValueError(
                f"{self.where}: object {self.key!r} of image {self.image!r} has no positive "
                "point and no box; SAM needs at least one of them to find an object."
            )
        points = np.array(self.points, dtype=np.float64).reshape(-1, 2)
        return PromptObject(
            image=self.image,
            key=self.key,
            points=points,
            positive=np.array(self.positive, dtype=bool),
            box=None if self.box is None else np.array(self.box, dtype=np.float64),
            plane=self.plane,
            label=self.label,
            where=self.where,
            point_where=tuple(self.point_where),
            box_where=self.box_where,
        )


def _plane_text(plane: int | None) -> str:
    return "(none)" if plane is None else str(plane)


def _group(builders: dict[tuple[str, str], _Builder]) -> dict[str, tuple[PromptObject, ...]]:
    images: dict[str, list[PromptObject]] = {}
    for (image, _), builder in builders.items():
        images.setdefault(image, []).append(builder.build())
    return {image: tuple(objects) for image, objects in images.items()}


def _parse_csv(path: Path, text: str) -> dict[str, tuple[PromptObject, ...]]:
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    builders: dict[tuple[str, str], _Builder] = {}
    for cells in reader:
        line = reader.line_num
        where = f"{path} line {line}"
        if not any(c.strip() for c in cells):
            continue  # blank line
        if header is None:
            header = [c.strip().lower() for c in cells]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if unknown:
                raise ValueError(
                    f"{where}: unknown column(s) {unknown} in the header; expected "
                    f"{', '.join(CSV_COLUMNS)} (required: image, object, kind, row, col)."
                )
            missing = [c for c in CSV_COLUMNS if c in _REQUIRED and c not in header]
            if missing:
                raise ValueError(
                    f"{where}: the header lacks the column(s) {missing}; expected a header line "
                    f"like {','.join(CSV_COLUMNS)}."
                )
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise ValueError(f"{where}: column(s) {twice} appear twice in the header.")
            continue
        if len(cells) != len(header):
            raise ValueError(
                f"{where}: expected {len(header)} values ({','.join(header)}), got "
                f"{len(cells)}: {','.join(cells)!r}."
            )
        row = {name: cell.strip() for name, cell in zip(header, cells)}
        _csv_line(row, where, builders)
    if header is None:
        raise ValueError(f"{path}: the file is empty; expected a header line and prompts.")
    return _group(builders)


def _csv_line(row: dict[str, str], where: str, builders: dict[tuple[str, str], _Builder]) -> None:
    image, key, kind = row["image"], row["object"], row["kind"].lower()
    if not image:
        raise ValueError(f"{where}: the image name is empty.")
    if not key:
        raise ValueError(f"{where}: the object name is empty (name each object of an image).")
    if kind not in _KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(_KINDS)}, got {row['kind']!r}.")
    builder = builders.get((image, key))
    if builder is None:
        builder = builders[(image, key)] = _Builder(image, key, where)
    plane_text = row.get("plane", "")
    plane = None if plane_text == "" else _integer(plane_text, where, "plane", minimum=0)
    builder.set_plane(plane, where)
    label_text = row.get("label", "")
    if label_text != "":
        builder.set_label(_integer(label_text, where, "label", minimum=1), where)
    r0 = _number(row["row"], where, "row")
    c0 = _number(row["col"], where, "col")
    second = row.get("row1", ""), row.get("col1", "")
    if kind == "box":
        if "" in second:
            raise ValueError(
                f"{where}: a box needs row1 and col1 (its second corner), got "
                f"row1={second[0]!r}, col1={second[1]!r}."
            )
        r1 = _number(second[0], where, "row1")
        c1 = _number(second[1], where, "col1")
        builder.set_box((r0, c0, r1, c1), where)
    else:
        if second != ("", ""):
            raise ValueError(
                f"{where}: row1/col1 are for boxes only; a {kind} point takes row and col, got "
                f"row1={second[0]!r}, col1={second[1]!r}."
            )
        builder.add_point(r0, c0, kind == "positive", where)


def _parse_json(path: Path, text: str) -> dict[str, tuple[PromptObject, ...]]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"{path}: the key(s) {twice} appear twice in one JSON object.")
        return dict(items)

    try:
        document = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    if not isinstance(document, dict) or set(document) != {"images"}:
        got = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ValueError(
            f'{path}: expected an object {{"images": {{image name: [objects]}}}}, got {got}.'
        )
    images = document["images"]
    if not isinstance(images, dict):
        raise ValueError(
            f'{path}: "images" must map image names to lists of objects, got '
            f"{type(images).__name__}."
        )
    builders: dict[tuple[str, str], _Builder] = {}
    for image, objects in images.items():
        where_image = f"{path} images[{image!r}]"
        if not image.strip():
            raise ValueError(f"{where_image}: the image name is empty.")
        if not isinstance(objects, list):
            raise ValueError(
                f"{where_image}: expected a list of objects, got {type(objects).__name__}."
            )
        if not objects:
            raise ValueError(f"{where_image}: the image has no objects; remove it or add prompts.")
        for index, obj in enumerate(objects):
            where = f"{where_image}[{index}]"
            builders[(image, str(index))] = _json_object(image, str(index), obj, where)
    return _group(builders)


def _json_coords(value: Any, where: str, sizes: tuple[int, ...], what: str) -> list[float]:
    if not isinstance(value, list) or len(value) not in sizes:
        raise ValueError(f"{where}: expected {what}, got {value!r}.")
    numbers = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{where}: expected {what} of numbers, got {value!r}.")
        numbers.append(_number(v, where, "a coordinate"))
    return numbers


def _json_object(image: str, key: str, obj: Any, where: str) -> _Builder:
    if not isinstance(obj, dict):
        raise ValueError(
            f"{where}: expected an object with positive/negative/box/label, got {obj!r}."
        )
    unknown = [k for k in obj if k not in _JSON_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {', '.join(_JSON_KEYS)}.")
    builder = _Builder(image, key, where)
    dims: set[int] = set()
    for kind in ("positive", "negative"):
        points = obj.get(kind, [])
        if not isinstance(points, list):
            raise ValueError(f"{where}[{kind!r}]: expected a list of points, got {points!r}.")
        for i, point in enumerate(points):
            at = f"{where}[{kind!r}][{i}]"
            coords = _json_coords(point, at, (2, 3), "[row, col] or [plane, row, col]")
            dims.add(len(coords))
            plane = None
            if len(coords) == 3:
                plane = _integer(coords[0], at, "the plane", minimum=0)
            builder.set_plane(plane, at)
            builder.add_point(coords[-2], coords[-1], kind == "positive", at)
    if obj.get("box") is not None:
        at = f"{where}['box']"
        coords = _json_coords(
            obj["box"], at, (4, 5), "[row0, col0, row1, col1] or [plane, row0, col0, row1, col1]"
        )
        dims.add(len(coords) - 2)
        plane = _integer(coords[0], at, "the plane", minimum=0) if len(coords) == 5 else None
        builder.set_plane(plane, at)
        builder.set_box(tuple(coords[-4:]), at)
    if "label" in obj and obj["label"] is not None:
        builder.set_label(_integer(obj["label"], where, "label", minimum=1), where)
    if len(dims) > 1:
        raise ValueError(
            f"{where}: mixes 2D (row, col) and 3D (plane, row, col) coordinates; use one form."
        )
    return builder


# -- checking against an image ----------------------------------------------------------------
def check_prompts(
    objects: Sequence[PromptObject],
    plane_shape: tuple[int, int],
    n_planes: int | None,
    *,
    image: str = "",
) -> None:
    """Refuse prompts that do not fit the image they are for.

    Parameters
    ----------
    objects : sequence of PromptObject
    plane_shape : (int, int)
        ``(Y, X)`` of the image or of each plane.
    n_planes : int or None
        Planes of a stack ``(Z, Y, X)``; None for a 2D image.
    image : str
        The image's name, for messages.

    Raises
    ------
    ValueError
        A point or box corner outside ``0 <= row <= Y - 1``,
        ``0 <= col <= X - 1``; a plane outside the stack; a plane given for a
        2D image or missing on a stack. The message names where the value was
        given and the image's shape.
    """
    height, width = (int(n) for n in plane_shape)
    shape = plane_shape if n_planes is None else (n_planes, *plane_shape)
    what = f"the image {image!r} of shape {tuple(shape)}"
    for obj in objects:
        if n_planes is None and obj.plane is not None:
            raise ValueError(
                f"{obj.where}: plane {obj.plane} given for object {obj.key!r}, but {what} is 2D."
            )
        if n_planes is not None:
            if obj.plane is None:
                raise ValueError(
                    f"{obj.where}: object {obj.key!r} names no plane, but {what} is a stack of "
                    f"{n_planes} planes; give the plane its prompts lie on."
                )
            if obj.plane >= n_planes:
                raise ValueError(
                    f"{obj.where}: plane {obj.plane} of object {obj.key!r} is outside {what} "
                    f"(planes 0..{n_planes - 1})."
                )
        corners = [(p, w, "point") for p, w in zip(obj.points, obj.point_where)]
        if obj.box is not None:
            corners += [(obj.box[:2], obj.box_where, "box corner")]
            corners += [(obj.box[2:], obj.box_where, "box corner")]
        for (row, col), where, kind in corners:
            if not (0 <= row <= height - 1 and 0 <= col <= width - 1):
                raise ValueError(
                    f"{where}: {kind} (row {row:g}, col {col:g}) lies outside {what} "
                    f"(rows 0..{height - 1}, cols 0..{width - 1})."
                )
