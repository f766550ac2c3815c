"""NIfTI through napari itself: File > Open with our reader, Save layer with our writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from _canvas import show_viewer

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
    # World (I, P, L) of voxel (0, 0, 0): the top slice (S = 40 + 3 * 5, so I = -55) first,
    # x and y flipped to L and P. napari then draws the head up in coronal and sagittal views.
    np.testing.assert_allclose(layer.translate, (-55.0, 120.0 - 0.8 * 15, 100.0 - 0.8 * 19))
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert tuple(layer.axis_labels) == ("S→I", "A→P", "R→L")

    target = tmp_path / "saved.nii.gz"
    layer.save(str(target), plugin="napari-seglab")
    saved = nib.load(target)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), data)
    np.testing.assert_allclose(saved.affine, AFFINE)


def test_coronal_and_sagittal_views_show_the_head_up(make_napari_viewer, qtbot, tmp_path):
    """Radiological views: roll the axes of a NIfTI volume and the superior end is drawn on top."""
    data = np.full((20, 16, 12), 100.0, dtype=np.float32)  # (i, j, k) = (x, y, z), RAS axes
    data[:, :, -3:] = 1000  # a bright slab at the top of the head (largest z = Superior)
    source = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), source)

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(source), plugin="napari-seglab")
    show_viewer(viewer, qtbot, 900, 700)
    assert tuple(layer.axis_labels) == ("S→I", "A→P", "R→L")
    layer.contrast_limits = (0.0, 1000.0)  # the head grey, the slab white
    for order in ((1, 0, 2), (2, 0, 1)):  # coronal (I rows, L columns), sagittal (I, P)
        viewer.dims.order = order
        viewer.reset_view()
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].max(axis=2)
        rows = np.flatnonzero(shot.max(axis=1) > 200)  # the bright slab's rows on screen
        drawn = np.flatnonzero(shot.max(axis=1) > 0)  # the whole head
        assert rows.size
        assert rows.mean() < drawn.mean(), order  # the top of the head is above its middle
