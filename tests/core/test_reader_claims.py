"""Which files napari offers to the plugin's readers (npe2 manifest + get_*_reader)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from npe2 import PluginManager
from test_io_dicom import write_series

from napari_seglab._io_plugin import get_dicom_reader


@pytest.fixture(scope="module")
def manager():
    pm = PluginManager()
    pm.discover()
    return pm


def _ours(manager, path) -> set[str]:
    return {
        r.command
        for r in manager.iter_compatible_readers([str(path)])
        if r.command.startswith("napari-seglab.")
    }


def test_a_tiff_or_png_is_not_claimed(manager, tmp_path):
    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, np.zeros((4, 4), np.uint8))
    assert _ours(manager, tif) == set()
    assert _ours(manager, tmp_path / "photo.png") == set()
    assert get_dicom_reader(str(tif)) is None


def test_dicom_folder_file_and_dicomdir_are_claimed(manager, tmp_path):
    folder = tmp_path / "ct"
    series = write_series(folder, n_slices=3)
    one = sorted(folder.glob("*.dcm"))[0]
    assert "napari-seglab.get_dicom_reader" in _ours(manager, folder)
    assert _ours(manager, one) == {"napari-seglab.get_dicom_reader"}
    assert get_dicom_reader(str(folder / "DICOMDIR")) is not None
    reader = get_dicom_reader(str(one))
    assert reader is not None
    (data, meta, kind), *rest = reader(str(one))
    assert rest == []
    assert kind == "image"
    assert data.shape == series["pixels"].shape
    assert meta["scale"][0] == pytest.approx(2.5)  # the slice step of the written series


def test_a_file_named_dcm_without_dicom_content_is_left_alone(tmp_path):
    fake = tmp_path / "notes.dcm"
    fake.write_bytes(b"not a dicom file at all" * 10)
    assert get_dicom_reader(str(fake)) is None
    assert get_dicom_reader(str(tmp_path)) is None  # a folder without DICOM files
