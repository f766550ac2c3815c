"""SAM 2 models: building from the package configs, encoding like the official predictor, cache."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_seglab.sam import EmbeddingCache  # noqa: E402
from napari_seglab.sam.sam2_model import (  # noqa: E402
    Sam2Embedding,
    Sam2NotInstalledError,
    _embedding_weights_hash,
    build_sam2_model,
    encode_plane,
    preprocess_plane,
)


@pytest.fixture(scope="module")
def model(one_torch_thread, tiny_sam2_models):
    return tiny_sam2_models()


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)


def test_build_uses_the_real_config_with_the_smaller_input(model):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    assert isinstance(model.net, SAM2VideoPredictor)
    assert not model.net.training
    assert model.img_size == 128
    assert model.net.image_encoder.trunk.patch_embed.proj.out_channels == 96  # Hiera tiny
    layer = model.net.memory_attention.layers[0]
    assert layer.self_attn.freqs_cis.shape[0] == 8 * 8  # RoPE follows the input size
    assert model.encoder_hash.startswith("params:")
    assert _embedding_weights_hash(model.net) == model.encoder_hash
    weight = model.net.sam_mask_decoder.conv_s0.weight  # forward_image applies it
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0, 0, 0] += 1.0
        assert _embedding_weights_hash(model.net) != model.encoder_hash
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_encoding_equals_the_official_preprocessing_and_forward_image(model, rgb):
    from sam2.utils.transforms import SAM2Transforms

    before = rgb.copy()
    ours = encode_plane(model, rgb)
    np.testing.assert_array_equal(rgb, before)
    official_input = SAM2Transforms(model.img_size, 0.0)(rgb)[None]
    with torch.no_grad():
        official = model.net.forward_image(official_input)
    assert len(ours.backbone_fpn) == len(official["backbone_fpn"]) == 3
    for mine, theirs in zip(ours.backbone_fpn, official["backbone_fpn"]):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    for mine, theirs in zip(ours.vision_pos_enc, official["vision_pos_enc"]):
        torch.testing.assert_close(mine, theirs)
    assert ours.vision_features is ours.backbone_fpn[-1]
    assert ours.original_size == (40, 56)
    assert ours.input_size == (128, 128)
    large = np.random.default_rng(1).integers(0, 256, size=(150, 211, 3), dtype=np.uint8)
    shrunk = SAM2Transforms(model.img_size, 0.0)(large)[None]  # antialiased downscaling
    torch.testing.assert_close(preprocess_plane(model, large), shrunk, rtol=0, atol=0)
    assert [tuple(t.shape) for t in ours.backbone_fpn] == [
        (1, 32, 32, 32),
        (1, 64, 16, 16),
        (1, 256, 8, 8),
    ]


def test_positional_encodings_are_shared_between_embeddings(model, rgb):
    first = encode_plane(model, rgb)
    second = encode_plane(model, rgb[::-1].copy())
    assert all(a is b for a, b in zip(first.vision_pos_enc, second.vision_pos_enc))
    assert first.nbytes() == sum(t.numel() * 4 for t in first.backbone_fpn)


def test_the_cache_encodes_each_plane_once_and_keeps_it_on_disk(model, rgb, tmp_path):
    store = tmp_path / "store.zarr"
    cache = EmbeddingCache(max_items=4, disk=store)
    calls = []
    handle = model.net.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = cache.get_or_compute(model, rgb)
        again = cache.get_or_compute(model, rgb.copy())
        reopened = EmbeddingCache(max_items=4, disk=store)  # a new session, same store
        from_disk = reopened.get_or_compute(model, rgb)
    finally:
        handle.remove()
    assert isinstance(first, Sam2Embedding)
    assert again is first
    assert len(calls) == 1
    assert (cache.misses, cache.hits) == (1, 1)
    assert (reopened.misses, reopened.disk_hits) == (0, 1)
    assert first.key.split("-")[1] == "128"
    for stored, fresh in zip(from_disk.backbone_fpn, first.backbone_fpn):
        assert torch.equal(stored, fresh)
    assert all(a is b for a, b in zip(from_disk.vision_pos_enc, first.vision_pos_enc))
    assert from_disk.original_size == first.original_size


def test_a_damaged_disk_entry_is_discarded_and_computed_again(model, rgb, tmp_path):
    import zarr

    store = tmp_path / "store.zarr"
    cache = EmbeddingCache(max_items=4, disk=store)
    first = cache.get_or_compute(model, rgb)
    level = zarr.open_group(str(store), mode="a")[cache._disk_name(first.key)]["level1"]
    data = level[...]
    data[0, 0, 0] += 1.0
    level[...] = data
    reopened = EmbeddingCache(max_items=4, disk=store)
    with pytest.warns(RuntimeWarning, match="checksum does not match"):
        again = reopened.get_or_compute(model, rgb)
    assert (reopened.disk_rejected, reopened.misses) == (1, 1)
    assert torch.equal(again.backbone_fpn[1], first.backbone_fpn[1])


def test_missing_package_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2", None)
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)
    with pytest.raises(Sam2NotInstalledError, match=r"--no-build-isolation \"sam2==1\.1\.0\""):
        build_sam2_model(image_size=128)
    assert issubclass(Sam2NotInstalledError, ImportError)


def test_bad_image_size_is_refused():
    with pytest.raises(ValueError, match="multiple of 64"):
        build_sam2_model(image_size=100)


def test_background_precompute_fills_the_cache_for_prompting(model):
    from napari_seglab.jobs import run_to_end
    from napari_seglab.sam import PromptSegmenter, SamInput, precompute_embeddings

    stack = np.random.default_rng(2).integers(0, 900, size=(2, 30, 36)).astype(np.uint16)
    cache = EmbeddingCache(max_items=4)
    source = SamInput(stack)
    assert run_to_end(precompute_embeddings(model, source, cache)) == 2
    segmenter = PromptSegmenter(model, cache)
    assert isinstance(segmenter.set_image(source, 1), Sam2Embedding)
    assert (cache.misses, cache.hits) == (2, 1)
