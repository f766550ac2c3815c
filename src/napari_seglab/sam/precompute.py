"""Embedding the planes of a stack ahead of the user, as a job.

:func:`precompute_embeddings` follows :mod:`napari_seglab.jobs`: it yields an
:class:`EmbeddingProgress` per plane, checks ``cancel`` before each encoder
batch and ends a cancelled run by raising
:class:`~napari_seglab.jobs.JobCancelled` (``partial``: the number of planes
computed so far; every finished plane stays in the cache).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..jobs import CancelCheck, CancelLike, ProgressEvent, Stopwatch
from .embedding import EmbeddingCache, embedding_key, encode_planes
from .image import SamInput

if TYPE_CHECKING:  # pragma: no cover
    from .model import SamModel

__all__ = ["EmbeddingProgress", "precompute_embeddings"]


@dataclass(frozen=True)
class EmbeddingProgress(ProgressEvent):
    """Progress of :func:`precompute_embeddings` (``stage == "embedding"``).

    Attributes
    ----------
    done, total : int
        Planes finished / planes asked for.
    plane : int
        Index of the plane just finished.
    cached : bool
        True when the plane was already in the cache (or computed by another thread).
    """

    plane: int = 0
    cached: bool = False


def precompute_embeddings(
    model: SamModel,
    image: SamInput | np.ndarray,
    cache: EmbeddingCache,
    *,
    planes: Iterable[int] | None = None,
    batch_size: int | None = None,
    cancel: CancelLike = None,
) -> Generator[EmbeddingProgress, None, int]:
    """Compute the embeddings of the planes of a stack that the cache lacks.

    Parameters
    ----------
    model : SamModel
    image : SamInput or array
        A stack ``(Z, Y, X[, 3])`` (or a 2D image, as one plane).
    cache : EmbeddingCache
        Receives every embedding; memory stays bounded by its ``max_items``.
    planes : iterable of int, optional
        Plane indices in the order to compute them (e.g. outward from the
        visible plane); default all.
    batch_size : int, optional
        Planes per encoder call; default 4 on CUDA, 1 elsewhere.
    cancel : threading.Event or callable, optional
        Checked before each plane and each encoder batch.

    Yields
    ------
    EmbeddingProgress
        After each plane (cached planes are reported as ``cached=True``).

    Returns
    -------
    int
        Number of planes computed (generator return value).

    Raises
    ------
    JobCancelled
        When ``cancel`` is set; ``partial`` is the number of planes computed.
    """
    check = CancelCheck(cancel)
    clock = Stopwatch()
    source = image if isinstance(image, SamInput) else SamInput(image)
    order = list(range(source.n_planes)) if planes is None else [int(p) for p in planes]
    if batch_size is None:
        batch_size = 4 if model.device.type == "cuda" else 1
    total = len(order)
    done = computed = 0
    pending: list[tuple[int, np.ndarray]] = []

    def progress(index: int, cached: bool) -> EmbeddingProgress:
        return EmbeddingProgress(
            "embedding", done, total, clock.elapsed, plane=index, cached=cached
        )

    def flush() -> Generator[EmbeddingProgress, None, None]:
        nonlocal done, computed
        keys = [embedding_key(model, rgb) for _, rgb in pending]
        claimed = set(cache.claim(keys))
        try:
            mine = [(i, rgb) for (i, rgb), key in zip(pending, keys) if key in claimed]
            embeddings = encode_planes(model, [rgb for _, rgb in mine])
            for embedding in embeddings:
                cache.put(embedding, model)
        finally:
            cache.release(list(claimed))
        cache.count_computed(len(mine))
        for (index, _), key in zip(pending, keys):
            if key not in claimed:
                cache.wait_for(key)  # another thread was computing this plane
            done += 1
            computed += key in claimed
            yield progress(index, key not in claimed)
        pending.clear()

    for index in order:
        check.raise_if_set("Embedding the planes", partial=computed)
        rgb = source.plane(index if source.is_stack else None)
        if cache.has(embedding_key(model, rgb), model):
            done += 1
            yield progress(index, True)
            continue
        pending.append((index, rgb))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        check.raise_if_set("Embedding the planes", partial=computed)
        yield from flush()
    return computed
