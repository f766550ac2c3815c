"""Damaged, inconsistent or misleading inputs: the readers refuse or warn, never guess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_io_dicom import write_series, write_slice

from napari_seglab import cli
from napari_seglab._io_plugin import read_dicom_layers
from napari_seglab.io import list_dicom_series, read_array, read_dicom_folder, read_dicom_series


def _files_by_position(folder: Path) -> list[Path]:
    """The series' files sorted along the slice normal (axial: z)."""
    return sorted(
        folder.iterdir(),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )


@pytest.mark.parametrize("damage", ["cut_header", "cut_pixels", "zero_bytes"])
@pytest.mark.parametrize("end", [0, -1])
def test_damaged_first_or_last_file_is_refused_naming_it_or_skipped_with_a_warning(
    tmp_path, damage, end
):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=5)
    intact = read_dicom_series(folder)
    victim = _files_by_position(folder)[end]
    raw = victim.read_bytes()
    cut = {"cut_header": raw[:300], "cut_pixels": raw[:-20], "zero_bytes": b""}
    victim.write_bytes(cut[damage])

    with pytest.raises(ValueError, match=rf"'{victim.name}': .*(cut short|0 bytes)"):
        read_dicom_series(folder)
    with pytest.raises(ValueError, match=victim.name):
        read_dicom_folder(folder)
    with pytest.raises(ValueError, match=victim.name):
        read_dicom_layers(str(folder))
    with pytest.raises(ValueError, match=victim.name):
        read_array(folder)
    assert list_dicom_series(folder)[0].damaged[0][0] == victim.name

    with pytest.warns(UserWarning, match=rf"without 1 unreadable file.*'{victim.name}'"):
        vol = read_dicom_series(folder, damaged="warn")
    assert vol.data.shape[0] == 4
    assert vol.metadata["dicom"]["skipped_files"][0][0] == victim.name
    # the remaining slices keep their true place: one slice less at one end
    kept = slice(1, None) if end == -1 else slice(None, -1)  # axis 0 runs toward Inferior
    np.testing.assert_array_equal(vol.data, intact.data[kept])


def test_seglab_read_of_a_series_with_a_damaged_file_exits_2_naming_it(tmp_path, capsys):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    victim = _files_by_position(folder)[0]
    victim.write_bytes(b"")
    assert cli.main(["read", str(folder)]) == 2
    assert victim.name in capsys.readouterr().err


def test_damaged_middle_file_is_named_also_when_the_gap_is_reported(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=5)
    victim = _files_by_position(folder)[2]
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(ValueError, match=victim.name):
        read_dicom_series(folder)
    gap = rf"not uniform.*skipped: '{victim.name}'"
    with pytest.warns(UserWarning, match=victim.name), pytest.raises(ValueError, match=gap):
        read_dicom_series(folder, damaged="warn")


def test_file_without_preamble_is_read_not_dropped(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=4)
    intact = read_dicom_series(folder)
    victim = _files_by_position(folder)[0]
    victim.write_bytes(victim.read_bytes()[132:])  # no 128-byte preamble, no 'DICM'
    vol = read_dicom_series(folder)
    np.testing.assert_array_equal(vol.data, intact.data)
    np.testing.assert_allclose(vol.origin, intact.origin)


