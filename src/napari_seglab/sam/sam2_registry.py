"""Registry of the published SAM 2.1 checkpoints (optional ``sam2`` package).

Plain data, like :mod:`.registry` for SAM: each entry names the ``sam2``
package config the network is built from, the official download URL, the file
name in the cache folder and the file size in bytes.

Meta publishes no checksum for these files (neither the download script of
the SAM 2 repository nor the model cards give one), so they are pinned by
their size: a cached or downloaded file of another size is refused. The
SHA-256 of the file is computed on first use and remembered next to it; it
identifies the weights in the embedding cache (see :mod:`.sam2_download`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SAM2_CHECKPOINTS", "Sam2CheckpointSpec", "get_sam2_checkpoint", "is_sam2_name"]

_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_HOME = "https://github.com/facebookresearch/sam2#model-description"


@dataclass(frozen=True)
class Sam2CheckpointSpec:
    """A published SAM 2 checkpoint file.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"sam2.1_hiera_tiny"``.
    config : str
        Config inside the ``sam2`` package, e.g. ``"configs/sam2.1/sam2.1_hiera_t.yaml"``.
    url : str
    filename : str
        File name in the cache folder (``<cache>/sam/<filename>``).
    size : int
        Size in bytes (the pin: no checksum is published).
    parameters_m : float
        Parameters in millions (the SAM 2 model card).
    description : str
    homepage : str
    aliases : tuple of str
    """

    name: str
    config: str
    url: str
    filename: str
    size: int
    parameters_m: float
    description: str = ""
    homepage: str = _HOME
    aliases: tuple[str, ...] = field(default=())

    #: No checksum is published for SAM 2 files (see the module notes).
    hash = None


def _spec(size_name: str, config: str, size: int, params: float, text: str, *aliases: str):
    name = f"sam2.1_hiera_{size_name}"
    return Sam2CheckpointSpec(
        name=name,
        config=f"configs/sam2.1/sam2.1_hiera_{config}.yaml",
        url=f"{_BASE_URL}/{name}.pt",
        filename=f"{name}.pt",
        size=size,
        parameters_m=params,
        description=text,
        aliases=aliases,
    )


SAM2_CHECKPOINTS: dict[str, Sam2CheckpointSpec] = {
    spec.name: spec
    for spec in (
        _spec("tiny", "t", 156_008_466, 38.9, "SAM 2.1 Hiera tiny (fastest)", "sam2_tiny"),
        _spec("small", "s", 184_416_285, 46.0, "SAM 2.1 Hiera small", "sam2_small"),
        _spec("base_plus", "b+", 323_606_802, 80.8, "SAM 2.1 Hiera base-plus", "sam2_base_plus"),
        _spec("large", "l", 898_083_611, 224.4, "SAM 2.1 Hiera large (best)", "sam2_large"),
    )
}


def is_sam2_name(name: object) -> bool:
    """Whether ``name`` is a registered SAM 2 checkpoint, alias or ``sam2`` config name."""
    if not isinstance(name, str):
        return isinstance(name, Sam2CheckpointSpec)
    if name.startswith("configs/sam2"):
        return True
    return any(name == s.name or name in s.aliases for s in SAM2_CHECKPOINTS.values())


def get_sam2_checkpoint(name: str) -> Sam2CheckpointSpec:
    """Registered SAM 2 checkpoint by name or alias (``"sam2.1_hiera_tiny"`` ...)."""
    for spec in SAM2_CHECKPOINTS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise ValueError(
        f"Unknown SAM 2 checkpoint {name!r}: expected one of {sorted(SAM2_CHECKPOINTS)}."
    )
