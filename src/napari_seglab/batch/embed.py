"""The ``embed`` batch pipeline: SAM embeddings of every plane into the disk cache.

Run it where the encoder is fast (a GPU node), then annotate anywhere that
sees the same cache folder: the prompting widget (its
:class:`~napari_seglab.sessions.SamPromptSession` opens the disk cache
``<cache folder>/sam-embeddings.zarr`` by default) finds every plane already
embedded and prompts at once.

Why a cache written by a worker process serves the widget in another
process (or on another machine after copying the folder): entries are
content-addressed. The key of a plane is the hash of the exact uint8 RGB
plane the encoder sees (:class:`~napari_seglab.sam.SamInput` normalises a
stack with one intensity range for all its planes, the same in the widget and
here) plus the encoder's identity (the pinned hash of a registered
checkpoint, the SHA-256 of a local file) and input size; each entry carries a
signature (those plus the package version) and a SHA-256 checksum that the
reader verifies. So the same image, the same model and the same
napari-seglab version give the same keys everywhere; anything else simply
misses and is computed again, never served wrong.

Per input this writes ``<name>_embed.json`` in the output folder: the cache
folder, the model, and the cache key of every plane (so a rerun skips the
item; a rerun with ``--overwrite`` still computes only planes the cache lacks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..jobs import run_to_end
from .pipeline import BatchItem, ItemOutcome
from .sam_model import SamModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..sam import EmbeddingCache, SamModel

__all__ = ["EmbedPipeline", "EmbedWorker", "default_cache_dir"]

#: Embeddings an embed worker keeps in memory (it writes them to disk; none is read back).
MEMORY_EMBEDDINGS = 4


def default_cache_dir() -> Path:
    """The disk embedding cache the widget uses: ``<cache folder>/sam-embeddings.zarr``."""
    from ..cache import cache_dir

    return cache_dir() / "sam-embeddings.zarr"


@dataclass
class EmbedWorker:
    """What :meth:`EmbedPipeline.load` gives each worker: the model and the disk cache."""

    model: SamModel
    cache: EmbeddingCache


class EmbedPipeline:
    """Precompute the SAM embeddings of every plane of every input.

    Parameters
    ----------
    model : str, Path or SamModelSpec
        A registered checkpoint name or a full SAM ``.pth`` file (as
        :class:`~.sam.SamPipeline`); embeddings depend on the image encoder only,
        so a fine-tuned decoder needs none of its own.
    cache_dir : path, optional
        The disk cache folder (a zarr store); default :func:`default_cache_dir`,
        resolved here (on the machine that starts the run). Workers on other
        machines must see that path (a shared file system).
    batch_size : int, optional
        Planes per encoder call (default 4 on CUDA, 1 elsewhere).
    architecture, device, download
        See :meth:`SamModelSpec.resolve`.
    """

    name = "embed"

    def __init__(
        self,
        model: str | Path | SamModelSpec,
        *,
        cache_dir: str | Path | None = None,
        batch_size: int | None = None,
        architecture: str | None = None,
        device: str = "auto",
        download: bool = True,
    ) -> None:
        if not isinstance(model, SamModelSpec):
            model = SamModelSpec.resolve(
                model, architecture=architecture, device=device, download=download
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"Expected a batch size >= 1, got {batch_size}.")
        self.model = model
        folder = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"The embedding cache must be a folder, got the file {folder}.")
        self.cache_dir = str(folder.resolve())
        self.batch_size = batch_size

    def settings(self) -> dict[str, Any]:
        """The encoder's identity and the cache folder written to."""
        settings = {"pipeline": "embed/1", **self.model.settings(), "cache_dir": self.cache_dir}
        settings.pop("decoder_hash", None)  # embeddings do not depend on the decoder
        return settings

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`settings`."""
        import hashlib

        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def output_names(self, item: BatchItem) -> list[str]:
        """``["<name>_embed.json"]``: the cache keys of the item's planes."""
        return [f"{item.name}_embed.json"]

    def load(self) -> EmbedWorker:
        """Load the model and open the disk cache (once per worker)."""
        from ..sam import EmbeddingCache

        cache = EmbeddingCache(max_items=MEMORY_EMBEDDINGS, disk=self.cache_dir)
        return EmbedWorker(self.model.load(), cache)

    def run_item(self, item: BatchItem, output_dir: Path, loaded: EmbedWorker) -> ItemOutcome:
        """Embed every plane of ``item`` the cache lacks; write ``<name>_embed.json``."""
        from .. import __version__
        from ..checkpoints import atomic_path
        from ..io import read_array
        from ..sam import SamInput, precompute_embeddings
        from ..sam.embedding import embedding_key

        array = read_array(item.path, what="image file", lazy=True)
        source = SamInput(array.data)
        model, cache = loaded.model, loaded.cache
        cached: list[int] = []
        computed = run_to_end(
            precompute_embeddings(model, source, cache, batch_size=self.batch_size),
            callback=lambda event: cached.append(event.plane) if event.cached else None,
        )
        indices = range(source.n_planes) if source.is_stack else [None]
        keys = [embedding_key(model, source.plane(i)) for i in indices]
        missing = [i for i, key in zip(indices, keys) if not cache.has(key, model)]
        if missing:
            raise RuntimeError(
                f"The embeddings of plane(s) {missing} of {item.name!r} are not readable from "
                f"the cache {self.cache_dir} after writing them (is the folder writable and "
                "not full?)."
            )
        record = {
            "image": item.name,
            "input": str(item.path),
            "shape": list(array.shape),
            "model": self.model.settings()["model"],
            "model_hash": self.model.model_hash,
            "encoder_hash": model.encoder_hash,
            "package_version": __version__,
            "cache_dir": self.cache_dir,
            "keys": keys,
        }
        name = self.output_names(item)[0]
        with atomic_path(Path(output_dir) / name) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        row = {
            "shape": list(array.shape),
            "spacing": None if array.spacing is None else list(array.spacing),
            "planes": len(keys),
            "computed": int(computed),
            "cached": len(cached),
        }
        return ItemOutcome([name], row)
