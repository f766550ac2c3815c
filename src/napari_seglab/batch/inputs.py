"""What a batch run reads: files, folders, globs and list files, as named :class:`BatchItem` s.

:func:`collect_items` turns what a user types (``seglab batch predict MODEL
INPUT...``) into items:

=============================  ==================================================
INPUT                          Items
=============================  ==================================================
a file                         one item (any suffix of :data:`~napari_seglab.io.SUFFIXES`)
a ``.txt`` file                a list file: one INPUT per line (blank lines and
                               lines starting with ``#`` skipped; relative paths
                               are relative to the list file's folder)
a glob (``scans/*.nii.gz``)    every match, in name order (``**`` recurses)
a ``.zarr`` folder             one item (a zarr array or an OME-Zarr image)
a folder of DICOM files        one item (the series with most slices)
another folder                 its supported files, its ``.zarr`` stores and its
                               DICOM sub-folders (one level, name order; hidden
                               files and the report figure of a batch output
                               folder are skipped)
=============================  ==================================================

An item's name is its file name without the format suffix (``ct_001`` for
``ct_001.nii.gz``, ``cells`` for ``cells.ome.tif`` or ``cells.ome.zarr``), a
DICOM folder's name; outputs are named after it. The same path named twice is
one item; two different paths with the same name are refused.

:func:`pair_items` matches predictions with ground truth by name for the
``evaluate`` pipeline.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .pipeline import BatchItem

__all__ = ["LIST_SUFFIX", "collect_items", "item_name", "pair_items"]

#: Suffix of list files (one input per line).
LIST_SUFFIX = ".txt"
#: Format suffixes removed, longest first, to name an item.
_NAME_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".nii.gz", ".zarr")
#: Endings removed from prediction and ground-truth names when no exact name matches.
PREDICTION_ENDINGS = ("_labels", "_instances", "_prediction", "_pred", "_seg")
TRUTH_ENDINGS = ("_truth", "_gt", "_labels", "_seg", "_mask")
#: Files of a batch output folder that are never inputs.
_OWN_FILES = ("report.png",)


def item_name(path: str | os.PathLike) -> str:
    """The item name of ``path``: its name without the format suffix.

    ``.nii.gz``, ``.ome.tif``, ``.ome.tiff``, ``.ome.zarr`` and ``.zarr`` are
    removed whole; otherwise the last suffix (``Path.stem``). A folder without
    suffix (DICOM) keeps its name.

    Examples
    --------
    >>> item_name("scans/ct_001.nii.gz"), item_name("a.ome.tif"), item_name("b.tif")
    ('ct_001', 'a', 'b')
    """
    path = Path(path)
    name = path.name
    lower = name.lower()
    for suffix in _NAME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def collect_items(inputs: Sequence[str | os.PathLike], *, what: str = "input") -> list[BatchItem]:
    """The items named by ``inputs`` (files, folders, globs, list files), in order.

    Parameters
    ----------
    inputs : sequence of str or path-like
        What the user gave (see the module table).
    what : str
        What the inputs are, for error messages (``"input"``, ``"ground truth"``).

    Returns
    -------
    list of BatchItem
        One per input found, ``extra`` empty; a path named twice appears once.

    Raises
    ------
    FileNotFoundError
        A path that does not exist, or a glob that matches nothing.
    ValueError
        No inputs at all, a file of an unsupported format, a folder without
        supported files, or two inputs with the same name (both paths named).
    """
    paths: list[Path] = []
    for given in inputs:
        paths.extend(_expand(str(given), what=what, list_file=None))
    if not paths:
        raise ValueError(f"expected at least one {what}, got none")
    items: list[BatchItem] = []
    by_name: dict[str, Path] = {}
    seen: set[str] = set()
    for path in paths:
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            continue
        seen.add(key)
        name = item_name(path)
        if name in by_name:
            raise ValueError(
                f"two {what}s have the same name {name!r}: {str(by_name[name])!r} and "
                f"{str(path)!r}; outputs are named after the input, so rename one"
            )
        by_name[name] = path
        items.append(BatchItem(name=name, path=path))
    return items


def pair_items(
    predictions: Sequence[BatchItem], truths: Sequence[BatchItem], *, key: str = "truth"
) -> list[BatchItem]:
    """Attach to every prediction the ground truth with its name, as ``extra[key]``.

    A prediction named ``ct_001`` matches the ground truth ``ct_001``; when no
    name is equal, the names without one of the endings :data:`PREDICTION_ENDINGS`
    (``ct_001_labels``) and :data:`TRUTH_ENDINGS` (``ct_001_gt``) are compared.
    A prediction without a match keeps an empty ``extra`` (its item fails
    with an error naming what was looked for); ground truth without a
    prediction is not used.

    Raises
    ------
    ValueError
        Two ground-truth items that match the same name loosely
        (``a_gt`` and ``a_mask``), or no prediction matches any ground truth.
    """
    exact = {t.name: t for t in truths}
    loose: dict[str, BatchItem] = {}
    for truth in truths:
        stem = _strip(truth.name, TRUTH_ENDINGS)
        if stem in loose and loose[stem].path != truth.path:
            raise ValueError(
                f"two ground-truth files match the name {stem!r}: {str(loose[stem].path)!r} "
                f"and {str(truth.path)!r}"
            )
        loose[stem] = truth
    paired = []
    for pred in predictions:
        truth = exact.get(pred.name) or loose.get(_strip(pred.name, PREDICTION_ENDINGS))
        if truth is None:
            truth = loose.get(pred.name)
        extra = dict(pred.extra)
        if truth is not None:
            extra[key] = truth.path
        paired.append(BatchItem(pred.name, pred.path, extra))
    if truths and not any(key in item.extra for item in paired):
        names = ", ".join(sorted(exact)[:5])
        raise ValueError(
            f"no prediction matches a ground-truth name (ground truth: {names}"
            f"{', ...' if len(exact) > 5 else ''}); predictions are paired by name"
        )
    return paired


def _strip(name: str, endings: Iterable[str]) -> str:
    lower = name.lower()
    for ending in endings:
        if lower.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return name


def _expand(given: str, *, what: str, list_file: Path | None) -> list[Path]:
    """The input paths ``given`` stands for (see the module table)."""
    where = f" (listed in {str(list_file)!r})" if list_file is not None else ""
    path = Path(given).expanduser()
    if list_file is not None and not path.is_absolute():
        path = list_file.parent / path
    if not path.exists() and glob.has_magic(str(path)):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise FileNotFoundError(f"no {what} matches {given!r}{where}")
        found: list[Path] = []
        for match in matches:
            found.extend(_expand_path(Path(match), what=what, explicit=False))
        return found
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {str(path)!r} does not exist{where}")
    if path.is_file() and path.name.lower().endswith(LIST_SUFFIX):
        if list_file is not None:
            raise ValueError(f"list file {str(path)!r}{where}: list files cannot be nested")
        return _read_list(path, what=what)
    return _expand_path(path, what=what, explicit=True)


def _read_list(path: Path, *, what: str) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"could not read the list file {str(path)!r}: {exc}") from None
    found: list[Path] = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            found.extend(_expand(line, what=what, list_file=path))
    if not found:
        raise ValueError(f"the list file {str(path)!r} names no {what}")
    return found


def _expand_path(path: Path, *, what: str, explicit: bool) -> list[Path]:
    """One existing path: itself (a file, a store, a DICOM folder) or a folder's inputs."""
    from ..io.reader import format_of

    if path.is_file():
        if not explicit and path.name.lower().endswith(LIST_SUFFIX):
            return []  # globs never pick list files
        format_of(path, what=what)  # ValueError naming the supported formats
        return [path]
    if _is_store(path) or _is_dicom_folder(path):
        return [path]
    found: list[Path] = []
    own_output = (path / "manifest.json").is_file()
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file():
            if child.name.lower().endswith(LIST_SUFFIX):
                continue
            if own_output and child.name in _OWN_FILES:
                continue
            try:
                format_of(child, what=what)
            except ValueError:
                continue  # not an image: a folder may hold notes, CSV files, ...
            found.append(child)
        elif _is_store(child) or _is_dicom_folder(child):
            found.append(child)
    if not found and explicit:
        from ..io.reader import supported_formats

        raise ValueError(
            f"the folder {str(path)!r} holds no {what} files (expected {supported_formats()})"
        )
    return found


def _is_store(path: Path) -> bool:
    return path.is_dir() and path.name.lower().endswith(".zarr")


def _is_dicom_folder(path: Path) -> bool:
    from ..io.dicom import folder_has_dicom

    return path.is_dir() and folder_has_dicom(path)
