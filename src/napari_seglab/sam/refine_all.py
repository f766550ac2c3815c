"""Refine every object of a label image with SAM; keep only the refinements the user accepts.

:func:`refine_all_job` is a job (:mod:`napari_seglab.jobs`): it yields a
:class:`RefineStep` per object and plane and returns a :class:`RefineResult`;
:func:`refine_all` runs it to the end. Each object is refined by
:func:`.refine.refine_object` (its mask as mask prompt, its grown box, a
positive point at its most interior pixel) on its own plane's embedding.

Rules, in order:

1. **Acceptance.** A refinement is accepted where SAM's score is at least
   ``min_score`` *and* its IoU with the original object is at least
   ``min_overlap``; otherwise the object is left exactly as it was, byte for
   byte. A stack ``(Z, Y, X)`` is refined plane by plane (each plane where an
   object appears refined on its own embedding) or, with
   ``through="propagation"``, from the object's largest plane through its
   other planes (:mod:`.refine_stack`); either way each plane is a separate
   refinement, accepted or not on its own.
2. **Other objects are never eaten.** A refined object only takes pixels that
   were background (0) in the input labels or its own; pixels of another
   object stay that object's whatever SAM says. Pixels an object loses become
   background.
3. **Contested background.** A background pixel claimed by two or more
   accepted refinements on the same plane stays background (no order
   between objects decides), so the result does not depend on the order of
   the ids; :attr:`ObjectRecord.contested` counts them.
4. **Ids are kept** and the input labels are never modified: the result holds
   a new array, one :class:`ObjectRecord` per object and plane, and the
   changes per object (:class:`LabelChange`, indices into the label array and
   the values to write there) so that a viewer can write only the changed
   pixels through its undo history.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..jobs import CancelCheck, CancelLike, Stopwatch, run_to_end
from .image import SamInput
from .mask_prompts import DEFAULT_BOX_MARGIN
from .refine import (
    LabelChange,
    RefineStep,
    check_labels,
    label_change,
    outcome,
    refine_object,
)
from .refine_stack import propagated_refinements

#: How a stack is refined (see :func:`refine_all_job`).
THROUGH = ("planes", "propagation")

__all__ = [
    "THROUGH",
    "LabelChange",
    "ObjectRecord",
    "RefineResult",
    "RefineStep",
    "refine_all",
    "refine_all_job",
]


@dataclass(frozen=True)
class ObjectRecord:
    """What happened to one object (on one plane of a stack).

    Attributes
    ----------
    object_id : int
    plane : int or None
    accepted : bool
    score : float
        SAM's predicted IoU of the refined mask.
    overlap : float
        IoU of the refined mask (other objects' pixels taken out) with the original.
    pixels_added, pixels_removed : int
        Pixels written with the object's id / set to background (0 when rejected).
    contested : int
        Background pixels this object's refinement claimed that another
        accepted refinement claimed too (left background).
    reason : str
        ``"accepted"``, ``"score below min_score"``, ``"overlap below min_overlap"``
        (both joined by ``"; "`` when both apply) or ``"empty mask"``.
    """

    object_id: int
    plane: int | None
    accepted: bool
    score: float
    overlap: float
    pixels_added: int
    pixels_removed: int
    contested: int
    reason: str

    @property
    def pixels_changed(self) -> int:
        """Pixels whose value changes: added plus removed."""
        return self.pixels_added + self.pixels_removed

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a table (``plane`` is ``""`` for 2D), with ``pixels_changed``."""
        row = asdict(self)
        row["plane"] = "" if self.plane is None else self.plane
        row["pixels_changed"] = self.pixels_changed
        return row


@dataclass
class RefineResult:
    """The outcome of :func:`refine_all`.

    Attributes
    ----------
    labels : int array, the input's shape and dtype
        A new label array with the accepted refinements (the input is untouched).
    records : list of ObjectRecord
        One per refined object (per object and plane in a stack), in order of
        plane, then id.
    changes : list of LabelChange
        The changed pixels of each accepted refinement that changes anything;
        they do not overlap, so they can be applied in any order.
    """

    labels: np.ndarray
    records: list[ObjectRecord]
    changes: list[LabelChange]

    @property
    def accepted(self) -> list[ObjectRecord]:
        return [r for r in self.records if r.accepted]

    @property
    def rejected(self) -> list[ObjectRecord]:
        return [r for r in self.records if not r.accepted]

    def changed_pixels(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """All changes as one ``(indices, values)`` pair.

        For one undoable write of a napari Labels layer:
        ``layer.data_setitem(indices, values)``.
        """
        ndim = self.labels.ndim
        if not self.changes:
            empty = np.zeros(0, dtype=np.intp)
            return tuple(empty for _ in range(ndim)), np.zeros(0, self.labels.dtype)
        indices = tuple(np.concatenate([c.indices[a] for c in self.changes]) for a in range(ndim))
        return indices, np.concatenate([c.values for c in self.changes])


def _segmenter(segmenter_or_model: Any, planes: int = 8) -> Any:
    """The segmenter given, or one for the model given with a cache of ``planes`` embeddings."""
    if hasattr(segmenter_or_model, "set_image") and hasattr(segmenter_or_model, "predict"):
        return segmenter_or_model
    if hasattr(segmenter_or_model, "sam") and hasattr(segmenter_or_model, "img_size"):
        from .embedding import EmbeddingCache
        from .prompt import PromptSegmenter

        return PromptSegmenter(segmenter_or_model, EmbeddingCache(max_items=max(planes, 8)))
    raise TypeError(
        f"Expected a PromptSegmenter or a SamModel, got {type(segmenter_or_model).__name__}."
    )


def _check_finite(raw: np.ndarray, where: str) -> None:
    if not np.issubdtype(raw.dtype, np.floating):
        return
    bad = raw.size - int(np.count_nonzero(np.isfinite(raw)))
    if bad:
        raise ValueError(
            f"Expected a finite image{where}, got {bad} NaN/infinite pixel(s) of {raw.size}; "
            "replace them (e.g. numpy.nan_to_num) before refining labels."
        )


def _wanted_ids(labels: np.ndarray, ids: Sequence[int] | None) -> np.ndarray:
    present = np.unique(labels)
    present = present[present != 0]
    if ids is None:
        return present
    wanted = np.unique(np.asarray(list(ids), dtype=np.int64))
    missing = [int(i) for i in wanted if i == 0 or i not in present]
    if missing:
        shown = ", ".join(str(int(i)) for i in present[:10]) or "none"
        more = f", ... ({present.size} ids)" if present.size > 10 else ""
        raise ValueError(
            f"Expected object ids present in the labels, got {missing} which are not; "
            f"ids present: {shown}{more}."
        )
    return wanted


def refine_all_job(
    segmenter_or_model: Any,
    image: Any,
    labels: Any,
    *,
    min_score: float = 0.7,
    min_overlap: float = 0.5,
    ids: Sequence[int] | None = None,
    rgb: bool | None = None,
    use_box: bool = True,
    use_point: bool = True,
    box_margin: float = DEFAULT_BOX_MARGIN,
    multimask: bool = False,
    through: str = "planes",
    cancel: CancelLike = None,
) -> Generator[RefineStep, None, RefineResult]:
    """Refine every object (or ``ids``) of ``labels``; a job yielding :class:`RefineStep`.

    The rules (acceptance, other objects never eaten, contested background,
    ids kept, input untouched) are in the module docstring of
    :mod:`napari_seglab.sam.refine_all`.

    Parameters
    ----------
    segmenter_or_model : PromptSegmenter or SamModel
        A segmenter shares its embedding cache; a model gets a new segmenter
        (through propagation: with a cache holding every plane of the stack,
        4 MiB per plane for ViT-B embeddings).
    image : array or SamInput
        ``(Y, X)``, ``(Y, X, 3)``, or a stack ``(Z, Y, X[, 3])``; finite values.
    labels : int array
        ``(Y, X)`` or ``(Z, Y, X)``, the image's spatial shape; never modified.
    min_score : float
        Accept a refinement only where SAM's predicted IoU is at least this.
    min_overlap : float in [0, 1]
        ... and its IoU with the original object is at least this.
    ids : sequence of int, optional
        Refine only these objects (all present by default); each must be present.
    rgb : bool, optional
        Whether the image's last axis is colour (None: guess).
    use_box, use_point, box_margin, multimask
        The prompt, as in :func:`.refine.refine_object`.
    through : {"planes", "propagation"}
        Stacks: refine each plane where an object appears on its own (default),
        or refine the object's largest plane and carry the result through its
        other planes (:mod:`.refine_stack`); either way each plane is accepted
        or rejected on its own.
    cancel : threading.Event or callable, optional
        Checked before each plane and each object.

    Returns
    -------
    RefineResult
        The generator's return value.

    Raises
    ------
    ValueError
        Non-integer labels, labels of another shape than the image, ids not
        present, a non-finite image, or thresholds out of range.
    JobCancelled
        When ``cancel`` is set (``partial`` is None: nothing was written).
    """
    check, clock = CancelCheck(cancel), Stopwatch()
    source = image if isinstance(image, SamInput) else SamInput(image, rgb=rgb)
    segmenter = _segmenter(segmenter_or_model, source.n_planes if through != "planes" else 8)
    expected = ((source.n_planes,) if source.is_stack else ()) + tuple(source.plane_shape)
    labels = check_labels(labels, expected)
    if np.isnan(min_score):
        raise ValueError(f"Expected a number as min_score (-inf accepts any), got {min_score}.")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"Expected min_overlap in [0, 1], got {min_overlap}.")
    if through not in THROUGH:
        raise ValueError(f"Expected through one of {THROUGH}, got {through!r}.")
    if through == "propagation" and not source.is_stack:
        raise ValueError(
            f"Refining through propagation needs a stack (Z, Y, X), got an image of shape "
            f"{np.shape(source.data)}; use through='planes'."
        )
    wanted = _wanted_ids(labels, ids)
    if isinstance(source.data, np.ndarray) and not isinstance(source.data, np.memmap):
        _check_finite(source.data, "")
    planes: list[int | None] = list(range(labels.shape[0])) if source.is_stack else [None]
    work = []
    for z in planes:
        present = np.unique(labels if z is None else labels[z])
        here = present[np.isin(present, wanted)]
        if here.size:
            work.append((z, [int(i) for i in here]))
    total = sum(len(here) for _, here in work)
    prompt = {
        "use_box": use_box,
        "use_point": use_point,
        "box_margin": box_margin,
        "multimask": multimask,
    }
    by_plane: dict[int | None, dict[int, tuple]] = {}
    if through == "propagation":
        for z, _ in work:
            _check_finite(source.raw_plane(z), f" on plane {z}")
        spans: dict[int, list[int]] = {}
        for z, here in work:
            for object_id in here:
                spans.setdefault(object_id, []).append(z)
        yield from propagated_refinements(
            segmenter,
            source,
            labels,
            dict(sorted(spans.items())),
            min_score=min_score,
            min_overlap=min_overlap,
            prompt=prompt,
            check=check,
            clock=clock,
            total=total,
            by_plane=by_plane,
        )
    done = 0
    for z, here in work if through == "planes" else ():
        check.raise_if_set("Refining labels")
        _check_finite(source.raw_plane(z), "" if z is None else f" on plane {z}")
        segmenter.set_image(source, z)
        refined = by_plane.setdefault(z, {})
        for object_id in here:
            check.raise_if_set("Refining labels")
            result = refine_object(segmenter, labels, object_id, plane=z, **prompt)
            # Keep the changed pixels only (flat indices), not the full-size masks.
            refined[object_id] = outcome(result, min_score, min_overlap)
            done += 1
            yield RefineStep(
                "refining",
                done,
                total,
                clock.elapsed,
                object_id=object_id,
                plane=z,
                accepted=refined[object_id][2] == "accepted",
            )
    records: list[ObjectRecord] = []
    changes: list[LabelChange] = []
    shape = tuple(source.plane_shape)
    for z, _ in work:
        refined = dict(sorted(by_plane[z].items()))
        plane_records, plane_changes = _resolve(refined, shape, labels.dtype, z)
        records += plane_records
        changes += plane_changes
    out = labels.copy()
    for change in changes:
        change.apply(out)
    return RefineResult(labels=out, records=records, changes=changes)


def _resolve(refined: dict, shape: tuple[int, int], dtype: np.dtype, plane: int | None):
    """Records and changes of one plane: accepted masks, contested background left alone.

    ``refined`` maps each id to ``(score, overlap, reason, grow, lost)``, the
    last two flat indices into the plane of the pixels it would gain and lose.
    """
    claims = np.zeros(int(np.prod(shape)), dtype=np.int32)
    for _score, _overlap, reason, grow, _lost in refined.values():
        if reason == "accepted":
            claims[grow] += 1
    records, changes = [], []
    for oid, (score, overlap, reason, grow, lost) in refined.items():
        ok = reason == "accepted"
        added = removed = n_contested = 0
        if ok:
            free = claims[grow] == 1
            n_contested = int(grow.size - np.count_nonzero(free))
            grow = grow[free]
            added, removed = int(grow.size), int(lost.size)
            if added or removed:
                changes.append(label_change(oid, plane, grow, lost, shape, dtype))
        records.append(
            ObjectRecord(
                object_id=oid,
                plane=plane,
                accepted=ok,
                score=score,
                overlap=overlap,
                pixels_added=added,
                pixels_removed=removed,
                contested=n_contested,
                reason=reason,
            )
        )
    return records, changes


def refine_all(
    segmenter_or_model: Any,
    image: Any,
    labels: Any,
    *,
    callback: Any = None,
    **options: Any,
) -> RefineResult:
    """Refine every object of ``labels``: :func:`refine_all_job` run to the end.

    ``callback`` receives each :class:`RefineStep`; ``options`` are those of
    :func:`refine_all_job` (``min_score``, ``min_overlap``, ``ids``, ``cancel``, ...).
    """
    return run_to_end(refine_all_job(segmenter_or_model, image, labels, **options), callback)
