"""Oblique and sheared volumes: the exact affine for napari, and the readers' default (issue 12).

The napari readers place an oblique volume on its voxel grid by default (see
docs/readers.md for why); ``layer_data(rotate_oblique=True)`` and, for the
napari readers, ``SEGLAB_OBLIQUE=affine`` give a napari ``affine`` with which
every voxel lands at its exact scanner position. Each test checks every voxel
of the volume against the file's own affine, through voxel values that encode
the source index.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from test_io_dicom import AXIAL, lps_of, write_series

from napari_seglab._io_plugin import (
    OBLIQUE_ENV,
    oblique_mode,
    read_dicom_layers,
    read_nifti_layers,
)
from napari_seglab.io import read_nifti

SHAPE = (7, 6, 5)  # (i, j, k) on disk


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [n for n in range(3) if n != axis]
    out = np.eye(3)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


ROTATED = np.eye(4)
ROTATED[:3, :3] = _rotation(0, 12.0) @ _rotation(2, 7.0) @ np.diag([0.8, 0.9, 3.0])
ROTATED[:3, 3] = (12.5, -40.0, 33.0)
SHEARED = np.eye(4)  # gantry tilt: each slice shifted along A in proportion to its S
SHEARED[:3, :3] = [[-0.7, 0.0, 0.0], [0.0, 0.8, 2.5 * np.tan(np.radians(15.0))], [0.0, 0.0, 2.5]]
SHEARED[:3, 3] = (90.0, -120.0, -60.0)
CASES = {"rotated out of plane": ROTATED, "sheared (gantry tilt)": SHEARED}


def _encoded_nifti(path, affine) -> np.ndarray:
    """Save voxels whose value is ``10000 i + 100 j + k`` (float32: opens as an image)."""
    i, j, k = np.indices(SHAPE)
    nib.save(nib.Nifti1Image((10000 * i + 100 * j + k).astype(np.float32), affine), path)
    return path


def _source_index(values: np.ndarray) -> np.ndarray:
    v = np.rint(values).astype(np.int64)
    return np.stack([v // 10000, v // 100 % 100, v % 100], axis=-1)


def _napari_world(kwargs: dict, index: np.ndarray) -> np.ndarray:
    """napari's data-to-world: ``affine @ (scale * index + translate)`` per voxel ``(N, 3)``."""
    physical = np.asarray(kwargs["translate"]) + np.asarray(kwargs["scale"]) * index
    affine = np.asarray(kwargs.get("affine", np.eye(4)))
    return physical @ affine[:3, :3].T + affine[:3, 3]


def _expected_world(affine: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The file's position of source voxels ``(N, 3)``, in layer world (I, P, L) = -(S, A, R)."""
    ras = source @ affine[:3, :3].T + affine[:3, 3]
    return -ras[:, ::-1]


def _read(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the oblique warning, tested below
        return read_nifti(path, **kwargs)


@pytest.mark.parametrize("affine", CASES.values(), ids=CASES.keys())
def test_rotate_oblique_places_every_voxel_at_the_files_position(tmp_path, affine):
    path = _encoded_nifti(tmp_path / "oblique.nii.gz", affine)
    with pytest.warns(UserWarning, match="SEGLAB_OBLIQUE=affine"):
        volume = read_nifti(path)
    data, kwargs, layer_type = volume.layer_data(rotate_oblique=True)
    assert layer_type == "image"
    index = np.argwhere(np.ones(data.shape, bool))  # every voxel, (N, 3) layer (z, y, x)
    source = _source_index(data[tuple(index.T)])
    np.testing.assert_allclose(
        _napari_world(kwargs, index), _expected_world(affine, source), atol=1e-4
    )
    # the same positions as Volume.affine, which the writer uses
    np.testing.assert_allclose(
        _napari_world(kwargs, index),
        index @ volume.affine[:3, :3].T + volume.affine[:3, 3],
        atol=1e-4,
    )


@pytest.mark.parametrize("affine", CASES.values(), ids=CASES.keys())
def test_the_default_grid_is_exact_at_voxel_0_only(tmp_path, affine):
    path = _encoded_nifti(tmp_path / "oblique.nii.gz", affine)
    data, kwargs, _ = _read(path).layer_data()
    assert "affine" not in kwargs
    index = np.argwhere(np.ones(data.shape, bool))
    source = _source_index(data[tuple(index.T)])
    error = np.linalg.norm(_napari_world(kwargs, index) - _expected_world(affine, source), axis=1)
    assert error[0] < 1e-4  # voxel (0, 0, 0)
    assert error.max() > 1.0  # millimetres off at the far corner: why the warning is given


@pytest.mark.parametrize("affine", CASES.values(), ids=CASES.keys())
def test_napari_reader_gives_the_exact_affine_when_asked(tmp_path, monkeypatch, affine):
    path = str(_encoded_nifti(tmp_path / "oblique.nii.gz", affine))
    monkeypatch.delenv(OBLIQUE_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [(_, default, _)] = read_nifti_layers(path)
        monkeypatch.setenv(OBLIQUE_ENV, "affine")
        [(data, exact, _)] = read_nifti_layers(path)
    assert "affine" not in default
    index = np.argwhere(np.ones(data.shape, bool))
    source = _source_index(data[tuple(index.T)])
    np.testing.assert_allclose(
        _napari_world(exact, index), _expected_world(affine, source), atol=1e-4
    )


def test_an_axis_aligned_file_gets_no_affine_either_way(tmp_path, monkeypatch):
    aligned = np.diag([-0.8, 0.9, 3.0, 1.0])
    path = str(_encoded_nifti(tmp_path / "aligned.nii.gz", aligned))
    monkeypatch.setenv(OBLIQUE_ENV, "affine")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no oblique warning
        [(_, kwargs, _)] = read_nifti_layers(path)
    assert "affine" not in kwargs


def test_a_bad_oblique_setting_is_refused(monkeypatch):
    monkeypatch.setenv(OBLIQUE_ENV, "rotate")
    with pytest.raises(ValueError, match=rf"{OBLIQUE_ENV} must be 'grid' or 'affine'"):
        oblique_mode()
    monkeypatch.setenv(OBLIQUE_ENV, " Affine ")
    assert oblique_mode() == "affine"


def test_gantry_tilted_dicom_series_gets_its_exact_affine_in_napari(tmp_path, monkeypatch):
    series = write_series(
        tmp_path / "s", n_slices=4, orientation=AXIAL, sideways=(0.0, 0.6, 0.0), shape=(6, 5)
    )
    monkeypatch.setenv(OBLIQUE_ENV, "affine")
    with pytest.warns(UserWarning, match="tilted"):
        [(data, kwargs, _)] = read_dicom_layers(str(tmp_path / "s"))
    for k, r, c in [(0, 0, 0), (3, 5, 4), (1, 2, 3), (2, 5, 0)]:
        [index] = np.argwhere(data == int(series["pixels"][k, r, c]) - 1024)
        lps = lps_of(series, k, r, c)
        expected = np.array([-lps[2], lps[1], lps[0]])  # layer world (I, P, L), I = -S
        np.testing.assert_allclose(_napari_world(kwargs, index[None])[0], expected, atol=1e-3)
