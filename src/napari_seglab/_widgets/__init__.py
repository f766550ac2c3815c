"""Qt/magicgui dock widgets. Thin shells over the core: gather layers, run jobs, write results."""

from __future__ import annotations

import sys


def _keep_triton_away_from_software_opengl() -> None:
    """Stop torch from loading triton on machines without CUDA.

    torchvision imports ``torch._dynamo``, which imports triton when it is
    installed; triton's bundled LLVM then clashes with the LLVM that Mesa's
    software OpenGL (llvmpipe, used by napari on virtual screens and many
    laptops without a GPU driver) has already loaded, and the process dies with
    a segmentation fault. Triton only serves ``torch.compile`` on CUDA GPUs, so
    where CUDA is unavailable we make ``import triton`` fail cleanly instead;
    torch then reports it as absent. With CUDA, nothing is changed.
    """
    if "triton" in sys.modules:
        return
    import torch

    if not torch.cuda.is_available():
        sys.modules["triton"] = None  # type: ignore[assignment]


_keep_triton_away_from_software_opengl()
