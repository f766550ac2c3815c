"""Registry of SAM architectures and published checkpoints.

Two tables, both plain data:

* :data:`ARCHITECTURES`: the image-encoder sizes of Segment Anything
  (``vit_b``, ``vit_l``, ``vit_h``) plus ``tiny``, a small configuration of the
  same classes used by tests and quick benchmarks (it has no published weights).
* :data:`CHECKPOINTS`: published weight files, each with its download URL,
  file name, size and hash. MedSAM is a fine-tuned ``vit_b``.

Hashes are written as ``"<algorithm>:<hex digest>"``. The three official SAM
files are pinned by SHA-256. For MedSAM the SHA-256 is not pinned here: the
file is pinned by the MD5 that its Zenodo record publishes (``md5:...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINTS",
    "CheckpointSpec",
    "SamArchitecture",
    "get_architecture",
    "get_checkpoint",
]


@dataclass(frozen=True)
class SamArchitecture:
    """Sizes of a SAM model built from :mod:`segment_anything.modeling` classes.

    Attributes
    ----------
    name : str
    encoder_embed_dim, encoder_depth, encoder_num_heads : int
        Width, number of blocks and attention heads of the ViT image encoder.
    encoder_global_attn_indexes : tuple of int
        Blocks that attend globally (the others use windows).
    img_size : int
        Side of the square encoder input in pixels (1024 for published models).
    patch_size, window_size : int
    prompt_embed_dim : int
        Channels of the image embedding and prompt tokens (256 published).
    decoder_depth, decoder_mlp_dim, decoder_num_heads : int
        Size of the two-way transformer in the mask decoder.
    iou_head_hidden_dim : int
    mask_in_chans : int
        Hidden channels of the mask-prompt encoder.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for published models)."""
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class CheckpointSpec:
    """A published checkpoint file.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"vit_b"`` or ``"medsam"``.
    architecture : str
        Key into :data:`ARCHITECTURES`.
    url : str
        Where the file is downloaded from.
    filename : str
        File name in the cache folder (also the name to use when placing the
        file by hand).
    hash : str
        ``"sha256:<hex>"`` (or ``"md5:<hex>"`` where only that is published).
    size : int or None
        Size in bytes, when known (shown in messages).
    description : str
    homepage : str
    """

    name: str
    architecture: str
    url: str
    filename: str
    hash: str
    size: int | None = None
    description: str = ""
    homepage: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def hash_algorithm(self) -> str:
        """``"sha256"`` or ``"md5"``."""
        return self.hash.split(":", 1)[0]

    @property
    def hash_value(self) -> str:
        """Hex digest without the algorithm prefix."""
        return self.hash.split(":", 1)[1]


ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_b": SamArchitecture("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamArchitecture("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArchitecture("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Same classes, tiny sizes: for tests and --quick benchmarks only.
    "tiny": SamArchitecture(
        "tiny",
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        img_size=256,
        patch_size=16,
        window_size=4,
        prompt_embed_dim=32,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        mask_in_chans=8,
    ),
}

_SAM_HOME = "https://github.com/facebookresearch/segment-anything#model-checkpoints"

CHECKPOINTS: dict[str, CheckpointSpec] = {
    "vit_b": CheckpointSpec(
        name="vit_b",
        architecture="vit_b",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        filename="sam_vit_b_01ec64.pth",
        hash="sha256:ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        size=375_042_383,
        description="Segment Anything ViT-B (official, 91M parameters)",
        homepage=_SAM_HOME,
    ),
    "vit_l": CheckpointSpec(
        name="vit_l",
        architecture="vit_l",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        filename="sam_vit_l_0b3195.pth",
        hash="sha256:3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        size=1_249_524_607,
        description="Segment Anything ViT-L (official, 308M parameters)",
        homepage=_SAM_HOME,
    ),
    "vit_h": CheckpointSpec(
        name="vit_h",
        architecture="vit_h",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        filename="sam_vit_h_4b8939.pth",
        hash="sha256:a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        size=2_564_550_879,
        description="Segment Anything ViT-H (official, 636M parameters)",
        homepage=_SAM_HOME,
    ),
    "medsam": CheckpointSpec(
        name="medsam",
        architecture="vit_b",
        url="https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
        filename="medsam_vit_b.pth",
        # Zenodo publishes the MD5; no SHA-256 is pinned for this file.
        hash="md5:3bb6db55bd0c9ca30b61248bca72f8d6",
        size=None,
        description="MedSAM: SAM ViT-B fine-tuned on medical images (box prompts)",
        homepage="https://github.com/bowang-lab/MedSAM",
        aliases=("medsam_vit_b",),
    ),
}


def get_architecture(name: str) -> SamArchitecture:
    """Architecture by name (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"Unknown SAM architecture {name!r}: expected one of {sorted(ARCHITECTURES)}."
        ) from None


def get_checkpoint(name: str) -> CheckpointSpec:
    """Published checkpoint by registry name or alias (``vit_b``, ``medsam`` ...)."""
    for spec in CHECKPOINTS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise ValueError(
        f"Unknown SAM checkpoint {name!r}: expected one of {sorted(CHECKPOINTS)} "
        "(or pass checkpoint=<path to a .pth file>)."
    )
