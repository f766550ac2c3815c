from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seglab import imaging


def test_channels_first_shapes():
    grey = np.zeros((5, 6))
    rgb = np.zeros((5, 6, 4), dtype=np.uint8)
    stack = np.zeros((3, 2, 5, 6))  # (Z, C, Y, X)
    assert imaging.channels_first(grey).shape == (1, 5, 6)
    assert imaging.channels_first(rgb, rgb=True).shape == (3, 5, 6)
    assert imaging.channels_first(stack, channel_axis=1).shape == (2, 3, 5, 6)


def test_channels_first_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"RGB.*shape \(5, 6\)"):
        imaging.channels_first(np.zeros((5, 6)), rgb=True)


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [((4, 4), {}, 2), ((2, 4, 4), {}, 3), ((4, 4, 3), {"rgb": True}, 2)],
)
def test_spatial_ndim(shape, kwargs, expected):
    assert imaging.spatial_ndim(np.zeros(shape), **kwargs) == expected


def test_spatial_ndim_rejects_4d():
    with pytest.raises(ValueError, match=r"2D .* or a 3D"):
        imaging.spatial_ndim(np.zeros((2, 2, 2, 2)))


def test_percentile_normalisation_maps_range_to_unit_interval():
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 50, size=(64, 64)).astype(np.uint16)
    out = imaging.normalize_percentile(image, 1, 99)
    assert out.dtype == np.float32
    assert out.min() == 0.0
    assert out.max() == 1.0
    assert 0.4 < np.median(out) < 0.6


def test_flat_image_normalises_to_zero_not_nan():
    out = imaging.normalize_percentile(np.full((4, 4), 7, dtype=np.int16))
    assert np.all(out == 0)


def test_ct_window():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    out = imaging.window(hu, *imaging.CT_WINDOWS["soft_tissue"])
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_recipe_round_trips_through_json_and_reuses_stats():
    train = np.linspace(0, 100, 1000).reshape(10, 100)
    recipe = imaging.IntensityRecipe("percentile", {"low": 0.0, "high": 100.0}).fit(train)
    again = imaging.IntensityRecipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    # New data is scaled with the training statistics, not its own.
    np.testing.assert_allclose(again.apply(np.array([50.0, 200.0])), [0.5, 2.0])


def test_recipe_window_preset_and_errors():
    recipe = imaging.IntensityRecipe("window", {"preset": "lung"})
    assert recipe.params["level"] == -600.0
    with pytest.raises(ValueError, match="Unknown CT window 'kidney'"):
        imaging.IntensityRecipe("window", {"preset": "kidney"})
    with pytest.raises(ValueError, match="Unknown intensity recipe"):
        imaging.IntensityRecipe("gamma")


def test_zscore_recipe():
    values = np.random.default_rng(1).normal(5.0, 2.0, size=10_000)
    out = imaging.IntensityRecipe("zscore").apply(values)
    assert abs(out.mean()) < 1e-3
    assert abs(out.std() - 1.0) < 1e-3


def test_to_uint8_rgb_rules():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.shares_memory(imaging.to_uint8_rgb(rgb), rgb) or np.array_equal(
        imaging.to_uint8_rgb(rgb), rgb
    )
    grey = np.linspace(0, 4000, 100).reshape(10, 10).astype(np.uint16)
    out = imaging.to_uint8_rgb(grey)
    assert out.shape == (10, 10, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])
    assert out.max() == 255
    assert out.min() == 0
    with pytest.raises(ValueError, match="one plane of a stack"):
        imaging.to_uint8_rgb(np.zeros((3, 8, 8)))
