"""One random-weight SAM 2 network per (seed, input size) for the SAM 2 test modules.

Building the real Hiera-tiny config takes seconds; the modules that only read
the network share it (none changes its weights, or restores them).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def tiny_sam2(seed: int = 0, image_size: int = 128):
    """``build_sam2_model(image_size=image_size, seed=seed)``, built once per test process."""
    from napari_seglab.sam.sam2_model import build_sam2_model

    return build_sam2_model(image_size=image_size, seed=seed)
