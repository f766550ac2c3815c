"""Image embeddings: computing them, and never computing them twice.

* :func:`encode_planes` runs SAM's image encoder on uint8 RGB planes, with the
  same preprocessing as ``segment_anything.SamPredictor.set_image`` (resize the
  long side to the encoder size, normalise, pad), batched, with autocast on CUDA.
* :class:`EmbeddingCache` keeps embeddings in a bounded in-memory LRU and,
  optionally, in an on-disk zarr store. Entries are content-addressed: the key
  is the hash of the exact uint8 plane the encoder sees plus the identity of
  the encoder weights (:attr:`SamModel.encoder_hash`) and input size. Changing
  the image (or its normalisation) changes the key, so a stale embedding can
  never be returned; identical planes (any index, any stack) share one entry.
  Each disk entry stores a signature (content hash, encoder hash, package
  version, sizes) that is compared before reuse; a mismatch discards it. The
  signature also holds the entry's shape, dtype and a SHA-256 checksum of the
  signature and the stored bytes; an entry that fails any check (deleted,
  altered or truncated data, edited fields, unreadable metadata) is discarded
  with a warning and computed again, never served.

SAM 2 models (:class:`~.sam2_model.Sam2Model`) share the cache: their
entries are :class:`~.sam2_model.Sam2Embedding` objects (the raw
``forward_image`` outputs; on disk a group of three arrays, see :mod:`.sam2_disk`),
checked the same way.

Filling the cache for the planes of a stack in the background is the job
:func:`~.precompute.precompute_embeddings`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .image import plane_hash
from .sam2_disk import read_sam2_entry, write_sam2_entry
from .sam2_model import Sam2Embedding, encode_plane

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import SamModel

__all__ = ["Embedding", "EmbeddingCache", "embedding_key", "encode_planes"]


@dataclass(frozen=True)
class Embedding:
    """The image embedding of one plane.

    Attributes
    ----------
    features : torch.Tensor
        ``(1, C, h, w)`` float32 on the model's device (C=256, h=w=64 for
        published models).
    original_size : (int, int)
        ``(Y, X)`` of the plane.
    input_size : (int, int)
        ``(Y, X)`` after resizing the long side to the encoder size (before padding).
    key : str
        Cache key (see :func:`embedding_key`).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str = ""


def embedding_key(model: SamModel, rgb: np.ndarray) -> str:
    """Cache key of the embedding of ``rgb`` ``(Y, X, 3)`` uint8 under ``model``."""
    encoder = model.encoder_hash.split(":")[-1][:32]
    return f"{encoder}-{model.img_size}-{plane_hash(rgb)}"


def _preprocess(model: SamModel, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(1, 3, S, S)`` normalised padded encoder input and the resized ``(Y, X)``."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(model.img_size).apply_image(rgb)
    tensor = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).contiguous()[None]
    return model.sam.preprocess(tensor.float()), (int(resized.shape[0]), int(resized.shape[1]))


def encode_planes(
    model: SamModel, planes: Sequence[np.ndarray], *, autocast: bool = True
) -> list[Embedding]:
    """Run the image encoder on uint8 RGB planes (one batch).

    Parameters
    ----------
    model : SamModel
    planes : sequence of arrays ``(Y, X, 3)`` uint8
        All of the same shape.
    autocast : bool
        Use mixed precision on CUDA (bf16/fp16, see :mod:`napari_seglab.device`);
        the stored features are float32 either way.

    Returns
    -------
    list of Embedding
        ``features`` ``(1, C, h, w)`` float32 each; keys filled in. For a SAM 2
        model, :class:`~.sam2_model.Sam2Embedding` objects (encoded one by one).
    """
    import torch

    from ..device import autocast as autocast_context

    if not planes:
        return []
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ValueError(f"Expected planes of one shape in a batch, got {sorted(shapes)}.")
    for plane in planes:
        if plane.ndim != 3 or plane.shape[-1] != 3 or plane.dtype != np.uint8:
            raise ValueError(
                f"Expected (Y, X, 3) uint8 planes, got shape {plane.shape} dtype {plane.dtype}."
            )
    if getattr(model, "is_sam2", False):
        return [encode_plane(model, p, key=embedding_key(model, p)) for p in planes]
    inputs = []
    input_size = (0, 0)
    for plane in planes:
        tensor, input_size = _preprocess(model, plane)
        inputs.append(tensor)
    batch = torch.cat(inputs, dim=0)
    with torch.inference_mode(), autocast_context(model.device, enabled=autocast):
        features = model.sam.image_encoder(batch)
    features = features.float()
    original = (int(planes[0].shape[0]), int(planes[0].shape[1]))
    return [
        Embedding(features[i : i + 1].clone(), original, input_size, embedding_key(model, p))
        for i, p in enumerate(planes)
    ]


