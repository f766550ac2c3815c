"""Test-wide settings: keep caches out of the user's folders, run on the CPU unless told."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty ``SEGLAB_CACHE_DIR`` of its own session."""
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path_factory.mktemp("seglab-cache")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread, then restore the previous setting.

    On small shared machines (2 cores), OpenMP threads spinning against each
    other make tiny networks several times slower than a single thread.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def make_tiny_sam():
    """The one way SAM tests get a model: ``make_tiny_sam(seed=0, **sizes) -> SamModel``.

    A small SAM of the real ``segment_anything.modeling`` classes with random
    weights (:func:`napari_seglab.sam.build_tiny_sam`, 256-px input, 16x16
    embedding, 32 channels), on the CPU. The same seed and sizes give the same
    weights; every call returns a fresh model, so a test may change it.
    ``sizes`` override fields of the architecture (e.g. ``prompt_embed_dim=48``).
    """
    pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from napari_seglab.sam import build_tiny_sam

    def make(seed: int = 0, **sizes):
        return build_tiny_sam(seed=seed, device="cpu", **sizes)

    return make


@pytest.fixture(scope="session")
def tiny_sam2_models():
    """``make(seed=0, image_size=128) -> Sam2Model``, built once per test session.

    SAM 2.1 Hiera tiny from the package's real config with random weights
    (:func:`napari_seglab.sam.sam2_model.build_sam2_model`), on the CPU. Each
    ``(seed, image_size)`` is built once (seconds) and shared by every SAM 2
    test module: a test that changes the weights must restore them.
    """
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from napari_seglab.sam.sam2_model import build_sam2_model

    built = {}

    def make(seed: int = 0, image_size: int = 128):
        key = (int(seed), int(image_size))
        if key not in built:
            built[key] = build_sam2_model(image_size=key[1], seed=key[0])
        return built[key]

    return make
