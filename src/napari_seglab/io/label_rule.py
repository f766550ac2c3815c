"""Labels or image: the rule that decides how an integer volume opens.

A volume opens as *labels* when its NIfTI intent says so
(:data:`LABEL_INTENTS`); or when its voxels are integers stored without
intensity scaling, none negative, and either its file name says labels
(:func:`name_says_labels`, at most :data:`MAX_LABEL_VALUES` distinct values) or
it has at most :data:`MAX_UNNAMED_LABEL_VALUES` distinct values. An 8-bit MRI
or a ``uint8`` probability map has far more, so it opens as an image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LABEL_INTENTS",
    "LABEL_NAME_WORDS",
    "MAX_LABEL_VALUES",
    "MAX_UNNAMED_LABEL_VALUES",
    "count_distinct",
    "is_integral",
    "label_decision",
    "name_says_labels",
]

#: Integer files named like labels open as labels with at most this many distinct values.
MAX_LABEL_VALUES = 256

#: Integer files whose name says nothing open as labels only with at most this many values.
MAX_UNNAMED_LABEL_VALUES = 64

#: Words in a file name that mark a label map (matched between separators).
# fmt: off
LABEL_NAME_WORDS = frozenset((
    "seg", "dseg", "aseg", "aparc", "parc", "segmentation", "segmentations", "label",
    "labels", "labelmap", "mask", "masks", "atlas", "annotation", "annotations", "gt",
))
# fmt: on

#: Voxels per chunk when counting distinct values (bounded extra memory).
_CHUNK = 1 << 22

#: NIfTI intent codes meaning "this is a label map".
LABEL_INTENTS = {1002: "label", 1003: "neuroname"}


def is_integral(values: np.ndarray) -> bool:
    """True when every value is finite and a whole number (labels stored as floats)."""
    return bool(np.all(np.isfinite(values)) and np.array_equal(values, np.round(values)))


def label_decision(
    raw: np.ndarray, header: Any, *, scaled: bool, name: str = ""
) -> tuple[bool, str]:
    """Decide whether stored voxels ``raw`` are a label map; returns ``(is_label, reason)``.

    Labels when the intent code is ``label``/``neuroname`` (and the values are
    integers), or when ``raw`` has an integer dtype, is not intensity-scaled,
    has no negative value and at most :data:`MAX_LABEL_VALUES` distinct values
    if the file ``name`` says labels (:func:`name_says_labels`), else at most
    :data:`MAX_UNNAMED_LABEL_VALUES`.
    """
    intent = int(header["intent_code"])
    if intent in LABEL_INTENTS:
        if np.issubdtype(raw.dtype, np.integer) or is_integral(raw):
            return True, f"intent code {intent} ({LABEL_INTENTS[intent]})"
        return False, f"intent {LABEL_INTENTS[intent]} but non-integer voxel values"
    if not np.issubdtype(raw.dtype, np.integer):
        return False, f"{raw.dtype} voxels"
    if scaled:
        return False, "integer voxels with intensity scaling (scl_slope/scl_inter)"
    if raw.min() < 0:
        return False, "integer voxels with negative values"
    named = name_says_labels(name)
    limit = MAX_LABEL_VALUES if named else MAX_UNNAMED_LABEL_VALUES
    why = f"a file name that says labels ({name!r})" if named else "a file name without a hint"
    top = int(raw.max())
    if top < limit:  # values in 0..top: at most top + 1 <= limit distinct, no need to count
        return True, f"non-negative integer voxels up to {top} and {why}"
    count = count_distinct(raw, limit=limit)
    if count > limit:
        return False, f"more than {limit} distinct integer values with {why}"
    return True, f"non-negative integer voxels with {count} distinct values and {why}"


def name_says_labels(name: str) -> bool:
    """True when a file name marks a label map (a word of :data:`LABEL_NAME_WORDS`).

    Words are split at ``_``, ``-``, ``.`` and spaces and compared without case:
    ``sub-01_dseg.nii.gz``, ``liver_mask.nii``, ``aseg.nii.gz`` and
    ``ct-labels.nii.gz`` say labels; ``t1_mprage.nii.gz`` and ``segue.nii`` do not.
    """
    stem = Path(name).name.lower()
    for suffix in (".nii.gz", ".nii"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return any(word in LABEL_NAME_WORDS for word in re.split(r"[_\-. ]+", stem))


def count_distinct(values: np.ndarray, *, limit: int) -> int:
    """Number of distinct values of non-negative integer ``values``, or ``limit + 1`` if more.

    A strided sample rejects many-valued images first; then one pass in chunks
    of :data:`_CHUNK` voxels (histogram for values below 2**20, sorted unique
    otherwise) counts exactly, stopping as soon as ``limit`` is exceeded.
    Memory stays at a few chunk-sized buffers whatever the volume size.
    """
    flat = values.ravel(order="K")  # no copy for C- or Fortran-ordered arrays
    if flat.size == 0:
        return 0
    sample = flat[:: max(1, flat.size // 100_000)]
    if len(np.unique(sample)) > limit:
        return limit + 1
    top = int(flat.max())
    if top < 2**20:
        present = np.zeros(top + 1, dtype=bool)
        for start in range(0, flat.size, _CHUNK):
            present |= np.bincount(flat[start : start + _CHUNK], minlength=top + 1) > 0
        return int(np.count_nonzero(present))
    seen = np.empty(0, dtype=flat.dtype)
    for start in range(0, flat.size, _CHUNK):
        seen = np.union1d(seen, flat[start : start + _CHUNK])
        if seen.size > limit:
            return limit + 1
    return int(seen.size)
