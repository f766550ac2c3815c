"""The one image <-> model frame conversion, and the segment-anything version check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

from napari_seglab.sam import PromptSegmenter, compat  # noqa: E402
from napari_seglab.sam.frames import input_size, to_model_xy, upsample_logits  # noqa: E402


@pytest.mark.parametrize(
    "shape", [(64, 64), (100, 70), (70, 100), (300, 517), (1, 999), (1024, 1024), (513, 7)]
)
@pytest.mark.parametrize("img_size", [256, 1024])
def test_input_size_equals_segment_anything(shape, img_size):
    expected = ResizeLongestSide.get_preprocess_shape(shape[0], shape[1], img_size)
    assert input_size(shape, img_size) == tuple(expected)


def test_to_model_xy_equals_segment_anything_coordinates():
    """(row, col) -> SAM's (x, y), as ResizeLongestSide.apply_coords does from (x, y)."""
    rng = np.random.default_rng(0)
    shape = (120, 200)
    rows_cols = rng.uniform(0, 119, size=(7, 2))
    ours = to_model_xy(rows_cols, shape, input_size(shape, 1024))
    theirs = ResizeLongestSide(1024).apply_coords(rows_cols[:, ::-1].copy(), shape)
    np.testing.assert_allclose(ours, theirs)


def test_prompting_converts_through_frames(make_tiny_sam):
    segmenter = PromptSegmenter(make_tiny_sam(seed=1))
    embedding = segmenter.set_image(np.zeros((48, 80), np.uint8))
    box = np.array([[3.0, 5.0], [40.0, 70.0]])
    expected = to_model_xy(box, embedding.original_size, embedding.input_size)
    np.testing.assert_array_equal(segmenter.to_model_frame(box), expected)


def test_upsampled_logits_equal_sam_postprocess(make_tiny_sam):
    sam = make_tiny_sam(seed=1).sam
    shape = (48, 80)
    size = input_size(shape, sam.image_encoder.img_size)
    low = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    expected = sam.postprocess_masks(low, size, shape) > sam.mask_threshold
    got = upsample_logits(low, size, shape, sam.image_encoder.img_size, sam.mask_threshold)
    np.testing.assert_array_equal(got, expected[0].numpy())


def test_version_check_warns_once_for_another_release(monkeypatch):
    monkeypatch.setattr(compat, "_checked", {})
    monkeypatch.setattr(compat, "installed_version", lambda: "9.9")
    with pytest.warns(compat.SegmentAnythingVersionWarning, match="verified against 1.0"):
        assert compat.check_segment_anything() == "9.9"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.check_segment_anything()  # checked once per process


def test_installed_release_is_the_verified_one(monkeypatch):
    monkeypatch.setattr(compat, "_checked", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.check_segment_anything() == compat.VERIFIED_VERSION


class _PlaneOnlyStack:
    """A lazy stack (like dask or zarr) that records the planes read and refuses whole reads."""

    def __init__(self, data):
        self._data = data
        self.shape, self.dtype, self.read = data.shape, data.dtype, []

    def __getitem__(self, index):
        self.read.append(index)
        return self._data[index]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole stack was loaded")


def test_a_lazy_stack_is_read_plane_by_plane_for_prompting():
    from napari_seglab.sam import SamInput
    from napari_seglab.sam.image import RANGE_PLANES

    rng = np.random.default_rng(0)
    data = (rng.random((40, 24, 32)) * 1000).astype(np.uint16)
    lazy = _PlaneOnlyStack(data)
    source = SamInput(lazy)
    plane = source.plane(5)
    assert plane.shape == (24, 32, 3)
    assert len(lazy.read) <= RANGE_PLANES + 1  # the sampled planes and plane 5
    lo, hi = source.value_range
    exact = np.percentile(data, [1.0, 99.8])
    assert abs(lo - exact[0]) < 0.02 * (exact[1] - exact[0])
    assert abs(hi - exact[1]) < 0.02 * (exact[1] - exact[0])
    # in-memory arrays keep the exact range of every pixel
    np.testing.assert_allclose(SamInput(data).value_range, exact, rtol=0, atol=1e-9)
