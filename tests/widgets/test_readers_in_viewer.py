"""NIfTI through napari itself: File > Open with our reader, Save layer with our writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np

AFFINE = np.array(
    [[0.8, 0, 0, -100.0], [0, 0.8, 0, -120.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]], dtype=float
)


def test_labels_nifti_opens_as_labels_and_saves_back_identically(make_napari_viewer, tmp_path):
    data = np.zeros((20, 16, 6), dtype=np.uint8)  # (i, j, k) on disk
    data[5:9, 4:8, 2:4] = 3
    source = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), source)

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(source), plugin="napari-seglab")
    assert type(layer).__name__ == "Labels"
    assert layer.data.shape == (6, 16, 20)  # (Z, Y, X)
    np.testing.assert_allclose(layer.scale, (3.0, 0.8, 0.8))
    # LPS world position of voxel (0, 0, 0) after flipping x and y to L and P.
    np.testing.assert_allclose(layer.translate, (40.0, 120.0 - 0.8 * 15, 100.0 - 0.8 * 19))
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert tuple(layer.axis_labels) == ("I→S", "A→P", "R→L")

    target = tmp_path / "saved.nii.gz"
    layer.save(str(target), plugin="napari-seglab")
    saved = nib.load(target)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), data)
    np.testing.assert_allclose(saved.affine, AFFINE)
