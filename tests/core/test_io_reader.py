"""The one reader of input files: every format, its geometry, and errors that say what happened."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
import zarr
from test_io_dicom import seg_planes, write_enhanced, write_seg, write_series

from napari_seglab import data
from napari_seglab.io import (
    SUFFIXES,
    read_array,
    read_dicom_series,
    read_nifti,
    write_array,
    write_nifti,
)
from napari_seglab.io.reader import looks_like_labels


def test_nifti_gives_the_volume_and_its_geometry(tmp_path):
    labels = np.zeros((4, 6, 5), dtype=np.uint8)
    labels[1:3, 2:5, 1:4] = 2
    write_nifti(tmp_path / "seg.nii.gz", labels, spacing=(3.0, 0.5, 0.7), origin=(1, 2, 3))
    read = read_array(tmp_path / "seg.nii.gz")
    volume = read_nifti(tmp_path / "seg.nii.gz")
    assert read.format == "nifti"
    np.testing.assert_array_equal(read.data, volume.data)
    assert read.spacing == pytest.approx((3.0, 0.5, 0.7))
    assert read.origin == pytest.approx(volume.origin)
    np.testing.assert_allclose(read.affine, volume.affine)
    assert read.is_label


def test_dicom_folder_file_multi_frame_and_seg(tmp_path):
    folder = tmp_path / "study"
    ct = write_series(folder, n_slices=5, seed=2)
    other = write_series(folder, n_slices=3, prefix="small", series_number=2, seed=3)
    write_seg(folder / "seg.dcm", ct, seg_planes(ct["pixels"].shape[1:]), referenced_uid=ct["uid"])

    read = read_array(folder)  # the series with most frames
    expected = read_dicom_series(folder)
    assert read.format == "dicom"
    np.testing.assert_array_equal(read.data, expected.data)
    assert read.spacing == pytest.approx(expected.spacing)

    # A file names its own series.
    small = read_array(folder / "small000.dcm")
    np.testing.assert_array_equal(small.data, read_dicom_series(folder, other["uid"]).data)
    assert small.spacing == pytest.approx(read_dicom_series(folder, other["uid"]).spacing)
    seg = read_array(folder / "seg.dcm", what="label file")
    assert seg.is_label
    assert seg.shape == read_dicom_series(folder, ct["uid"]).data.shape

    (tmp_path / "enhanced").mkdir()
    write_enhanced(tmp_path / "enhanced" / "volume.dcm", ct)
    enhanced = read_array(tmp_path / "enhanced")
    np.testing.assert_array_equal(enhanced.data, read_dicom_series(folder, ct["uid"]).data)
    assert not enhanced.is_label


def test_tiff_from_seglab_sample_keeps_spacing_and_maps_lazily(tmp_path):
    sample = data.nuclei_3d(seed=1)
    meta = {"axes": "ZYX", "spacing": list(sample.spacing)}
    tifffile.imwrite(tmp_path / "image.tif", sample.image, metadata=meta)
    tifffile.imwrite(tmp_path / "labels.tiff", sample.labels, metadata=meta)
    image = read_array(tmp_path / "image.tif")
    assert type(image.data) is np.ndarray
    np.testing.assert_array_equal(image.data, sample.image)
    assert image.spacing == sample.spacing
    assert image.origin is None
    assert not image.is_label
    labels = read_array(tmp_path / "labels.tiff", lazy=True)
    assert isinstance(labels.data, np.memmap)
    np.testing.assert_array_equal(labels.data, sample.labels)
    assert labels.is_label


def test_compressed_tiff_is_read_even_when_lazy_and_imagej_spacing(tmp_path):
    stack = np.arange(3 * 8 * 6, dtype=np.uint16).reshape(3, 8, 6) * 40
    tifffile.imwrite(
        tmp_path / "fiji.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
        compression="zlib",
    )
    read = read_array(tmp_path / "fiji.tif", lazy=True)
    np.testing.assert_array_equal(read.data, stack)
    assert read.spacing == pytest.approx((2.0, 0.5, 0.25))


def test_npy_loads_or_maps(tmp_path):
    labels = data.nuclei_2d(seed=3).labels
    np.save(tmp_path / "labels.npy", labels)
    loaded = read_array(tmp_path / "labels.npy")
    assert type(loaded.data) is np.ndarray
    mapped = read_array(tmp_path / "labels.npy", lazy=True)
    assert isinstance(mapped.data, np.memmap)
    np.testing.assert_array_equal(mapped.data, labels)
    assert mapped.spacing is None
    assert mapped.is_label


def _zarr_array(path, values):
    array = zarr.open_array(str(path), mode="w", shape=values.shape, dtype=values.dtype)
    array[...] = values
    return array


def test_zarr_array_and_ome_zarr_image(tmp_path):
    labels = data.nuclei_3d(seed=2).labels
    _zarr_array(tmp_path / "labels.zarr", labels)
    lazy = read_array(tmp_path / "labels.zarr", lazy=True)
    assert not isinstance(lazy.data, np.ndarray)  # stays on disk
    np.testing.assert_array_equal(lazy.data[2], labels[2])
    eager = read_array(tmp_path / "labels.zarr")
    assert type(eager.data) is np.ndarray
    np.testing.assert_array_equal(eager.data, labels)

    root = zarr.open_group(str(tmp_path / "image.ome.zarr"), mode="w")
    _zarr_array(tmp_path / "image.ome.zarr" / "0", labels)
    _zarr_array(tmp_path / "image.ome.zarr" / "1", labels[:, ::2, ::2])
    transforms = [
        {"type": "scale", "scale": [2.0, 0.5, 0.5]},
        {"type": "translation", "translation": [10.0, 0.0, -4.0]},
    ]
    root.attrs["multiscales"] = [
        {"version": "0.4", "datasets": [{"path": "0", "coordinateTransformations": transforms}]}
    ]
    ome = read_array(tmp_path / "image.ome.zarr")
    np.testing.assert_array_equal(ome.data, labels)
    assert ome.spacing == (2.0, 0.5, 0.5)
    assert ome.origin == (10.0, 0.0, -4.0)


def test_pictures(tmp_path):
    import skimage.io

    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[5:15, 5:25] = (200, 30, 90)
    rgb[..., 2] += np.arange(30, dtype=np.uint8) * 3
    skimage.io.imsave(tmp_path / "photo.png", rgb, check_contrast=False)
    read = read_array(tmp_path / "photo.png")
    assert read.format == "picture"
    np.testing.assert_array_equal(read.data, rgb)
    assert not read.is_label


def test_every_supported_suffix_has_a_test_above():
    assert set(SUFFIXES) == {
        ".nii",
        ".nii.gz",
        ".dcm",
        ".dicom",
        ".ima",
        ".tif",
        ".tiff",
        ".npy",
        ".zarr",
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
    }


def test_unknown_suffix_lists_the_supported_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"unsupported label file .*notes\.txt") as error:
        read_array(tmp_path / "notes.txt", what="label file")
    message = str(error.value)
    for suffix in SUFFIXES:
        assert suffix in message
    assert "got '.txt'" in message


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "image.npy"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as error:
        read_array(missing, what="image file")
    assert str(error.value).startswith("image file not found")
    assert "does not exist" in str(error.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("broken.npy", "NumPy .npy"),
        ("broken.tif", "TIFF"),
        ("broken.png", ".png picture"),
        ("broken.nii.gz", "not a readable NIfTI"),
        ("broken.zarr", "zarr"),
    ],
)
def test_unreadable_content_names_file_and_format(tmp_path, name, expected):
    path = tmp_path / name
    if name.endswith(".zarr"):
        path.mkdir()
    else:
        path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=re.escape(name)) as error:
        read_array(path)
    assert expected in str(error.value)


def test_label_guess():
    sample = data.nuclei_2d(seed=0)
    assert looks_like_labels(sample.labels)
    assert looks_like_labels(sample.labels > 0)
    assert not looks_like_labels(sample.image)  # uint16, many values
    assert not looks_like_labels(sample.image.astype(np.float32))
    assert not looks_like_labels(-sample.labels)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    assert not looks_like_labels(noisy)


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".nii.gz"])
def test_write_array_round_trip(tmp_path, suffix):
    labels = data.nuclei_3d(seed=0).labels.astype(np.uint16)
    path = write_array(tmp_path / "out" / f"labels{suffix}", labels, spacing=(2.0, 0.5, 0.5))
    read = read_array(path)
    np.testing.assert_array_equal(read.data, labels)
    if suffix != ".npy":
        assert read.spacing == pytest.approx((2.0, 0.5, 0.5))


def test_write_array_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported output file .*x\.png.*\.tif, \.tiff"):
        write_array(tmp_path / "x.png", np.zeros((2, 2), np.uint8))


def test_command_help_names_every_format_the_reader_and_writer_take():
    from napari_seglab._commands._shared import INPUT_FORMATS, OUTPUT_FORMATS
    from napari_seglab.io import WRITE_SUFFIXES

    assert set(re.findall(r"\.[a-z]+(?:\.gz)?", INPUT_FORMATS)) == set(SUFFIXES)
    assert ", ".join(WRITE_SUFFIXES) == OUTPUT_FORMATS
