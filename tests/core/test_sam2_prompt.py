"""SAM 2 through PromptSegmenter: same prompts, same Prediction, parity with SAM2ImagePredictor."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_seglab.sam import EmbeddingCache, PromptSegmenter  # noqa: E402

SIZE = 128  # encoder input of the test model (the real Hiera-tiny config otherwise)


@pytest.fixture(scope="module")
def model(one_torch_thread, tiny_sam2_models):
    return tiny_sam2_models(image_size=SIZE)


@pytest.fixture(scope="module")
def image():
    """``(72, 96)`` uint16 with a bright disc and a dimmer bar (not square: stretched)."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:72, :96]
    img = rng.normal(300, 40, size=(72, 96))
    img[(rows - 30) ** 2 + (cols - 40) ** 2 < 14**2] += 900
    img[50:60, 60:90] += 500
    return np.clip(img, 0, 4000).astype(np.uint16)


@pytest.fixture(scope="module")
def both(model, image):
    """Our segmenter and the official predictor, set on the same uint8 RGB plane."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    seg = PromptSegmenter(model, EmbeddingCache(max_items=2))
    seg.set_image(image)
    rgb = seg.source_for(image).plane(None)
    official = SAM2ImagePredictor(model.net)
    grid = SIZE // 4
    official._bb_feat_sizes = [(grid, grid), (grid // 2, grid // 2), (grid // 4, grid // 4)]
    official.set_image(rgb)
    return seg, official


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _compare(pred, official_out):
    masks, scores, low_res = official_out
    np.testing.assert_allclose(pred.scores, scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.logits, low_res, rtol=1e-4, atol=1e-5)
    assert pred.masks.shape == masks.shape
    for ours, theirs in zip(pred.masks, masks):
        assert _iou(ours, theirs.astype(bool)) >= 0.99
    assert pred.mask.shape == masks.shape[1:]


def test_one_click_gives_the_official_three_proposals(both):
    seg, official = both
    pred = seg.predict(points=[[30, 40]], labels=[1])
    out = official.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
    assert pred.scores.shape == (3,)
    assert pred.logits.shape == (3, SIZE // 4, SIZE // 4)
    _compare(pred, out)


def test_clicks_and_a_box_give_the_official_single_mask(both):
    seg, official = both
    pred = seg.predict(
        points=[[30, 40], [55, 75]], labels=[1, 0], box=(12, 20, 48, 60), multimask=False
    )
    out = official.predict(
        point_coords=np.array([[40.0, 30.0], [75.0, 55.0]]),
        point_labels=np.array([1, 0]),
        box=np.array([20.0, 12.0, 60.0, 48.0]),
        multimask_output=False,
    )
    assert pred.scores.shape == (1,)
    _compare(pred, out)


def test_a_box_alone_and_a_mask_input_follow_the_official_predictor(both):
    seg, official = both
    first = seg.predict(box=(45, 55, 62, 92))
    out = official.predict(box=np.array([55.0, 45.0, 92.0, 62.0]))
    _compare(first, out)
    previous = first.logits[first.best]
    again = seg.predict(points=[[55, 70]], labels=[1], mask_input=previous, multimask=False)
    out = official.predict(
        point_coords=np.array([[70.0, 55.0]]),
        point_labels=np.array([1]),
        mask_input=previous[None],
        multimask_output=False,
    )
    _compare(again, out)


def test_a_full_size_mask_prompt_and_the_shared_cache(model, image, both):
    seg, _ = both
    mask = np.zeros(image.shape, bool)
    mask[20:40, 30:50] = True
    pred = seg.predict(mask_input=mask, multimask=False)
    assert pred.mask.shape == image.shape
    assert pred.mask.dtype == bool
    other = PromptSegmenter(model, seg.cache)
    assert other.set_image(image) is seg.embedding  # no second encoding
    with pytest.raises(ValueError, match="outside the image"):
        seg.predict(points=[[200, 5]])
