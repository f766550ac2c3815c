from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_seglab import data


def test_2d_sample_is_deterministic_and_consistent():
    a, b = data.nuclei_2d(seed=3), data.nuclei_2d(seed=3)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, data.nuclei_2d(seed=4).image)
    assert a.image.shape == a.labels.shape == (256, 256)
    assert a.image.dtype == np.uint16
    ids = np.unique(a.labels)
    assert ids[0] == 0
    assert np.array_equal(ids[1:], np.arange(1, ids.size))  # consecutive 1..N
    assert 20 <= ids.size - 1 <= 40


def _touching_pairs(labels: np.ndarray) -> int:
    """Number of voxel faces between two different objects."""
    count = 0
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[1:]
        b = np.moveaxis(labels, axis, 0)[:-1]
        count += int(np.sum((a != b) & (a > 0) & (b > 0)))
    return count


def test_objects_touch_and_are_brighter_than_background():
    sample = data.nuclei_2d()
    assert _touching_pairs(sample.labels) > 0
    fg = sample.image[sample.labels > 0].mean()
    bg = sample.image[ndi.binary_dilation(sample.labels > 0, iterations=4) == 0].mean()
    assert fg > 1.5 * bg


def test_3d_sample_is_anisotropic():
    sample = data.nuclei_3d()
    assert sample.image.shape == sample.labels.shape == (32, 128, 128)
    assert sample.spacing == (2.0, 0.5, 0.5)
    assert _touching_pairs(sample.labels) > 0
    # Physical extents are isotropic-ish, so objects span far fewer planes than rows.
    extents = [
        [s.stop - s.start for s in sl] for sl in ndi.find_objects(sample.labels) if sl is not None
    ]
    z, y, _ = np.median(np.asarray(extents), axis=0)
    assert y > 2 * z
    # Depth attenuation: deeper planes are dimmer.
    assert sample.image[-4:].mean() < sample.image[:4].mean()
    assert np.array_equal(sample.semantic, (sample.labels > 0).astype(np.uint8))
