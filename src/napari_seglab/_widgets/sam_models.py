"""The models the SAM widgets offer: SAM checkpoints, plus SAM 2.1 when its extra is installed.

SAM 2 entries (``sam2.1_hiera_tiny`` ...) appear only when the optional
``sam2`` package can be imported (``pip install napari-seglab[sam2]``, see
docs/sam.md), so the list never offers a model that cannot load.
"""

from __future__ import annotations

__all__ = ["SAM_MODELS", "model_choices"]

#: Registered SAM checkpoints, fastest first after the default.
SAM_MODELS = ("vit_b", "vit_l", "vit_h", "medsam")


def model_choices() -> tuple[str, ...]:
    """SAM names, then the SAM 2.1 names (tiny to large) when ``sam2`` is installed."""
    from ..sam.sam2_model import is_sam2_available
    from ..sam.sam2_registry import SAM2_CHECKPOINTS

    return SAM_MODELS + (tuple(SAM2_CHECKPOINTS) if is_sam2_available() else ())
