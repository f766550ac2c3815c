"""``manifest.json``: what a batch run did per item, so that a rerun skips finished work.

The manifest lives in the output folder and is written only by the process
that runs the batch (the dask client), never by workers, always atomically
(:func:`napari_seglab.checkpoints.atomic_path`): a kill leaves the previous
complete version. Per item it records

``input``, ``extra``, ``input_hash``, ``input_stat``
    The input path, the paths matched to it (``{"truth": ...}`` for
    ``evaluate``), the SHA-256 of their content (a file's bytes; a folder's
    files in sorted relative-name order, each name and its bytes; combined
    with the ``extra`` files' hashes when there are any) and the file-system
    signature the hash was computed for (size, ``mtime_ns``, ``ctime_ns`` and
    inode of each file).
``pipeline``, ``fingerprint``
    The pipeline's name and :meth:`~.pipeline.Pipeline.fingerprint` (its
    settings and model content).
``status``, ``seconds``, ``worker``, ``error``, ``outputs``, ``row``
    ``"done"``, ``"failed"`` or ``"pending"`` (submitted, not finished: a run
    that was killed), the item's time on its worker, the worker's address, the
    one-line error of a failed item, the output names (relative to the output
    folder) and the report row.

An item is skipped by a rerun (:meth:`Manifest.is_done`) when it is ``done``
with the same input hash and fingerprint and all its outputs exist; every
other item is redone. Hashing reads every byte of an input, so a recorded
hash is reused without reading the input again when the input's signature
(size, ``mtime_ns``, ``ctime_ns``, inode of each file) is unchanged: a
content change that keeps all four (impossible through normal writes, which
update ``ctime``) would go unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .pipeline import BatchItem, Pipeline

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "Manifest",
    "content_hash",
    "input_signature",
    "item_hash",
    "item_signature",
]

#: File name of the manifest inside the output folder.
MANIFEST_NAME = "manifest.json"
#: ``format`` field of the manifest; ``version`` says which layout.
FORMAT = "napari-seglab.batch-manifest"
VERSION = 1
_CHUNK = 1 << 20


def _files_of(path: Path) -> list[tuple[str, Path]]:
    """``(relative name, path)`` of ``path`` (a file) or every file under it, sorted."""
    if path.is_file():
        return [(path.name, path)]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            full = Path(root) / name
            found.append((full.relative_to(path).as_posix(), full))
    return sorted(found)


def input_signature(path: str | os.PathLike) -> str:
    """Size, ``mtime_ns``, ``ctime_ns`` and inode of a file (of every file of a folder).

    Cheap (``stat`` only); when it is unchanged the recorded
    :func:`content_hash` is reused.
    """
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    digest = hashlib.sha256()
    for name, full in _files_of(path):
        st = full.stat()
        digest.update(
            f"{name}\0{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}\n".encode()
        )
    return "tree:" + digest.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder's files (sorted names and bytes).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {str(path)!r}")
    digest = hashlib.sha256()
    folder = path.is_dir()
    for name, full in _files_of(path):
        if folder:
            digest.update(name.encode() + b"\0")
        with open(full, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        if folder:
            digest.update(b"\0")
    return digest.hexdigest()


def item_signature(item: BatchItem) -> str:
    """:func:`input_signature` of the item's input and of its ``extra`` files (ground truth)."""
    parts = [input_signature(item.path)]
    parts += [f"{key}={input_signature(path)}" for key, path in sorted(item.extra.items())]
    return "|".join(parts)


def item_hash(item: BatchItem) -> str:
    """:func:`content_hash` of the item's input, combined with its ``extra`` files' when any."""
    own = content_hash(item.path)
    if not item.extra:
        return own
    digest = hashlib.sha256(own.encode())
    for key, path in sorted(item.extra.items()):
        digest.update(f"\0{key}\0{content_hash(path)}".encode())
    return digest.hexdigest()


