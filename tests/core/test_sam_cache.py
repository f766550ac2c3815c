"""Embedding cache: reuse, invalidation, LRU bound, on-disk store and its signature."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
zarr = pytest.importorskip("zarr")

from napari_seglab.jobs import JobCancelled  # noqa: E402
from napari_seglab.sam import (  # noqa: E402
    EmbeddingCache,
    PromptSegmenter,
    SamInput,
    precompute_embeddings,
)


class EncoderCalls:
    """Counts real forward calls of the image encoder (and the planes it saw)."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.planes = 0
        self.handle = model.sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1
        self.planes += int(inputs[0].shape[0])


@pytest.fixture
def model(make_tiny_sam):
    return make_tiny_sam(seed=2)


@pytest.fixture
def stack():
    rng = np.random.default_rng(1)
    return rng.integers(0, 1000, size=(5, 48, 64)).astype(np.uint16)


def test_revisiting_a_plane_does_not_call_the_encoder(model, stack):
    counter = EncoderCalls(model)
    seg = PromptSegmenter(model, EmbeddingCache(max_items=8))
    source = SamInput(stack)
    first = seg.set_image(source, 2)
    seg.set_image(source, 3)
    assert counter.calls == 2
    again = seg.set_image(source, 2)
    assert counter.calls == 2
    assert again.features is first.features
    assert seg.cache.hits == 1
    assert seg.cache.misses == 2
    # A second segmenter sharing the cache reuses it too (widget + propagation).
    other = PromptSegmenter(model, seg.cache)
    other.set_image(source, 3)
    assert counter.calls == 2


def test_changed_image_invalidates(model, stack):
    counter = EncoderCalls(model)
    seg = PromptSegmenter(model)
    image = stack[0].copy()
    seg.set_image(image)
    before = seg.predict(points=[[10, 10]]).logits
    image[5:20, 5:20] = 999  # the user edits the image in place
    seg.set_image(image)
    assert counter.calls == 2
    after = seg.predict(points=[[10, 10]]).logits
    assert not np.array_equal(before, after)


def test_in_place_edit_follows_the_new_intensity_range(model, stack):
    # Issue 12: the second set_image used the first content's intensity range.
    seg = PromptSegmenter(model)
    image = stack[0].copy()
    seg.set_image(image)
    image *= 3  # same array object, new content and new range
    got = seg.set_image(image)
    fresh = PromptSegmenter(model).set_image(image.copy())
    assert got.key == fresh.key
    torch.testing.assert_close(got.features, fresh.features)
    assert seg.source_for(image).value_range == SamInput(image.copy()).value_range


def test_in_place_edit_of_a_stack_plane_follows_the_new_range(model, stack):
    seg = PromptSegmenter(model)
    data = stack.copy()
    seg.set_image(data, 1)
    data[1] += 5000  # the range of the whole stack changes
    got = seg.set_image(data, 1)
    fresh = PromptSegmenter(model).set_image(data.copy(), 1)
    assert got.key == fresh.key


def test_other_model_does_not_reuse_embeddings(stack, make_tiny_sam):
    cache = EmbeddingCache()
    a, b = make_tiny_sam(seed=2), make_tiny_sam(seed=3)
    counter_b = EncoderCalls(b)
    PromptSegmenter(a, cache).set_image(stack[0])
    PromptSegmenter(b, cache).set_image(stack[0])
    assert counter_b.calls == 1
    assert a.encoder_hash != b.encoder_hash


def test_lru_is_bounded(model, stack):
    cache = EmbeddingCache(max_items=2)
    seg = PromptSegmenter(model, cache)
    for plane in range(5):
        seg.set_image(stack, plane)
    assert len(cache) == 2
    counter = EncoderCalls(model)
    seg.set_image(stack, 4)  # most recent: still there
    assert counter.calls == 0
    seg.set_image(stack, 0)  # evicted long ago: recomputed
    assert counter.calls == 1


