"""SAM 2 embeddings in the on-disk embedding store (:class:`~.embedding.EmbeddingCache`).

A SAM 2 entry is a zarr group named like a SAM entry (``<encoder>_<size>/<content
hash>``) holding the three ``backbone_fpn`` levels as arrays ``level0``,
``level1``, ``level2`` (without the batch axis, float32 or float16 as the
cache's ``disk_dtype``). The group's ``signature`` attribute holds the same
fields as a SAM entry's (content hash, encoder hash, input size, package
version, sizes) plus the level shapes, the dtype and a SHA-256 over the
signature and the bytes of every level; it is written last, so an interrupted
write has none. The positional encodings are not stored: they depend on the
grid size only and are taken from the model (:func:`~.sam2_model.shared_pos_enc`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .sam2_model import Sam2Embedding, Sam2Model, shared_pos_enc

__all__ = ["read_sam2_entry", "write_sam2_entry"]

_LEVELS = 3


def _checksum(signature: dict, levels: list[np.ndarray]) -> str:
    fields = {k: v for k, v in signature.items() if k != "checksum"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for data in levels:
        digest.update(np.ascontiguousarray(data).data)
    return digest.hexdigest()


def write_sam2_entry(
    group: Any, name: str, embedding: Sam2Embedding, signature: dict, dtype: str
) -> None:
    """Store ``embedding`` as the group ``name`` of the zarr ``group`` (replacing it)."""
    levels = [t[0].detach().float().cpu().numpy().astype(dtype) for t in embedding.backbone_fpn]
    entry = group.create_group(name, overwrite=True)
    for index, data in enumerate(levels):
        options = {"shape": data.shape, "dtype": dtype, "chunks": data.shape}
        if hasattr(entry, "create_array"):  # zarr >= 3
            array = entry.create_array(f"level{index}", compressors=None, **options)
        else:  # pragma: no cover - zarr 2
            array = entry.create_dataset(f"level{index}", compressor=None, **options)
        array[...] = data
    signature = dict(signature, shapes=[list(d.shape) for d in levels], dtype=dtype)
    signature["checksum"] = _checksum(signature, levels)
    entry.attrs["signature"] = signature  # last: an interrupted write has no signature


def read_sam2_entry(
    entry: Any, stored: dict, model: Sam2Model, key: str
) -> tuple[Sam2Embedding | None, str | None]:
    """The embedding stored in ``entry`` (whose signature ``stored`` matched), or why not.

    Returns
    -------
    (Sam2Embedding, None) for a sound entry, (None, reason) otherwise.
    """
    import torch

    if "checksum" not in stored:
        return None, "it has no checksum"
    shapes = stored.get("shapes")
    if not isinstance(shapes, list) or len(shapes) != _LEVELS:
        return None, f"it does not hold {_LEVELS} feature levels"
    try:
        levels = [np.asarray(entry[f"level{i}"][...]) for i in range(_LEVELS)]
    except Exception as error:
        return None, f"it cannot be read ({error})"
    found = [list(d.shape) for d in levels]
    dtypes = {str(d.dtype) for d in levels}
    if found != shapes or dtypes != {stored.get("dtype")}:
        return None, (
            f"its data ({found}, {sorted(dtypes)}) does not match its signature "
            f"({shapes}, {stored.get('dtype')})"
        )
    if shapes[-1][-1] * 16 != model.img_size:
        return None, f"its grid {shapes[-1][1:]} does not fit the {model.img_size} px input"
    if _checksum(stored, levels) != stored["checksum"]:
        return None, "its checksum does not match (altered, truncated or missing data)"
    if not all(np.isfinite(d).all() for d in levels):
        return None, "it holds non-finite values"
    fpn = [torch.as_tensor(d.astype(np.float32))[None] for d in levels]
    embedding = Sam2Embedding(
        backbone_fpn=fpn,
        vision_pos_enc=shared_pos_enc(model, fpn),
        vision_features=fpn[-1],
        original_size=tuple(stored["original_size"]),
        key=key,
    )
    return embedding, None
