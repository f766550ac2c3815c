"""Embeddings of the annotated planes, computed once with the frozen encoder.

:class:`EmbeddingStore` holds them as one tensor in memory, or reads them back
from a disk-backed :class:`~napari_seglab.sam.embedding.EmbeddingCache` when
they exceed a memory budget; :func:`open_store` picks which (and removes a
temporary disk store afterwards); :func:`embed_planes` fills it as a job
(:mod:`napari_seglab.jobs`), reusing every plane already in the cache.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...jobs import CancelLike, ProgressEvent, Stopwatch
from ..embedding import EmbeddingCache, embedding_key
from ..image import SamInput
from ..precompute import precompute_embeddings
from .data import Plane

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model import SamModel

__all__ = ["EmbeddingStore", "bytes_per_plane", "embed_planes", "open_store"]


def bytes_per_plane(model: SamModel) -> int:
    """Bytes of one float32 embedding ``(C, h, w)`` of ``model``."""
    arch = model.architecture
    return 4 * arch.prompt_embed_dim * arch.embedding_size**2


class EmbeddingStore:
    """Embeddings of the annotated planes: one tensor in memory, or a disk-backed cache.

    Parameters
    ----------
    model : SamModel
    cache : EmbeddingCache
        Where embeddings come from (and, when disk-backed, are kept).
    n_planes : int
    budget_mib : float
        In-memory limit; above it, planes are read back from ``cache`` (which
        must then have a disk store) on demand.
    """

    def __init__(self, model: SamModel, cache: EmbeddingCache, n_planes: int, budget_mib: float):
        import torch

        grid = model.architecture.embedding_size
        channels = model.architecture.prompt_embed_dim
        self.bytes_per_plane = bytes_per_plane(model)
        self.in_memory = n_planes * self.bytes_per_plane <= budget_mib * 2**20
        self.device = model.device
        self.model = model
        self.cache = cache
        self.keys: list[str] = [""] * n_planes
        self.tensor = (
            torch.empty((n_planes, channels, grid, grid), device=model.device)
            if self.in_memory
            else None
        )

    def put(self, i: int, key: str, features: torch.Tensor) -> None:
        self.keys[i] = key
        if self.tensor is not None:
            self.tensor[i].copy_(features[0])

    def put_copy(self, i: int, key: str, j: int) -> None:
        """Plane ``i`` has the same content as plane ``j`` (already stored)."""
        self.keys[i] = key
        if self.tensor is not None:
            self.tensor[i].copy_(self.tensor[j])

    def get(self, i: int) -> torch.Tensor:
        """``(1, C, h, w)`` float32 on the device (a normal tensor, usable with autograd)."""
        if self.tensor is not None:
            return self.tensor[i : i + 1]
        embedding = self.cache.get(self.keys[i], self.model)
        if embedding is None:  # pragma: no cover - the disk store is written before training
            raise RuntimeError(f"The embedding of plane {i} is missing from the disk cache.")
        return embedding.features.to(self.device).clone()


@contextlib.contextmanager
def open_store(
    model: SamModel,
    n_planes: int,
    *,
    cache: EmbeddingCache | None,
    budget_mib: float,
    embedding_dir: str | Path | None,
) -> Iterator[EmbeddingStore]:
    """An :class:`EmbeddingStore` for ``n_planes`` planes of ``model``.

    In memory when the planes fit ``budget_mib``; otherwise on disk, in
    ``cache``'s store if it has one, else under ``embedding_dir``, else in a
    temporary folder of the cache folder that is removed on exit.
    """
    per_plane = bytes_per_plane(model)
    needs_disk = n_planes * per_plane > budget_mib * 2**20
    own_dir = None
    if cache is None or (needs_disk and cache.disk_path is None):
        if needs_disk and embedding_dir is None:
            from ...cache import cache_dir

            parent = cache_dir()
            parent.mkdir(parents=True, exist_ok=True)
            own_dir = tempfile.mkdtemp(prefix="finetune-embeddings-", dir=parent)
        location = embedding_dir or own_dir
        # In memory, the LRU only hands embeddings on to the store (4 = a CUDA encoder
        # batch); disk-backed, it is the working set: at most half the budget.
        lru = max(1, min(8, int(budget_mib * 2**19 // per_plane))) if needs_disk else 4
        disk = Path(location) / "store.zarr" if location else None
        cache = EmbeddingCache(max_items=lru, disk=disk)
    try:
        yield EmbeddingStore(model, cache, n_planes, budget_mib)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def embed_planes(
    model: SamModel,
    pairs: list[tuple[SamInput, np.ndarray]],
    planes: list[Plane],
    store: EmbeddingStore,
    cancel: CancelLike = None,
) -> Generator[ProgressEvent, None, int]:
    """Fill ``store`` with the embedding of every plane; returns the encoder runs (planes).

    Planes with identical content (same uint8 RGB, so the same cache key) are
    embedded once, whichever image they come from. Yields a
    ``ProgressEvent("embedding", done, total, elapsed)`` per plane.

    Raises
    ------
    JobCancelled
        When ``cancel`` is set (planes already embedded stay in the cache).
    """
    clock = Stopwatch()
    total = len(planes)
    by_image: dict[int, list[int]] = {}
    for i, plane in enumerate(planes):
        by_image.setdefault(plane.image, []).append(i)
    first_with_key: dict[str, int] = {}
    done = computed = 0
    for image_index, plane_ids in by_image.items():
        source = pairs[image_index][0]
        pending: dict[int, tuple[int, str]] = {}  # plane index in the image -> (store row, key)
        for i in plane_ids:
            key = embedding_key(model, source.plane(planes[i].index))
            if key in first_with_key:
                store.put_copy(i, key, first_with_key[key])
                done += 1
                yield ProgressEvent("embedding", done, total, clock.elapsed)
                continue
            first_with_key[key] = i
            pending[planes[i].index if source.is_stack else 0] = (i, key)
        steps = precompute_embeddings(
            model, source, store.cache, planes=list(pending), cancel=cancel
        )
        while True:
            try:
                progress = next(steps)
            except StopIteration as stop:
                computed += int(stop.value or 0)
                break
            i, key = pending[progress.plane]
            embedding = store.cache.get(key, model)
            if embedding is None:  # pragma: no cover - evicted between put and get
                embedding = store.cache.get_or_compute(model, source.plane(planes[i].index))
                computed += 1
            store.put(i, key, embedding.features.to(store.device))
            done += 1
            yield ProgressEvent("embedding", done, total, clock.elapsed)
    return computed
