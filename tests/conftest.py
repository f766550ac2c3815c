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