def test_unrelated_files_beside_a_series_are_still_ignored(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    (folder / "notes.txt").write_text("scan notes")
    (folder / "README").write_text("hello")
    (folder / "empty.json").write_bytes(b"")
    assert read_dicom_series(folder).data.shape[0] == 3


def test_damaged_file_of_another_series_does_not_stop_this_one(tmp_path):
    folder = tmp_path / "two"
    write_series(folder, n_slices=3, prefix="a")
    other = write_series(folder, n_slices=3, prefix="b", series_number=2)
    victim = folder / "b000.dcm"
    victim.write_bytes(victim.read_bytes()[:-80])  # the header without the pixels
    first = list_dicom_series(folder)[0]
    assert first.damaged == ()
    assert read_dicom_series(folder, first.uid).data.shape[0] == 3
    with pytest.raises(ValueError, match=r"b000\.dcm"):
        read_dicom_series(folder, other["uid"])


def test_bad_damaged_option_is_refused(tmp_path):
    write_series(tmp_path / "ct", n_slices=2)
    with pytest.raises(ValueError, match="damaged must be"):
        read_dicom_series(tmp_path / "ct", damaged="ignore")


def _unused(write=write_slice):  # keep the builder import for later tests
    return write


def _edit(path: Path, **values) -> None:
    """Set DICOM attributes of ``path`` in place."""
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_slice_with_another_pixel_spacing_is_refused_naming_it_and_both_spacings(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=4)
    victim = _files_by_position(folder)[-1]
    _edit(victim, PixelSpacing=["0.5", "0.5"])
    with pytest.raises(
        ValueError, match=rf"'{victim.name}' has PixelSpacing \(0\.5, 0\.5\).*0\.7"
    ):
        read_dicom_series(folder)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ImagePositionPatient", ["nan", "0", "0"]),
        ("PixelSpacing", ["nan", "0.9"]),
        ("ImageOrientationPatient", ["1", "0", "0", "0", "nan", "0"]),
    ],
)
def test_nan_geometry_is_one_clear_error_naming_the_file(tmp_path, key, value):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    victim = _files_by_position(folder)[1]
    _edit(victim, **{key: value})
    with pytest.raises(ValueError, match=rf"'.*{victim.name}'.*{key}.*NaN"):
        read_dicom_series(folder)


@pytest.mark.filterwarnings("ignore:The number of bytes of pixel data")
def test_bits_allocated_8_on_16_bit_pixels_is_one_clear_error(tmp_path):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    victim = _files_by_position(folder)[0]
    _edit(victim, BitsAllocated=8, BitsStored=8, HighBit=7)
    with pytest.raises(ValueError, match=rf"{victim.name}.*BitsAllocated 8"):
        read_dicom_series(folder)


def _write_dose(path: Path, counts: np.ndarray, *, offsets=None, scaling="0.0025") -> Path:
    """An RT Dose file: ``counts`` ``(frames, rows, cols)`` on an axial grid."""
    from pydicom.uid import RTDoseStorage
    from test_io_dicom import new_file

    ds = new_file(path, RTDoseStorage)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber = 9
    ds.Modality = "RTDOSE"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = ["-10", "-20", "30"]
    ds.PixelSpacing = ["2", "3"]
    ds.Rows, ds.Columns = counts.shape[1:]
    if len(counts) > 1:
        ds.NumberOfFrames = len(counts)
        ds.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = scaling
    ds.PixelData = counts.astype(np.uint32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("offsets", [(0.0, 4.0, 8.0), (30.0, 34.0, 38.0)])
def test_rt_dose_opens_in_gray_with_dose_grid_scaling_applied(tmp_path, offsets):
    counts = np.random.default_rng(3).integers(0, 40000, (3, 4, 5))
    folder = tmp_path / "dose"
    folder.mkdir()
    _write_dose(folder / "RD.dcm", counts, offsets=offsets)
    vol = read_dicom_series(folder)
    assert vol.data.dtype == np.float32
    # axis 0 runs toward Inferior: the frame at the largest z comes first
    np.testing.assert_allclose(vol.data, counts[::-1] * np.float32(0.0025), rtol=1e-6)
    np.testing.assert_allclose(vol.spacing, (4.0, 2.0, 3.0))
    np.testing.assert_allclose(vol.origin, (-38.0, -20.0, -10.0))
    tags = vol.metadata["dicom"]
    assert tags["rescale"]["units"] == "GY"
    assert tags["rescale"]["slope"] == pytest.approx(0.0025)
    assert tags["DoseUnits"] == "GY"


def test_single_frame_rt_dose_is_scaled_too(tmp_path):
    counts = np.full((1, 4, 5), 1000)
    folder = tmp_path / "dose"
    folder.mkdir()
    _write_dose(folder / "RD.dcm", counts, scaling="0.01")
    vol = read_dicom_series(folder)
    np.testing.assert_allclose(vol.data, 10.0)