class Manifest:
    """The manifest of one output folder, in memory; :meth:`save` writes it.

    Parameters
    ----------
    output_dir : path-like
        The batch output folder (the manifest is ``output_dir / manifest.json``).
    items : dict of str to dict, optional
        Records by item name (see the module docstring).
    """

    def __init__(self, output_dir: str | os.PathLike, items: dict[str, dict] | None = None):
        self.output_dir = Path(output_dir)
        self.items: dict[str, dict[str, Any]] = dict(items or {})
        self.run: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        """``output_dir / manifest.json``."""
        return self.output_dir / MANIFEST_NAME

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> Manifest:
        """The manifest in ``output_dir``, or an empty one when there is none.

        Raises
        ------
        ValueError
            The file exists but is not a manifest of this package (damaged, or
            another program's): the message says to remove it or choose another
            output folder.
        """
        manifest = cls(output_dir)
        if not manifest.path.exists():
            return manifest
        try:
            data = json.loads(manifest.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            data = {"error": str(exc)}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(
                f"{str(manifest.path)!r} is not a napari-seglab batch manifest "
                f"(expected format {FORMAT!r}); remove it or choose another output folder"
            )
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(
                f"{str(manifest.path)!r} was written by a newer napari-seglab (manifest "
                f"version {data['version']}); upgrade or choose another output folder"
            )
        manifest.items = {str(k): dict(v) for k, v in dict(data.get("items", {})).items()}
        manifest.run = dict(data.get("run", {}))
        return manifest

    def save(self) -> Path:
        """Write the manifest atomically; returns its path."""
        from ..checkpoints import atomic_path

        payload = {"format": FORMAT, "version": VERSION, "run": self.run, "items": self.items}
        text = json.dumps(payload, indent=1, sort_keys=False, default=_jsonable)
        with atomic_path(self.path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        return self.path

    # ----------------------------------------------------------------- decisions
    def known_hash(self, item: BatchItem) -> str | None:
        """The recorded content hash of ``item``'s input when its signature is unchanged."""
        record = self.items.get(item.name)
        if not record or record.get("input") != str(item.path):
            return None
        if record.get("extra", {}) != {k: str(p) for k, p in item.extra.items()}:
            return None
        try:
            signature = item_signature(item)
        except OSError:
            return None
        if record.get("input_stat") != signature:
            return None
        return record.get("input_hash")

    def is_done(self, item: BatchItem, pipeline: Pipeline, outputs: Sequence[str]) -> bool:
        """Whether a rerun may skip ``item`` (see the module docstring).

        The input is hashed again only when its signature changed.
        """
        record = self.items.get(item.name)
        if not record or record.get("status") != "done":
            return False
        if record.get("pipeline") != pipeline.name:
            return False
        if record.get("fingerprint") != pipeline.fingerprint():
            return False
        if sorted(record.get("outputs", [])) != sorted(outputs):
            return False
        if not all((self.output_dir / name).exists() for name in outputs):
            return False
        recorded = record.get("input_hash")
        if not recorded:
            return False
        if self.known_hash(item) == recorded:
            return True
        try:
            current = item_hash(item)
        except OSError:
            return False
        if current != recorded:
            return False
        record["input_stat"] = item_signature(item)  # same content, new signature
        return True

    def owns(self, item: BatchItem, output: str) -> bool:
        """Whether ``output`` is recorded as written (or about to be) for ``item``."""
        record = self.items.get(item.name)
        return bool(record) and output in record.get("outputs", [])

    # ------------------------------------------------------------------ records
    def mark_pending(self, item: BatchItem, pipeline: Pipeline, outputs: Sequence[str]) -> None:
        """Record that ``item`` is submitted (a killed run leaves it ``pending``).

        A recorded hash and signature of the same input are kept: they are
        trusted only while the signature matches (:meth:`known_hash`).
        """
        previous = self.items.get(item.name, {})
        same_input = previous.get("input") == str(item.path)
        self.items[item.name] = {
            "input": str(item.path),
            "extra": {key: str(path) for key, path in item.extra.items()},
            "input_hash": previous.get("input_hash") if same_input else None,
            "input_stat": previous.get("input_stat") if same_input else None,
            "pipeline": pipeline.name,
            "fingerprint": pipeline.fingerprint(),
            "status": "pending",
            "seconds": None,
            "worker": None,
            "error": None,
            "outputs": list(outputs),
            "row": {},
            "finished": None,
        }

    def record(self, item: BatchItem, **fields: Any) -> dict[str, Any]:
        """Update ``item``'s record with ``fields`` (status, seconds, hashes, ...)."""
        record = self.items.setdefault(item.name, {"input": str(item.path)})
        record.update(fields)
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return record


def _jsonable(value: Any) -> Any:
    """JSON for numpy scalars and arrays, paths and tuples in rows."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