class EmbeddingCache:
    """Bounded LRU of embeddings in memory, optionally backed by a zarr store on disk.

    Parameters
    ----------
    max_items : int
        Embeddings kept in memory (each is 4 MiB for published models); the
        least recently used one is dropped first.
    disk : path, True or None
        Folder of the on-disk cache (a zarr group); True uses
        ``<cache folder>/sam-embeddings.zarr``; None keeps everything in memory.
    disk_dtype : str
        ``"float32"`` (exact) or ``"float16"`` (half the disk space; masks
        then differ from fresh embeddings only at a few boundary pixels).

    Attributes
    ----------
    hits, misses, disk_hits, disk_rejected : int
        Counters: memory hits, computations, entries read from disk, and disk
        entries discarded because their signature or checksum did not match.
    """

    def __init__(
        self,
        max_items: int = 16,
        disk: str | Path | bool | None = None,
        *,
        disk_dtype: str = "float32",
    ) -> None:
        if max_items < 1:
            raise ValueError(f"Expected max_items >= 1, got {max_items}.")
        if disk_dtype not in ("float32", "float16"):
            raise ValueError(f"Expected disk_dtype 'float32' or 'float16', got {disk_dtype!r}.")
        self.max_items = int(max_items)
        self.disk_dtype = disk_dtype
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.RLock()
        self._group: Any = None
        self._in_flight: dict[str, threading.Event] = {}
        if disk is True:
            from ..cache import cache_dir

            disk = cache_dir() / "sam-embeddings.zarr"
        self.disk_path = Path(disk) if disk else None
        self.hits = self.misses = self.disk_hits = self.disk_rejected = 0

    def __len__(self) -> int:
        return len(self._items)

    def has(self, key: str, model: SamModel) -> bool:
        """Whether ``key`` is in memory or on disk with a matching signature (loads nothing)."""
        with self._lock:
            return key in self._items or self._disk_matches(key, model)

    def _disk_matches(self, key: str, model: SamModel) -> bool:
        stored = self._disk_signature(key)
        expected = self.signature(model, key)
        return bool(stored) and all(stored.get(k) == v for k, v in expected.items())

    # -- signature ---------------------------------------------------------------------
    @staticmethod
    def signature(model: SamModel, key: str, embedding: Embedding | None = None) -> dict:
        """What a disk entry must match to be reused."""
        from .. import __version__

        sig = {
            "content_hash": key.rsplit("-", 1)[-1],
            "model_hash": model.encoder_hash,
            "img_size": model.img_size,
            "package_version": __version__,
        }
        if embedding is not None:
            sig["original_size"] = list(embedding.original_size)
            sig["input_size"] = list(embedding.input_size)
        return sig

    # -- disk ---------------------------------------------------------------------------
    def _disk(self):
        if self.disk_path is None:
            return None
        if self._group is None:
            import zarr

            self.disk_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._group = zarr.open_group(str(self.disk_path), mode="a")
            except Exception as error:  # an unreadable store is a cache: start it again
                _warn_discarded(str(self.disk_path), f"the store is unreadable ({error})")
                import shutil

                shutil.rmtree(self.disk_path, ignore_errors=True)
                self._group = zarr.open_group(str(self.disk_path), mode="a")
        return self._group

    @staticmethod
    def _disk_name(key: str) -> str:
        encoder, size, content = key.split("-")
        return f"{encoder}_{size}/{content}"

    def _disk_signature(self, key: str) -> dict | None:
        group = self._disk()
        if group is None:
            return None
        try:
            return dict(group[self._disk_name(key)].attrs).get("signature")
        except Exception:  # missing or unreadable: not a usable entry
            return None

    def _discard(self, name: str, reason: str | None) -> None:
        """Delete the disk entry ``name`` (warning with ``reason`` unless None)."""
        self.disk_rejected += 1
        if reason is not None:
            _warn_discarded(name, reason)
        try:
            del self._group[name]
        except Exception:  # unreadable metadata: remove its folder
            import shutil

            shutil.rmtree(self.disk_path / name, ignore_errors=True)

    def _read_disk(self, key: str, model: SamModel) -> Embedding | None:
        import torch

        group = self._disk()
        if group is None:
            return None
        name = self._disk_name(key)
        try:
            array = group[name]
        except KeyError:
            return None
        except Exception as error:
            self._discard(name, f"its metadata is unreadable ({error})")
            return None
        try:
            stored = dict(array.attrs).get("signature")
        except Exception:
            stored = None
        expected = self.signature(model, key)
        if not stored or any(stored.get(k) != v for k, v in expected.items()):
            self._discard(name, None)  # another model, version or an interrupted write
            return None
        if getattr(model, "is_sam2", False):
            embedding, reason = read_sam2_entry(array, stored, model, key)
            if reason is not None:
                self._discard(name, reason)
            return embedding
        try:
            data = np.asarray(array[...])
            reason = _entry_problem(stored, data, model)
        except Exception as error:
            reason = f"it cannot be read ({error})"
        if reason is not None:
            self._discard(name, reason)
            return None
        features = torch.as_tensor(data.astype(np.float32), device=model.device)
        return Embedding(
            features[None],
            tuple(stored["original_size"]),
            tuple(stored["input_size"]),
            key,
        )

    def _write_disk(self, key: str, embedding: Embedding, model: SamModel) -> None:
        group = self._disk()
        if group is None:
            return
        if isinstance(embedding, Sam2Embedding):
            signature = self.signature(model, key, embedding)
            write_sam2_entry(group, self._disk_name(key), embedding, signature, self.disk_dtype)
            return
        data = embedding.features[0].detach().float().cpu().numpy().astype(self.disk_dtype)
        options = {"shape": data.shape, "dtype": self.disk_dtype, "chunks": data.shape}
        if hasattr(group, "create_array"):  # zarr >= 3
            array = group.create_array(
                self._disk_name(key), compressors=None, overwrite=True, **options
            )
        else:  # pragma: no cover - zarr 2
            array = group.create_dataset(
                self._disk_name(key), compressor=None, overwrite=True, **options
            )
        array[...] = data
        signature = self.signature(model, key, embedding)
        signature["shape"] = list(data.shape)
        signature["dtype"] = self.disk_dtype
        signature["checksum"] = _checksum(signature, data)
        # The signature is written last: an interrupted write has none and is ignored.
        array.attrs["signature"] = signature

    # -- public -------------------------------------------------------------------------
    def get(self, key: str, model: SamModel) -> Embedding | None:
        """The cached embedding for ``key`` (memory, then disk), or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            embedding = self._read_disk(key, model)
            if embedding is not None:
                self.disk_hits += 1
                self._remember(key, embedding)
            return embedding

    def put(self, embedding: Embedding, model: SamModel) -> None:
        """Store ``embedding`` under its key in memory (and on disk if enabled)."""
        with self._lock:
            self._remember(embedding.key, embedding)
            if self.disk_path is not None and not self._disk_matches(embedding.key, model):
                self._write_disk(embedding.key, embedding, model)

    def _remember(self, key: str, embedding: Embedding) -> None:
        self._items[key] = embedding
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get_or_compute(self, model: SamModel, rgb: np.ndarray) -> Embedding:
        """Embedding of one ``(Y, X, 3)`` uint8 plane, computing it only on a miss.

        If another thread (e.g. a background precompute) is already computing
        this plane, waits for its result instead of computing it twice.
        """
        key = embedding_key(model, rgb)
        while True:
            embedding = self.get(key, model)
            if embedding is not None:
                return embedding
            if self.claim([key]):
                break
            self.wait_for(key)
        try:
            self.count_computed(1)
            embedding = encode_planes(model, [rgb])[0]
            self.put(embedding, model)
            return embedding
        finally:
            self.release([key])

    def count_computed(self, n: int) -> None:
        """Add ``n`` embeddings computed by a caller of :meth:`claim` to :attr:`misses`."""
        with self._lock:
            self.misses += int(n)

    def claim(self, keys: Sequence[str]) -> list[str]:
        """Mark ``keys`` as being computed by the caller; returns those not already claimed."""
        claimed = []
        with self._lock:
            for key in keys:
                if key not in self._in_flight:
                    self._in_flight[key] = threading.Event()
                    claimed.append(key)
        return claimed

    def release(self, keys: Sequence[str]) -> None:
        """End a :meth:`claim` (after storing the embeddings, or on failure)."""
        with self._lock:
            for key in keys:
                event = self._in_flight.pop(key, None)
                if event is not None:
                    event.set()

    def wait_for(self, key: str, timeout: float | None = None) -> None:
        """Block while another thread computes ``key``."""
        with self._lock:
            event = self._in_flight.get(key)
        if event is not None:
            event.wait(timeout)

    def clear(self, *, disk: bool = False) -> None:
        """Forget the in-memory entries (and the disk store with ``disk=True``)."""
        with self._lock:
            self._items.clear()
            if disk and self.disk_path is not None and self.disk_path.exists():
                import shutil

                self._group = None
                shutil.rmtree(self.disk_path)


def _warn_discarded(name: str, reason: str) -> None:
    import warnings

    warnings.warn(
        f"Discarded the cached SAM embedding {name}: {reason}; it is computed again.",
        RuntimeWarning,
        stacklevel=4,
    )


def _checksum(signature: dict, data: np.ndarray) -> str:
    """SHA-256 of the signature (without its checksum) and the stored bytes."""
    import hashlib
    import json

    fields = {k: v for k, v in signature.items() if k != "checksum"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(data).data)
    return digest.hexdigest()


def _expected_shape(model: SamModel) -> tuple[int, ...] | None:
    """``(C, h, w)`` of the model's image embedding, or None if it cannot be told."""
    try:
        prompt_encoder = model.sam.prompt_encoder
        return (int(prompt_encoder.embed_dim), *map(int, prompt_encoder.image_embedding_size))
    except (AttributeError, TypeError, ValueError):
        return None


def _entry_problem(signature: dict, data: np.ndarray, model: SamModel) -> str | None:
    """Why a disk entry must not be served (None: it is sound)."""
    if "checksum" not in signature:
        return "it has no checksum"
    if list(data.shape) != signature.get("shape") or str(data.dtype) != signature.get("dtype"):
        return (
            f"its data ({data.shape}, {data.dtype}) does not match its signature "
            f"({signature.get('shape')}, {signature.get('dtype')})"
        )
    expected = _expected_shape(model)
    if expected is not None and tuple(data.shape) != expected:
        return f"its shape {data.shape} is not the model's embedding shape {expected}"
    if _checksum(signature, data) != signature["checksum"]:
        return "its checksum does not match (altered, truncated or missing data)"
    if not np.isfinite(data).all():
        return "it holds non-finite values"
    return None
