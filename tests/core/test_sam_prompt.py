"""Prompting: parity with segment_anything.SamPredictor on a tiny in-process SAM."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything import SamPredictor  # noqa: E402

from napari_seglab.data import nuclei_2d  # noqa: E402
from napari_seglab.sam import PromptSegmenter, SamInput  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


@pytest.fixture(scope="module")
def model(make_tiny_sam):
    return make_tiny_sam(seed=1)


@pytest.fixture(scope="module")
def image():
    # Non-square on purpose: the resize/pad and (row, col) -> (x, y) conversion must be right.
    return nuclei_2d((120, 200), n_objects=12, seed=3).image


@pytest.fixture(scope="module")
def pair(model, image):
    ours = PromptSegmenter(model)
    ours.set_image(image)
    official = SamPredictor(model.sam)
    official.set_image(SamInput(image).plane())
    return ours, official


def official_args(points=None, labels=None, box=None):
    kwargs = {}
    if points is not None:
        kwargs["point_coords"] = np.asarray(points, float)[:, ::-1]  # (row, col) -> (x, y)
        kwargs["point_labels"] = np.asarray(labels)
    if box is not None:
        r0, c0, r1, c1 = box
        kwargs["box"] = np.array([c0, r0, c1, r1], float)
    return kwargs


PROMPTS = [
    {"points": [[60, 50]], "labels": [1]},
    {"points": [[60, 50], [20, 150]], "labels": [1, 0]},
    {"box": (30, 40, 90, 160)},
    {"points": [[60, 100], [35, 45]], "labels": [1, 0], "box": (30, 40, 90, 160)},
]


def test_embedding_equals_official(pair):
    ours, official = pair
    torch.testing.assert_close(ours.embedding.features, official.features, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_masks_match_official_predictor(pair, prompt, multimask):
    ours, official = pair
    prediction = ours.predict(**prompt, multimask=multimask)
    masks, scores, logits = official.predict(**official_args(**prompt), multimask_output=multimask)
    assert prediction.masks.shape == masks.shape
    for k in range(len(masks)):
        assert iou(prediction.masks[k], masks[k]) >= 0.99
    np.testing.assert_allclose(prediction.scores, scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(prediction.logits, logits, rtol=1e-3, atol=1e-3)
    assert prediction.best == int(np.argmax(scores))
    # Only the shown mask is upsampled on its own; it equals the full set's entry.
    fresh = ours.predict(**prompt, multimask=multimask)
    np.testing.assert_array_equal(fresh.mask, prediction.masks[prediction.best])


def test_mask_prompt_from_label_object_matches_official(pair, image):
    ours, official = pair
    labels = nuclei_2d((120, 200), n_objects=12, seed=3).labels
    obj = labels == labels[labels > 0][0]
    prediction = ours.predict(mask_input=obj, multimask=False)
    logits = ours.mask_to_logits(obj)
    masks, _scores, _ = official.predict(mask_input=logits[None], multimask_output=False)
    assert iou(prediction.mask, masks[0]) >= 0.99
    # Low-res logits of a prediction are accepted back as the next mask prompt.
    again = ours.predict(points=[[60, 50]], labels=[1], mask_input=prediction.logits[0])
    masks2, _, _ = official.predict(
        **official_args([[60, 50]], [1]), mask_input=prediction.logits[:1]
    )
    assert iou(again.masks[0], masks2[0]) >= 0.99


def test_negative_points_and_boxes_change_the_mask(pair):
    ours, _ = pair
    positive = ours.predict(points=[[60, 50]], labels=[1], multimask=False)
    with_negative = ours.predict(points=[[60, 50], [62, 56]], labels=[1, 0], multimask=False)
    with_box = ours.predict(points=[[60, 50]], labels=[1], box=(50, 40, 70, 60), multimask=False)
    assert not np.array_equal(positive.logits, with_negative.logits)
    assert not np.array_equal(positive.mask, with_negative.mask)
    assert not np.array_equal(positive.mask, with_box.mask)
    # The same point as negative instead of positive gives a different answer too.
    flipped = ours.predict(points=[[60, 50]], labels=[0], multimask=False)
    assert not np.array_equal(positive.mask, flipped.mask)


def test_any_dtype_and_rgb_inputs(model):
    seg = PromptSegmenter(model)
    grey = np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80)
    seg.set_image(grey)
    assert seg.predict(points=[[10, 10]]).masks.shape == (3, 64, 80)
    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[..., 0] = 200
    seg.set_image(rgb)
    assert seg.original_size == (64, 80)
    assert grey.dtype == np.float32
    assert grey[0, 0] == 0


def test_bad_prompts_raise_clear_errors(pair, make_tiny_sam):
    ours, _ = pair
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ours.predict(points=[[1, 2, 3]])
    with pytest.raises(ValueError, match="outside the image"):
        ours.predict(points=[[500, 10]], labels=[1])
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        ours.predict(points=[[10, 10]], labels=[2])
    with pytest.raises(ValueError, match="point labels"):
        ours.predict(points=[[10, 10], [20, 20]], labels=[1])
    with pytest.raises(ValueError, match="row0, col0, row1, col1"):
        ours.predict(box=(1, 2, 3))
    with pytest.raises(ValueError, match="mask_input"):
        ours.predict(mask_input=np.zeros((7, 7), np.float32))
    fresh = PromptSegmenter(make_tiny_sam())
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(points=[[1, 1]])


def test_stack_plane_uses_one_intensity_range(model):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, size=(3, 40, 50)).astype(np.uint16)
    stack[2] //= 4  # a dim plane must stay dim, not be stretched on its own
    source = SamInput(stack)
    assert source.is_stack
    assert source.n_planes == 3
    assert source.plane(2).mean() < source.plane(0).mean() / 2
    seg = PromptSegmenter(model)
    seg.set_image(stack, 1)
    assert seg.original_size == (40, 50)
    with pytest.raises(ValueError, match="out of range"):
        seg.set_image(stack, 3)
