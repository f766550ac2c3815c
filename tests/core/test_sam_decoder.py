"""The rewritten mask decoder computes what segment_anything's MaskDecoder computes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer  # noqa: E402

from napari_seglab.data import nuclei_2d  # noqa: E402
from napari_seglab.sam import PromptSegmenter  # noqa: E402
from napari_seglab.sam import decoder as fast  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_decoder(depth: int, dim: int = 32, grid: int | tuple[int, int] = 12, seed: int = 0):
    """A SAM decoder of ``depth`` layers with random weights, and its prompt encoder."""
    torch.manual_seed(seed)
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(depth=depth, embedding_dim=dim, mlp_dim=64, num_heads=4),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
    )
    prompts = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(rows, cols),
        input_image_size=(16 * rows, 16 * cols),
        mask_in_chans=8,
    )
    # Default initialisation leaves norms at (1, 0): randomise them so the folding is tested.
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, (torch.nn.LayerNorm,)) or type(module).__name__ == "LayerNorm2d":
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.3)
    return decoder.eval(), prompts.eval()


def reference_and_fast(decoder, prompts, points, labels, box, mask, multimask, seed=1):
    torch.manual_seed(seed)
    grid = prompts.image_embedding_size
    embedding = torch.randn(1, decoder.transformer_dim, *grid)
    with torch.inference_mode():
        sparse, dense = prompts(points=(points, labels), boxes=box, masks=mask)
        pe = prompts.get_dense_pe()
        ref_masks, ref_iou = decoder(embedding, pe, sparse, dense, multimask)
        prepared = fast.prepare_image(decoder, embedding, pe, dense)
        masks, iou = fast.decode(decoder, prepared, sparse, multimask)
    return (ref_masks, ref_iou), (masks, iou)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", ["point", "points+box", "mask"])
def test_decode_equals_mask_decoder(depth, multimask, prompt):
    decoder, prompts = random_decoder(depth)
    points = torch.tensor([[[40.0, 70.0], [120.0, 30.0], [90.0, 150.0]]])
    labels = torch.tensor([[1, 0, 1]])
    box = torch.tensor([[20.0, 30.0, 150.0, 160.0]]) if prompt == "points+box" else None
    mask = torch.randn(1, 1, 48, 48) * 4 if prompt == "mask" else None
    if prompt == "point":
        points, labels = points[:, :1], labels[:, :1]
    (ref_masks, ref_iou), (masks, iou) = reference_and_fast(
        decoder, prompts, points, labels, box, mask, multimask
    )
    assert masks.shape == tuple(ref_masks.shape)
    torch.testing.assert_close(masks.all(), ref_masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, ref_iou, rtol=1e-4, atol=1e-5)
    # One proposal on its own equals its entry in the full set.
    torch.testing.assert_close(masks.one(len(masks) - 1), ref_masks[0, -1], rtol=1e-4, atol=1e-4)


def test_non_square_grid():
    decoder, prompts = random_decoder(2, grid=(9, 14))
    points, labels = torch.tensor([[[40.0, 70.0], [200.0, 100.0]]]), torch.tensor([[1, 0]])
    (ref_masks, ref_iou), (masks, iou) = reference_and_fast(
        decoder, prompts, points, labels, None, None, True
    )
    assert masks.shape == tuple(ref_masks.shape) == (1, 3, 36, 56)
    torch.testing.assert_close(masks.all(), ref_masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, ref_iou, rtol=1e-4, atol=1e-5)


def test_more_tokens_than_one_block(monkeypatch):
    """Blocked passes give the same result whatever the block size."""
    decoder, prompts = random_decoder(2, grid=12)
    points, labels = torch.tensor([[[40.0, 70.0]]]), torch.tensor([[1]])
    results = []
    for rows in (7, 64, 1024):  # 144 tokens: uneven blocks, several blocks, one block
        monkeypatch.setattr(fast, "BLOCK_ROWS", rows)
        _, (masks, iou) = reference_and_fast(decoder, prompts, points, labels, None, None, True)
        results.append((masks.all(), iou))
    for masks, iou in results[:-1]:
        torch.testing.assert_close(masks, results[-1][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(iou, results[-1][1])


def test_prepared_image_follows_decoder_weight_changes(make_tiny_sam):
    """Loading new decoder weights in place must not reuse work prepared for the old ones."""
    model = make_tiny_sam(seed=4)
    image = nuclei_2d((64, 80), n_objects=4, seed=2).image
    segmenter = PromptSegmenter(model)
    segmenter.set_image(image)
    before = segmenter.predict(points=[[30, 40]], labels=[1]).logits
    again = segmenter.predict(points=[[30, 40]], labels=[1]).logits
    np.testing.assert_array_equal(before, again)
    with torch.no_grad():
        model.sam.mask_decoder.output_upscaling[0].weight.mul_(1.5)
    after = segmenter.predict(points=[[30, 40]], labels=[1]).logits
    reference = PromptSegmenter(model, segmenter.cache, fast_decoder=False)
    reference.set_image(image)
    expected = reference.predict(points=[[30, 40]], labels=[1]).logits
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-4)
