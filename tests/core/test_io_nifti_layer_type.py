"""Labels or image: a NIfTI file opens as what it holds (header intent, name, values)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_seglab.io.label_rule import name_says_labels
from napari_seglab.io.nifti import read_nifti


def _save(path, data, *, intent=None):
    image = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]))
    if intent:
        image.header.set_intent(intent)
    nib.save(image, str(path))
    return path


def _mri_like(dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(120, 40, (24, 20, 6)).clip(0, 255)
    return data.astype(dtype)


def test_an_8bit_mri_opens_as_an_image(tmp_path):
    volume = read_nifti(_save(tmp_path / "t1_mprage.nii.gz", _mri_like()))
    assert not volume.is_label
    assert volume.layer_data()[2] == "image"


def test_a_uint8_probability_map_opens_as_an_image(tmp_path):
    ramp = np.linspace(0, 255, 24 * 20 * 6).reshape(24, 20, 6).astype(np.uint8)
    assert not read_nifti(_save(tmp_path / "wm_probability.nii", ramp)).is_label


def test_a_binary_mask_opens_as_labels_with_or_without_a_hint(tmp_path):
    mask = (_mri_like() > 140).astype(np.uint8)
    assert read_nifti(_save(tmp_path / "liver_mask.nii.gz", mask)).is_label
    assert read_nifti(_save(tmp_path / "scan.nii.gz", mask)).is_label


def test_many_labels_need_a_name_or_intent(tmp_path):
    parcels = (np.arange(24 * 20 * 6).reshape(24, 20, 6) % 150).astype(np.uint16)
    assert read_nifti(_save(tmp_path / "sub-01_dseg.nii.gz", parcels)).is_label
    assert read_nifti(_save(tmp_path / "aseg.nii.gz", parcels)).is_label
    assert not read_nifti(_save(tmp_path / "sub-01_T1w.nii.gz", parcels)).is_label
    assert read_nifti(_save(tmp_path / "plain.nii.gz", parcels, intent="label")).is_label


def test_the_user_can_override_the_decision(tmp_path):
    path = _save(tmp_path / "t1.nii.gz", _mri_like())
    assert read_nifti(path, layer_type="labels").is_label
    mask = _save(tmp_path / "mask.nii.gz", (_mri_like() > 140).astype(np.uint8))
    assert not read_nifti(mask, layer_type="image").is_label


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sub-01_dseg.nii.gz", True),
        ("liver_mask.nii", True),
        ("ct-labels.nii.gz", True),
        ("Segmentation.nii.gz", True),
        ("t1_mprage.nii.gz", False),
        ("segue.nii", False),
        ("maskless_scan.nii.gz", False),
    ],
)
def test_name_hints(name, expected):
    assert name_says_labels(name) is expected


def test_layers_carry_millimetres_and_direction_labels(tmp_path):
    series = _save(tmp_path / "bold.nii.gz", _mri_like(np.int16)[..., None].repeat(3, axis=3))
    data, kwargs, _ = read_nifti(series).layer_data()
    assert data.ndim == 4
    assert kwargs["axis_labels"] == ("t", "S→I", "A→P", "R→L")
    assert kwargs["units"] == ("pixel", "mm", "mm", "mm")
    axial = _save(tmp_path / "slice.nii.gz", _mri_like()[:, :, :1])
    data, kwargs, _ = read_nifti(axial).layer_data()
    assert data.ndim == 2
    assert kwargs["axis_labels"] == ("A→P", "R→L")
    assert kwargs["units"] == ("mm", "mm")
