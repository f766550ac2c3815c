"""Non-finite pixels are never passed to SAM silently: a warning, and a defined value."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab.imaging import to_uint8_rgb
from napari_seglab.sam import SamInput


def _image():
    image = np.linspace(0.0, 1.0, 400, dtype=np.float32).reshape(20, 20)
    image[0, 0] = np.nan
    image[0, 1] = np.inf
    image[0, 2] = -np.inf
    return image


def test_to_uint8_rgb_warns_and_maps_nan_black_and_inf_white():
    with pytest.warns(UserWarning, match=r"3 NaN/infinite pixels \(first at \(0, 0\)\)"):
        rgb = to_uint8_rgb(_image())
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 2].tolist() == [0, 0, 0]
    assert 0 < rgb[10, 10, 0] < 255


def test_sam_input_plane_warns_names_the_plane_and_keeps_the_range_finite():
    stack = np.stack([_image(), _image() * 2])
    source = SamInput(stack)
    lo, hi = source.value_range
    assert np.isfinite(lo)
    assert np.isfinite(hi)
    with pytest.warns(UserWarning, match="3 NaN/infinite pixels on plane 1"):
        plane = source.plane(1)
    assert plane[0, 0].tolist() == [0, 0, 0]
    assert plane[0, 1].tolist() == [255, 255, 255]
    assert plane[0, 2].tolist() == [0, 0, 0]