def test_disk_cache_is_reused_across_sessions(model, stack, tmp_path):
    store = tmp_path / "emb.zarr"
    list(precompute_embeddings(model, stack, EmbeddingCache(max_items=1, disk=store)))
    counter = EncoderCalls(model)
    fresh_session = EmbeddingCache(max_items=1, disk=store)
    seg = PromptSegmenter(model, fresh_session)
    loaded = seg.set_image(stack, 4)
    assert counter.calls == 0
    assert fresh_session.disk_hits == 1
    recomputed = PromptSegmenter(model, EmbeddingCache()).set_image(stack, 4)
    torch.testing.assert_close(loaded.features, recomputed.features)
    assert loaded.original_size == recomputed.original_size
    assert loaded.input_size == recomputed.input_size


def test_disk_entry_with_wrong_signature_is_not_reused(model, stack, tmp_path):
    store = tmp_path / "emb.zarr"
    cache = EmbeddingCache(disk=store)
    PromptSegmenter(model, cache).set_image(stack, 0)
    # Tamper: pretend the entry was written by another package version and another model.
    group = zarr.open_group(str(store), mode="a")
    (folder,) = list(group.group_keys())
    (name,) = list(group[folder].array_keys())
    array = group[folder][name]
    signature = dict(array.attrs["signature"])
    signature["package_version"] = "0.0.0-old"
    array.attrs["signature"] = signature
    counter = EncoderCalls(model)
    fresh = EmbeddingCache(disk=store)
    PromptSegmenter(model, fresh).set_image(stack, 0)
    assert counter.calls == 1
    assert fresh.disk_rejected == 1
    # The recomputed entry replaced the stale one and is reused next time.
    again = EmbeddingCache(disk=store)
    PromptSegmenter(model, again).set_image(stack, 0)
    assert counter.calls == 1
    assert again.disk_hits == 1


def test_precompute_reports_progress_skips_cached_and_cancels(model, stack):
    cache = EmbeddingCache(max_items=16)
    counter = EncoderCalls(model)
    PromptSegmenter(model, cache).set_image(stack, 2)
    events = list(precompute_embeddings(model, stack, cache, planes=[2, 1, 3, 0, 4], batch_size=2))
    assert [e.plane for e in events] == [2, 1, 3, 0, 4]
    assert [e.done for e in events] == [1, 2, 3, 4, 5]
    assert {(e.stage, e.total) for e in events} == {("embedding", 5)}
    assert events[0].cached
    assert not any(e.cached for e in events[1:])
    assert counter.planes == 5  # 1 before + 4 precomputed, none twice
    assert counter.calls == 3  # the 4 missing planes went in 2 batches of 2
    # Batched embeddings equal single-plane ones.
    single = PromptSegmenter(model, EmbeddingCache()).set_image(stack, 3)
    batched = cache.get(single.key, model)
    torch.testing.assert_close(batched.features, single.features, rtol=1e-4, atol=1e-5)

    cancel = threading.Event()
    fresh = EmbeddingCache()
    steps = precompute_embeddings(model, stack, fresh, cancel=cancel)
    next(steps)
    cancel.set()
    with pytest.raises(JobCancelled) as stop:
        next(steps)
    assert stop.value.partial == 1  # planes computed before the cancel
    assert len(fresh) == 1


def test_cache_memory_stays_bounded_with_disk(model, tmp_path):
    stack = np.random.default_rng(5).integers(0, 255, size=(12, 32, 32)).astype(np.uint8)
    cache = EmbeddingCache(max_items=3, disk=tmp_path / "e.zarr")
    list(precompute_embeddings(model, stack, cache))
    assert len(cache) == 3
    assert all(cache.has(key, model) for key in list(cache._items))
    counter = EncoderCalls(model)
    list(precompute_embeddings(model, stack, cache))
    assert counter.calls == 0  # everything found on disk, nothing recomputed


