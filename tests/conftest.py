"""Test-wide settings: keep caches out of the user's folders, run on the CPU unless told."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty ``SEGLAB_CACHE_DIR`` of its own session."""
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path_factory.mktemp("seglab-cache")))
