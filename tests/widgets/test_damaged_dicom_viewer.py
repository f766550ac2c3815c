"""A DICOM series with an unreadable file, opened through napari (issue 12).

A napari reader takes no options: by default the error names each damaged file
and ``SEGLAB_DICOM_DAMAGED``; with it set to ``warn`` the series opens without
them, napari shows a warning naming them and the layer's metadata lists them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from test_io_dicom import write_series

from napari_seglab._io_plugin import DAMAGED_ENV


@pytest.fixture
def damaged(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3, shape=(6, 5))
    victim = max(
        folder.iterdir(),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    victim.write_bytes(b"")
    return folder, victim


def test_viewer_open_refuses_naming_the_file_and_the_variable(make_napari_viewer, damaged):
    folder, victim = damaged
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match=rf"(?s){victim.name}.*{DAMAGED_ENV}=warn"):
        viewer.open(str(folder), plugin="napari-seglab")
    assert len(viewer.layers) == 0


def test_viewer_open_with_the_variable_set_skips_and_lists_the_file(
    make_napari_viewer, damaged, monkeypatch
):
    folder, victim = damaged
    monkeypatch.setenv(DAMAGED_ENV, "warn")
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match=rf"without 1 unreadable file.*'{victim.name}'"):
        [layer] = viewer.open(str(folder), plugin="napari-seglab")
    assert layer.data.shape == (2, 6, 5)
    assert layer.metadata["dicom"]["skipped_files"][0][0] == victim.name
