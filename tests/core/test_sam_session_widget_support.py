"""What the SAM widgets ask of the session: prompt state, embedded planes, stale results."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")

from napari_seglab.jobs import run_to_end
from napari_seglab.sam import EmbeddingCache
from napari_seglab.sessions import SamPromptSession


@pytest.fixture(scope="module")
def model(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    data = rng.normal(50, 5, (4, 32, 48)).astype(np.float32)
    data[:, 8:20, 10:30] += 100
    return data


def test_has_prompts_follows_every_plane(model, stack):
    session = SamPromptSession(EmbeddingCache(max_items=4))
    session.set_model(model)
    session.set_image(stack)
    assert not session.has_prompts
    session.add_point((3, 10, 12))
    assert session.has_prompts
    session.set_prompts(3)  # empties plane 3: nothing left anywhere
    assert not session.has_prompts
    session.add_point((1, 10, 12))
    session.clear_prompts()
    assert not session.has_prompts


def test_is_embedded_sees_the_disk_cache_of_another_session(model, stack, tmp_path):
    first = SamPromptSession(EmbeddingCache(max_items=4, disk=tmp_path / "emb.zarr"))
    first.set_model(model)
    first.set_image(stack)
    assert not first.is_embedded(2)
    run_to_end(first.embedding_job([2]))
    assert first.is_embedded(2)
    assert not first.is_embedded(1)
    reopened = SamPromptSession(EmbeddingCache(max_items=4, disk=tmp_path / "emb.zarr"))
    reopened.set_model(model)
    reopened.set_image(stack.copy())
    assert reopened.is_embedded(2)


@pytest.mark.parametrize("change", ["model", "image"])
def test_a_result_from_before_a_new_model_or_image_is_dropped(model, stack, change, make_tiny_sam):
    session = SamPromptSession(EmbeddingCache(max_items=4))
    session.set_model(model)
    session.set_image(stack)
    session.add_point((1, 12, 20))
    result = run_to_end(session.prediction_job(1))
    if change == "model":
        session.set_model(make_tiny_sam(seed=4), decoder="tuned.pt")
        assert session.model_decoder == "tuned.pt"
    else:
        session.set_image(stack[::-1].copy())
    assert not session.accept(result)
    assert session.prediction is None