def test_concurrent_requests_for_one_plane_embed_it_once(model, stack):
    """The widget's background precompute and a click on the same plane share one encoding."""
    cache = EmbeddingCache()
    counter = EncoderCalls(model)
    source = SamInput(stack)
    results = []
    start = threading.Barrier(3)

    def click():
        start.wait()
        results.append(PromptSegmenter(model, cache).set_image(source, 1))

    def background():
        start.wait()
        list(precompute_embeddings(model, source, cache, planes=[1]))

    threads = [threading.Thread(target=f) for f in (click, click, background)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert counter.planes == 1
    assert len(results) == 2
    torch.testing.assert_close(results[0].features, results[1].features)


# -- a damaged disk store is never served (issue 12) ---------------------------------------


def _entry_folder(store):
    (folder,) = [p for p in store.iterdir() if p.is_dir()]
    (entry,) = [p for p in folder.iterdir() if p.is_dir()]
    return entry


def _chunk(store):
    (chunk,) = [
        p for p in _entry_folder(store).rglob("*") if p.is_file() and p.name != "zarr.json"
    ]
    return chunk


def _damaged_store_is_recomputed(model, stack, tmp_path, damage):
    store = tmp_path / "emb.zarr"
    expected = PromptSegmenter(model, EmbeddingCache(disk=store)).set_image(stack, 0)
    damage(store)
    counter = EncoderCalls(model)
    fresh = EmbeddingCache(disk=store)
    with pytest.warns(RuntimeWarning, match="Discarded the cached SAM embedding"):
        got = PromptSegmenter(model, fresh).set_image(stack, 0)
    assert counter.calls == 1
    torch.testing.assert_close(got.features, expected.features)
    assert got.original_size == expected.original_size
    # The recomputed entry replaced the damaged one and is reused without a warning.
    again = EmbeddingCache(disk=store)
    PromptSegmenter(model, again).set_image(stack, 0)
    assert again.disk_hits == 1
    assert counter.calls == 1


def test_deleted_chunk_is_not_served_as_zeros(model, stack, tmp_path):
    _damaged_store_is_recomputed(model, stack, tmp_path, lambda store: _chunk(store).unlink())


def test_altered_bytes_are_not_served(model, stack, tmp_path):
    def alter(store):
        chunk = _chunk(store)
        data = bytearray(chunk.read_bytes())
        data[100:108] = b"\xff" * 8  # a NaN in float32, same size
        chunk.write_bytes(bytes(data))

    _damaged_store_is_recomputed(model, stack, tmp_path, alter)


def test_truncated_chunk_is_discarded(model, stack, tmp_path):
    def truncate(store):
        chunk = _chunk(store)
        chunk.write_bytes(chunk.read_bytes()[:1000])

    _damaged_store_is_recomputed(model, stack, tmp_path, truncate)


def test_edited_signature_field_is_not_served(model, stack, tmp_path):
    def edit(store):
        group = zarr.open_group(str(store), mode="a")
        (folder,) = list(group.group_keys())
        (name,) = list(group[folder].array_keys())
        signature = dict(group[folder][name].attrs["signature"])
        signature["original_size"] = [10, 20]
        group[folder][name].attrs["signature"] = signature

    _damaged_store_is_recomputed(model, stack, tmp_path, edit)


def test_garbage_entry_metadata_is_discarded(model, stack, tmp_path):
    def garbage(store):
        (_entry_folder(store) / "zarr.json").write_text("{not json")

    _damaged_store_is_recomputed(model, stack, tmp_path, garbage)


def test_garbage_store_metadata_starts_a_new_store(model, stack, tmp_path):
    store = tmp_path / "emb.zarr"
    expected = PromptSegmenter(model, EmbeddingCache(disk=store)).set_image(stack, 0)
    (store / "zarr.json").write_text("{not json")
    fresh = EmbeddingCache(disk=store)
    with pytest.warns(RuntimeWarning, match="store is unreadable"):
        got = PromptSegmenter(model, fresh).set_image(stack, 0)
    torch.testing.assert_close(got.features, expected.features)
    again = EmbeddingCache(disk=store)
    PromptSegmenter(model, again).set_image(stack, 0)
    assert again.disk_hits == 1


def test_entry_of_the_wrong_shape_is_not_served(model, stack, tmp_path, make_tiny_sam):
    store = tmp_path / "emb.zarr"
    PromptSegmenter(model, EmbeddingCache(disk=store)).set_image(stack, 0)
    # A model with the same encoder identity but other embedding sizes must not get it.
    other = make_tiny_sam(seed=2, prompt_embed_dim=48)
    other.encoder_hash = model.encoder_hash
    with pytest.warns(RuntimeWarning, match="shape"):
        got = PromptSegmenter(other, EmbeddingCache(disk=store)).set_image(stack, 0)
    assert got.features.shape[1] == 48
