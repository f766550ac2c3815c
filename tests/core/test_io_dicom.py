"""DICOM series reading with real pydicom files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)

import napari_seglab
from napari_seglab import cli
from napari_seglab._io_plugin import get_dicom_reader, read_dicom_layers, write_labels_nifti
from napari_seglab.io import list_dicom_series, read_dicom_folder, read_dicom_series, read_nifti

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns)


def new_file(path: Path, sop_class) -> FileDataset:
    """An empty DICOM file dataset of ``sop_class`` with its file meta information."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def item(**values) -> Sequence:
    """A one-item sequence (a functional group macro) with ``values``."""
    entry = Dataset()
    for key, value in values.items():
        setattr(entry, key, value)
    return Sequence([entry])


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position,
    *,
    series_uid: str,
    series_number: int = 1,
    orientation=AXIAL,
    intercept: float = -1024.0,
    slope: float = 1.0,
    description: str = "synthetic CT",
    window: tuple[float, float] | None = (40.0, 400.0),
    photometric: str = "MONOCHROME2",
) -> Path:
    """One uncompressed single-frame CT slice."""
    ds = new_file(path, CTImageStorage)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = "CT"
    ds.PatientName = "Synthetic^Patient"
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.PixelSpacing = [str(v) for v in PIXEL_SPACING]
    ds.SliceThickness = "2.5"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in window)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    n_slices: int = 4,
    *,
    orientation=AXIAL,
    origin=(-100.0, -80.0, 50.0),
    slice_step: float = 2.5,
    shape=(6, 5),
    series_uid: str | None = None,
    series_number: int = 1,
    prefix: str = "img",
    seed: int = 0,
    skip: tuple[int, ...] = (),
    sideways=(0.0, 0.0, 0.0),
    **kwargs,
) -> dict:
    """A series of ``n_slices`` slices with shuffled file names.

    Returns the stored pixels ``(slice, row, col)`` in true spatial order (slice
    index increasing along the normal), the geometry and the series UID.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    pixels = rng.integers(0, 3000, (n_slices, *shape)).astype(np.uint16)
    file_order = rng.permutation(n_slices)
    for name_index, k in enumerate(file_order):
        if k in skip:
            continue
        position = np.asarray(origin) + k * (slice_step * normal + np.asarray(sideways))
        write_slice(
            folder / f"{prefix}{name_index:03d}.dcm",
            pixels[k],
            position,
            series_uid=series_uid,
            series_number=series_number,
            orientation=orientation,
            **kwargs,
        )
    return {
        "pixels": pixels,
        "uid": series_uid,
        "row_dir": row_dir,
        "col_dir": col_dir,
        "normal": normal,
        "origin": np.asarray(origin),
        "step": slice_step,
        "sideways": np.asarray(sideways, dtype=float),
    }


def lps_of(series: dict, k: int, r: int, c: int) -> np.ndarray:
    """Patient (LPS) position of pixel (row r, col c) of slice k."""
    return (
        series["origin"]
        + k * (series["step"] * series["normal"] + series["sideways"])
        + r * PIXEL_SPACING[0] * series["col_dir"]
        + c * PIXEL_SPACING[1] * series["row_dir"]
    )


def test_axial_series_reads_in_order_with_spacing_origin_and_hounsfield_units(tmp_path):
    series = write_series(tmp_path / "ct", n_slices=5)
    vol = read_dicom_series(tmp_path / "ct")

    assert vol.data.shape == (5, 6, 5)  # (Z, Y, X) = (slices, rows, cols) for HFS axial
    assert vol.data.dtype == np.int16
    # plane 0 is the most superior slice (axis 0 runs toward Inferior: head up in napari)
    np.testing.assert_array_equal(vol.data, series["pixels"][::-1].astype(np.int32) - 1024)
    np.testing.assert_allclose(vol.spacing, (2.5, 0.7, 0.9))
    # top slice LPS (-100, -80, 50 + 4 * 2.5) -> layer world (I, P, L) = (-60, -80, -100)
    np.testing.assert_allclose(vol.origin, (-60.0, -80.0, -100.0))
    assert vol.contrast_limits == (-160.0, 240.0)
    assert not vol.is_label
    tags = vol.metadata["dicom"]
    assert tags["Modality"] == "CT"
    assert tags["PatientPosition"] == "HFS"
    assert tags["rescale"] == {
        "slope": 1.0,
        "intercept": -1024.0,
        "applied": True,
        "stored_dtype": "uint16",
    }
    assert tags["n_slices"] == 5
    assert "PatientName" not in tags
    # files are listed in spatial order, which differs from their shuffled names
    assert tags["files"] != sorted(tags["files"])


@pytest.mark.parametrize(
    ("orientation", "step"),
    [(AXIAL, 2.5), (AXIAL, -2.5), (SAGITTAL, 1.5), (CORONAL, 2.0)],
    ids=["axial", "axial-descending", "sagittal", "coronal"],
)
def test_every_voxel_lands_at_its_patient_position(tmp_path, orientation, step):
    series = write_series(tmp_path / "s", n_slices=3, orientation=orientation, slice_step=step)
    vol = read_dicom_series(tmp_path / "s")
    assert vol.metadata["orientation"]["oblique"] is False
    pixels = series["pixels"]
    for k, r, c in [(0, 0, 0), (2, 5, 4), (1, 3, 2)]:
        value = int(pixels[k, r, c]) - 1024
        index = np.argwhere(vol.data == value)
        # choose the hit whose position matches (random pixels may repeat)
        world = vol.origin + np.asarray(vol.spacing) * index
        lps = lps_of(series, k, r, c)
        expected = np.array([-lps[2], lps[1], lps[0]])  # (I, P, L), I = -S
        assert np.any(np.all(np.abs(world - expected) < 1e-3, axis=1)), (k, r, c)


def _rotated_axial(degrees: float) -> tuple[float, ...]:
    a = np.radians(degrees)
    return (np.cos(a), np.sin(a), 0.0, -np.sin(a), np.cos(a), 0.0)


@pytest.mark.parametrize(
    ("orientation", "sideways", "match"),
    [
        (_rotated_axial(8.0), (0.0, 0.0, 0.0), "tilted 8.00 degrees"),
        (AXIAL, (0.0, 0.6, 0.0), "tilted 13.50 degrees"),
    ],
    ids=["rotated-in-plane", "gantry-tilt"],
)
def test_oblique_and_tilted_series_warn_and_keep_exact_positions(
    tmp_path, orientation, sideways, match
):
    series = write_series(
        tmp_path / "s", n_slices=3, orientation=orientation, sideways=sideways, shape=(6, 6)
    )
    with pytest.warns(UserWarning, match=match):
        [(data, kwargs, _)] = read_dicom_layers(str(tmp_path / "s"))
    assert kwargs["metadata"]["orientation"]["oblique"]
    if any(sideways):
        assert "gantry tilt" in kwargs["metadata"]["dicom"]["notes"][0]
    # the full affine (Volume.affine) maps every voxel to its exact position
    with pytest.warns(UserWarning, match=match):
        vol = read_dicom_series(tmp_path / "s")
    for k, r, c in [(0, 0, 0), (2, 5, 4), (1, 3, 2)]:
        index = np.argwhere(vol.data == int(series["pixels"][k, r, c]) - 1024)
        world = (vol.affine[:3, :3] @ index.T).T + vol.affine[:3, 3]
        lps = lps_of(series, k, r, c)
        ipl = np.array([-lps[2], lps[1], lps[0]])  # layer world (I, P, L), I = -S
        assert np.any(np.all(np.abs(world - ipl) < 1e-3, axis=1)), (k, r, c)
    # labels drawn on it are saved with that exact geometry
    labels = (data > 0).astype(np.uint8)
    [path] = write_labels_nifti(str(tmp_path / "l.nii.gz"), labels, kwargs)
    saved = nib.load(path)
    lps = lps_of(series, 2, 5, 4)
    np.testing.assert_allclose(
        (saved.affine @ [4, 5, 2, 1])[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3
    )


def test_monochrome1_keeps_values_and_opens_with_an_inverted_colormap(tmp_path):
    normal = write_series(tmp_path / "m2", n_slices=3, seed=5)
    inverted = write_series(tmp_path / "m1", n_slices=3, seed=5, photometric="MONOCHROME1")
    np.testing.assert_array_equal(normal["pixels"], inverted["pixels"])
    plain = read_dicom_series(tmp_path / "m2")
    volume = read_dicom_series(tmp_path / "m1")
    np.testing.assert_array_equal(volume.data, plain.data)
    _, kwargs, kind = volume.layer_data()
    assert kind == "image"
    assert kwargs["colormap"] == "gray_r"
    assert "colormap" not in plain.layer_data()[1]
    assert any("MONOCHROME1" in note for note in volume.metadata["dicom"]["notes"])


def test_float_rescale_gives_float32(tmp_path):
    series = write_series(tmp_path / "pet", n_slices=3, slope=0.25, intercept=-10.5)
    vol = read_dicom_series(tmp_path / "pet")
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, series["pixels"][::-1] * 0.25 - 10.5)  # head first


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(("slope", "intercept"), [(float("nan"), 0.0), (1.0, float("inf"))])
def test_non_finite_rescale_is_refused_naming_the_file(tmp_path, slope, intercept):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    victim = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(victim)
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.save_as(victim)
    with pytest.raises(ValueError, match=rf"{victim.name}.*must be finite"):
        read_dicom_series(folder)


def test_npe2_reader_opens_each_series_as_a_layer_in_series_number_order(tmp_path):
    folder = tmp_path / "study"
    big = write_series(folder, n_slices=5, series_number=3, prefix="b", description="big")
    small = write_series(
        folder,
        n_slices=3,
        series_number=2,
        prefix="a",
        description="small",
        seed=4,
        window=None,
    )
    reader = get_dicom_reader(str(folder))
    assert reader is not None
    layers = reader(str(folder))
    assert [kw["name"] for _, kw, _ in layers] == ["small", "big"]
    assert [t for _, _, t in layers] == ["image", "image"]
    assert "contrast_limits" not in layers[0][1]
    assert layers[1][1]["contrast_limits"] == (-160.0, 240.0)
    assert [s.label for s in list_dicom_series(folder)] == ["small", "big"]
    # the core API picks the largest series, or the one asked for
    assert read_dicom_series(folder).name == "big"
    np.testing.assert_array_equal(
        read_dicom_series(folder, small["uid"]).data,
        small["pixels"][::-1].astype(np.int32) - 1024,  # axial: plane 0 is the top slice
    )
    assert big["uid"] != small["uid"]
    with pytest.raises(ValueError, match=r"Series 1\.2\.3 not found.*small.*big"):
        read_dicom_series(folder, "1.2.3")


def test_localizer_with_mixed_orientations_is_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, n_slices=3, series_number=1, prefix="ct")
    uid = generate_uid()
    pixels = np.ones((6, 5), np.uint16)
    write_slice(folder / "loc1.dcm", pixels, (0, 0, 0), series_uid=uid, series_number=9)
    write_slice(
        folder / "loc2.dcm",
        pixels,
        (0, 0, 0),
        series_uid=uid,
        series_number=9,
        orientation=SAGITTAL,
    )
    with pytest.warns(UserWarning, match="must share an orientation"):
        layers = read_dicom_layers(str(folder))
    assert len(layers) == 1


def test_missing_slice_and_duplicate_positions_are_clear_errors(tmp_path):
    write_series(tmp_path / "gap", n_slices=5, skip=(2,))
    with pytest.raises(ValueError, match=r"slice spacing is not uniform.*5\.000 mm after"):
        read_dicom_series(tmp_path / "gap")
    folder = tmp_path / "dup"
    series = write_series(folder, n_slices=3, seed=1)
    write_slice(
        folder / "extra.dcm", series["pixels"][0], series["origin"], series_uid=series["uid"]
    )
    with pytest.raises(ValueError, match="same position"):
        read_dicom_series(folder)


def test_empty_and_non_dicom_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_dicom_reader(str(empty)) is None
    with pytest.raises(ValueError, match=r"empty.*is empty"):
        read_dicom_series(empty)

    other = tmp_path / "pictures"
    other.mkdir()
    (other / "a.txt").write_text("hello")
    (other / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    assert get_dicom_reader(str(other)) is None
    with pytest.raises(ValueError, match=r"No DICOM image files in .*pictures.*2 not DICOM"):
        read_dicom_series(other)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_dicom_series(tmp_path / "nowhere")


def test_truncated_slice_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    write_series(folder, n_slices=3)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(ValueError, match=victim.name):
        read_dicom_series(folder)


def test_labels_drawn_on_a_dicom_series_save_as_nifti_with_its_geometry(tmp_path):
    series = write_series(tmp_path / "ct", n_slices=4, orientation=CORONAL, slice_step=3.0)
    [(image, kwargs, _)] = read_dicom_layers(str(tmp_path / "ct"))
    labels = (image > 500).astype(np.uint16)
    meta = {
        "scale": kwargs["scale"],
        "translate": kwargs["translate"],
        "metadata": kwargs["metadata"],
    }
    [path] = write_labels_nifti(str(tmp_path / "bone.nii.gz"), labels, meta)

    back = read_nifti(path)
    assert back.is_label
    assert back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.spacing, kwargs["scale"], rtol=1e-6)
    np.testing.assert_allclose(back.origin, kwargs["translate"], atol=1e-4)
    # the NIfTI voxel (i, j, k) = (col, row, slice) of the DICOM series, affine in RAS
    saved = nib.load(path)
    assert saved.shape == (5, 6, 4)
    np.testing.assert_array_equal(
        np.asarray(saved.dataobj), (series["pixels"].astype(np.int32) - 1024 > 500).T
    )
    lps = lps_of(series, 3, 2, 1)
    np.testing.assert_allclose(
        (saved.affine @ [1, 2, 3, 1])[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4
    )


def test_cli_read_and_convert_a_dicom_folder(tmp_path, capsys):
    write_series(tmp_path / "ct", n_slices=3)
    assert cli.main(["read", str(tmp_path / "ct")]) == 0
    out = capsys.readouterr().out
    assert "(3, 6, 5)" in out
    assert "(2.5, 0.7, 0.9) mm" in out
    assert "CT series 1, 3 slices" in out
    target = tmp_path / "ct.nii.gz"
    assert cli.main(["convert", str(tmp_path / "ct"), str(target)]) == 0
    vol = read_nifti(target, layer_type="image")
    np.testing.assert_array_equal(vol.data, read_dicom_series(tmp_path / "ct").data)
    np.testing.assert_allclose(vol.spacing, (2.5, 0.7, 0.9), rtol=1e-6)


def test_npe2_opens_a_dicom_folder_through_the_manifest(tmp_path):
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    try:
        pm.get_manifest("napari-seglab")
    except KeyError:  # not installed: register the package's manifest directly
        manifest = Path(napari_seglab.__file__).parent / "napari.yaml"
        pm.register(npe2.PluginManifest.from_file(manifest))
    series = write_series(tmp_path / "ct", n_slices=3)
    [(data, kwargs, layer_type)] = npe2.read(
        [str(tmp_path / "ct")], stack=False, plugin_name="napari-seglab"
    )
    assert layer_type == "image"
    np.testing.assert_array_equal(data, series["pixels"][::-1].astype(np.int32) - 1024)
    np.testing.assert_allclose(kwargs["scale"], (2.5, 0.7, 0.9))


def write_enhanced(path: Path, series: dict, *, intercept=-1024.0, shuffle_seed=1) -> Path:
    """The stack of ``write_series`` as one Enhanced CT file, frames in shuffled order."""
    pixels = series["pixels"]
    n = len(pixels)
    order = np.random.default_rng(shuffle_seed).permutation(n)
    ds = new_file(path, EnhancedCTImageStorage)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 7
    ds.SeriesDescription = "enhanced CT"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.NumberOfFrames = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0

    shared = Dataset()
    shared.PixelMeasuresSequence = item(
        PixelSpacing=[str(v) for v in PIXEL_SPACING], SliceThickness="2.5"
    )
    shared.PlaneOrientationSequence = item(
        ImageOrientationPatient=[f"{v:g}" for v in (*series["row_dir"], *series["col_dir"])]
    )
    shared.PixelValueTransformationSequence = item(
        RescaleIntercept=f"{intercept:g}", RescaleSlope="1", RescaleType="HU"
    )
    shared.FrameVOILUTSequence = item(WindowCenter="40", WindowWidth="400")
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        group = Dataset()
        position = series["origin"] + k * series["step"] * series["normal"]
        group.PlanePositionSequence = item(ImagePositionPatient=[f"{v:.4f}" for v in position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = pixels[order].astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL])
def test_enhanced_multi_frame_file_reads_like_the_same_slices(tmp_path, orientation):
    series = write_series(tmp_path / "slices", n_slices=5, orientation=orientation, seed=3)
    (tmp_path / "enhanced").mkdir()
    write_enhanced(tmp_path / "enhanced" / "volume.dcm", series)
    slices = read_dicom_series(tmp_path / "slices")
    enhanced = read_dicom_series(tmp_path / "enhanced")
    np.testing.assert_array_equal(enhanced.data, slices.data)
    assert enhanced.data.dtype == np.int16  # HU after the shared rescale
    np.testing.assert_allclose(enhanced.spacing, slices.spacing)
    np.testing.assert_allclose(enhanced.origin, slices.origin)
    np.testing.assert_allclose(enhanced.affine, slices.affine)
    assert enhanced.contrast_limits == slices.contrast_limits
    assert enhanced.metadata["dicom"]["n_slices"] == 5
    assert enhanced.name == "enhanced CT"


def test_multi_frame_without_frame_positions_is_refused_by_name(tmp_path):
    series = write_series(tmp_path / "slices", n_slices=3, seed=4)
    (tmp_path / "cine").mkdir()
    path = write_enhanced(tmp_path / "cine" / "cine.dcm", series)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    with pytest.raises(ValueError, match=r"cine\.dcm.*multi-frame \(3 frames.*per-frame"):
        read_dicom_series(tmp_path / "cine")
    ds = pydicom.dcmread(write_enhanced(path, series))
    del ds.PerFrameFunctionalGroupsSequence[0:1]
    ds.save_as(path)
    with pytest.raises(ValueError, match=r"3 frames but 2 per-frame functional groups"):
        read_dicom_series(tmp_path / "cine")


def test_default_series_counts_frames_not_files(tmp_path):
    series = write_series(tmp_path / "slices", n_slices=6, seed=6)
    folder = tmp_path / "mixed"
    write_series(folder, n_slices=3, seed=7, description="few slices")  # 3 files
    write_enhanced(folder / "volume.dcm", series)  # 1 file, 6 frames
    assert read_dicom_series(folder).name == "enhanced CT"
    assert [v.name for v in read_dicom_folder(folder)] == ["few slices", "enhanced CT"]


def write_seg(
    path: Path, series: dict, planes: dict, *, referenced_uid=None, seed=0, thickness=None
) -> Path:
    """A BINARY DICOM SEG: ``planes`` maps segment number -> {slice index: bool mask}."""
    ds = new_file(path, SegmentationStorage)
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.SeriesDescription = "organs"
    ds.Modality = "SEG"
    ds.SegmentationType = "BINARY"
    rows, cols = series["pixels"].shape[1:]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    segments = []
    for number in planes:
        entry = Dataset()
        entry.SegmentNumber = number
        entry.SegmentLabel = f"organ {number}"
        segments.append(entry)
    ds.SegmentSequence = Sequence(segments)
    if referenced_uid is not None:
        ds.ReferencedSeriesSequence = item(SeriesInstanceUID=referenced_uid)
    shared = Dataset()
    shared.PixelMeasuresSequence = item(
        PixelSpacing=[str(v) for v in PIXEL_SPACING],
        SliceThickness=str(series["step"] if thickness is None else thickness),
    )
    shared.PlaneOrientationSequence = item(
        ImageOrientationPatient=[f"{v:g}" for v in (*series["row_dir"], *series["col_dir"])]
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, masks = [], []
    entries = [(n, k, m) for n, per in planes.items() for k, m in per.items()]
    for index in np.random.default_rng(seed).permutation(len(entries)):
        number, k, mask = entries[index]
        group = Dataset()
        position = series["origin"] + k * series["step"] * series["normal"]
        group.PlanePositionSequence = item(ImagePositionPatient=[f"{v:.4f}" for v in position])
        group.SegmentIdentificationSequence = item(ReferencedSegmentNumber=number)
        frames.append(group)
        masks.append(mask)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.asarray(masks, dtype=np.uint8))
    ds.save_as(path, enforce_file_format=True)
    return path


def seg_planes(shape, seed=0):
    rng = np.random.default_rng(seed)
    return {
        1: {1: rng.random(shape) > 0.5, 2: rng.random(shape) > 0.5},  # slices 1-2
        3: {4: rng.random(shape) > 0.7},  # slice 4 only; slice 3 has no frame
    }


def labels_as_series(folder: Path, series: dict, planes: dict, slices: range) -> np.ndarray:
    """Read back the expected labels written as a plain series on the same geometry.

    Slice ``k`` of ``slices`` holds the labels of SEG slice ``k``; reading it with the
    (separately tested) series reader gives the voxel layout the SEG volume must have.
    """
    uid = generate_uid()
    shape = series["pixels"].shape[1:]
    folder.mkdir(parents=True)
    for index, k in enumerate(slices):
        pixels = np.zeros(shape, dtype=np.uint16)
        for number, per in planes.items():
            if k in per:
                pixels[per[k]] = number
        position = series["origin"] + k * series["step"] * series["normal"]
        write_slice(
            folder / f"labels{index:03d}.dcm",
            pixels,
            position,
            series_uid=uid,
            orientation=(*series["row_dir"], *series["col_dir"]),
            intercept=0.0,
        )
    return read_dicom_series(folder).data


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL, CORONAL])
def test_seg_on_its_referenced_series_lines_up_voxel_for_voxel(tmp_path, orientation):
    folder = tmp_path / "study"
    series = write_series(folder, n_slices=6, orientation=orientation, seed=8)
    planes = seg_planes(series["pixels"].shape[1:])
    write_seg(folder / "seg.dcm", series, planes, referenced_uid=series["uid"])
    volumes = {v.name: v for v in read_dicom_folder(folder)}
    ct, seg = volumes["synthetic CT"], volumes["organs"]
    assert seg.is_label
    assert seg.layer_data()[2] == "labels"
    assert seg.data.shape == ct.data.shape
    np.testing.assert_allclose(seg.spacing, ct.spacing)
    np.testing.assert_allclose(seg.origin, ct.origin)
    np.testing.assert_allclose(seg.affine, ct.affine)
    expected = labels_as_series(tmp_path / "expected", series, planes, range(6))
    np.testing.assert_array_equal(seg.data, expected)
    assert seg.metadata["dicom"]["segments"] == {"1": "organ 1", "3": "organ 3"}
    assert seg.metadata["dicom"]["referenced_series"] == series["uid"]


@pytest.mark.parametrize("thickness", [None, 3.0])  # 3 mm: thicker than the 2.5 mm spacing
def test_seg_without_its_series_spans_its_frames(tmp_path, thickness):
    source = write_series(tmp_path / "ct", n_slices=6, seed=9)
    planes = seg_planes(source["pixels"].shape[1:], seed=1)
    (tmp_path / "seg").mkdir()
    write_seg(
        tmp_path / "seg" / "seg.dcm",
        source,
        planes,
        referenced_uid=source["uid"],
        thickness=thickness,
    )
    seg = read_dicom_series(tmp_path / "seg")
    ct = read_dicom_series(tmp_path / "ct")
    assert seg.data.shape == (4, *ct.data.shape[1:])  # slices 1..4; slice 3 has no frame
    np.testing.assert_allclose(seg.spacing, ct.spacing)
    expected = labels_as_series(tmp_path / "expected", source, planes, range(1, 5))
    np.testing.assert_array_equal(seg.data, expected)
    assert any("not in the folder" in note for note in seg.metadata["dicom"]["notes"])


def test_seg_frame_off_the_scan_grid_is_a_clear_error(tmp_path):
    folder = tmp_path / "study"
    series = write_series(folder, n_slices=4, seed=10)
    shifted = dict(series, origin=series["origin"] + 0.4 * series["normal"])
    planes = {1: {1: np.ones(series["pixels"].shape[1:], dtype=bool)}}
    write_seg(folder / "seg.dcm", shifted, planes, referenced_uid=series["uid"])
    with pytest.raises(ValueError, match=r"seg\.dcm#frame1.*0\.400 mm from the nearest slice"):
        read_dicom_series(folder, list_dicom_series(folder)[-1].uid)


def test_cli_reads_a_seg_and_converts_it_onto_the_scan_grid(tmp_path, capsys):
    folder = tmp_path / "study"
    series = write_series(folder, n_slices=6, seed=11)
    planes = seg_planes(series["pixels"].shape[1:], seed=2)
    write_seg(folder / "seg.dcm", series, planes, referenced_uid=series["uid"])
    assert cli.main(["read", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "SEG series 99, 6 slices, segments 1: organ 1, 3: organ 3" in out
    seg_uid = next(s.uid for s in list_dicom_series(folder) if s.modality == "SEG")
    assert (
        cli.main(["convert", str(folder), str(tmp_path / "seg.nii.gz"), "--series", seg_uid]) == 0
    )
    assert cli.main(["convert", str(folder), str(tmp_path / "ct.nii.gz")]) == 0
    seg, ct = read_nifti(tmp_path / "seg.nii.gz"), read_nifti(tmp_path / "ct.nii.gz")
    assert seg.is_label
    assert seg.data.shape == ct.data.shape
    np.testing.assert_allclose(seg.affine, ct.affine)
    np.testing.assert_array_equal(seg.data, read_dicom_series(folder, seg_uid).data)
