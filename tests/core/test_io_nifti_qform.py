"""The NIfTI writer's qform never disagrees with its sform (issue 12).

Every written file is checked with nibabel (a second reader): the coded sform
is the exact affine, and the coded qform either reproduces it within 1e-3 mm
at the 8 grid corners or has code 0 (unused).
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from test_io_dicom import AXIAL, lps_of, write_series

from napari_seglab._io_plugin import read_dicom_layers, write_labels_nifti
from napari_seglab.io import read_nifti, write_nifti
from napari_seglab.io.nifti_forms import corner_error_mm, set_exact_forms


def corners(shape) -> list[tuple[int, int, int]]:
    return list(itertools.product(*[(0, n - 1) for n in shape[:3]]))


def world_at_corners(affine, shape) -> np.ndarray:
    return np.array([(affine @ [*c, 1.0])[:3] for c in corners(shape)])


def check_forms(path, exact_corners: np.ndarray) -> int:
    """Assert the written forms agree with the exact corner positions; return qform_code."""
    img = nib.load(path)
    sform, sform_code = img.get_sform(coded=True)
    assert sform_code > 0
    np.testing.assert_allclose(world_at_corners(sform, img.shape), exact_corners, atol=1e-3)
    np.testing.assert_allclose(world_at_corners(img.affine, img.shape), exact_corners, atol=1e-3)
    qform, qform_code = img.get_qform(coded=True)
    if qform_code:
        np.testing.assert_allclose(world_at_corners(qform, img.shape), exact_corners, atol=1e-3)
    else:
        assert qform is None
    return int(qform_code)


def _rotated_axial(degrees: float) -> tuple[float, ...]:
    a = np.radians(degrees)
    return (np.cos(a), np.sin(a), 0.0, -np.sin(a), np.cos(a), 0.0)


@pytest.mark.parametrize(
    ("orientation", "sideways", "qform_code"),
    [
        (_rotated_axial(8.0), (0.0, 0.0, 0.0), 1),
        (AXIAL, (0.0, 0.6, 0.0), 0),
    ],
    ids=["rotated-in-plane", "gantry-tilt"],
)
def test_dicom_labels_get_a_qform_only_where_it_is_exact(
    tmp_path, orientation, sideways, qform_code
):
    n_slices, shape = 14, (6, 5)
    series = write_series(
        tmp_path / "s", n_slices=n_slices, orientation=orientation, sideways=sideways, shape=shape
    )
    with pytest.warns(UserWarning, match="tilted"):
        [(data, kwargs, _)] = read_dicom_layers(str(tmp_path / "s"))
    labels = (data > 0).astype(np.uint8)
    [path] = write_labels_nifti(str(tmp_path / "l.nii.gz"), labels, kwargs)

    # NIfTI voxel (i, j, k) = (column, row, slice); world RAS = (-L, -P, S) of LPS
    grid = (shape[1], shape[0], n_slices)
    exact = []
    for c, r, k in corners(grid):
        lps = lps_of(series, k, r, c)
        exact.append([-lps[0], -lps[1], lps[2]])
    assert nib.load(path).shape == grid
    assert check_forms(path, np.array(exact)) == qform_code
    if not qform_code:  # nibabel's nearest qform would be far off at the last slice
        hdr = nib.load(path).header.copy()
        hdr.set_qform(nib.load(path).get_sform(), code=1)
        assert corner_error_mm(hdr.get_qform(), nib.load(path).get_sform(), grid) > 1.0
        # voxel sizes stay readable for tools that use pixdim only
        np.testing.assert_allclose(nib.load(path).header.get_zooms()[:2], (0.9, 0.7), rtol=1e-6)


def test_oblique_nifti_round_trip_keeps_an_exact_qform(tmp_path):
    angle = np.radians(20.0)
    rotation = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, 0.8, 3.0])
    affine[:3, 3] = (112.5, -40.0, 7.25)
    shape = (40, 30, 12)
    labels = np.zeros(shape, np.uint8)
    labels[3, 4, 2] = 1
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    src = tmp_path / "oblique.nii.gz"
    img = nib.Nifti1Image(labels, affine, header=hdr)
    img.header.set_qform(affine, code="scanner")
    img.header.set_sform(affine, code="scanner")
    nib.save(img, src)

    with pytest.warns(UserWarning, match="tilted"):
        vol = read_nifti(src)
    data, kwargs, _ = vol.layer_data()
    path = write_nifti(
        tmp_path / "back.nii.gz",
        data,
        spacing=kwargs["scale"],
        origin=kwargs["translate"],
        metadata=kwargs["metadata"],
    )
    assert check_forms(path, world_at_corners(affine, shape)) == 1
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), labels)


def test_nifti_source_whose_forms_disagree_keeps_its_header(tmp_path):
    shape = (8, 7, 5)
    sform = np.diag([0.8, 0.8, 3.0, 1.0])
    sform[1, 2] = 0.5  # sheared sform; the qform is only the nearest rotation
    img = nib.Nifti1Image(np.zeros(shape, np.uint8), sform)
    img.header.set_sform(sform, code="scanner")
    img.header.set_qform(sform, code="scanner")
    src = tmp_path / "src.nii"
    nib.save(img, src)
    with pytest.warns(UserWarning, match="sheared"):
        vol = read_nifti(src, layer_type="labels")
    data, kwargs, _ = vol.layer_data()
    path = write_nifti(
        tmp_path / "back.nii",
        data,
        spacing=kwargs["scale"],
        origin=kwargs["translate"],
        metadata=kwargs["metadata"],
    )
    before, after = nib.load(src).header, nib.load(path).header
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "srow_y"):
        np.testing.assert_array_equal(after[key], before[key])


def test_axis_aligned_new_layer_gets_matching_qform_and_sform(tmp_path):
    data = np.zeros((5, 6, 7), np.uint16)
    scale, translate = (2.5, 0.7, 0.9), (-30.0, 12.0, -101.25)
    path = write_nifti(tmp_path / "new.nii.gz", data, spacing=scale, origin=translate)
    # the file is in RAS+ voxel order; its corners must sit at the layer world positions
    img = nib.load(path)
    exact = []
    for i, j, k in corners(img.shape):
        # RAS voxel (i, j, k) is layer index (Z, Y, X) = (4 - k, 5 - j, 6 - i)
        z, y, x = 4 - k, 5 - j, 6 - i
        inferior, posterior, left = np.add(translate, np.multiply(scale, (z, y, x)))
        exact.append([-left, -posterior, -inferior])
    assert check_forms(path, np.array(exact)) == 2


def test_set_exact_forms_refuses_a_qform_that_is_off_at_the_far_corner():
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    affine[0, 2] = 1e-5  # tiny shear: exact enough on a small grid, not on a long one
    hdr = nib.Nifti1Header()
    assert set_exact_forms(hdr, affine, (4, 4, 4), "scanner")
    assert int(hdr["qform_code"]) == 1
    hdr = nib.Nifti1Header()
    assert not set_exact_forms(hdr, affine, (4, 4, 1000), "scanner")
    assert int(hdr["qform_code"]) == 0
    assert int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-6)
