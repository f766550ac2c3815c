"""NIfTI reading, reorientation and label write-back, with real nibabel files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import napari_seglab
from napari_seglab import cli
from napari_seglab._io_plugin import get_dicom_reader, get_nifti_reader, write_labels_nifti
from napari_seglab.io import read_nifti, write_nifti
from napari_seglab.io.label_rule import count_distinct

#: Spacing 0.8 x 0.8 x 3 mm, x axis flipped (voxel i runs toward patient Left), an origin.
FLIPPED_AFFINE = np.array(
    [
        [-0.8, 0.0, 0.0, 12.5],
        [0.0, 0.8, 0.0, -40.0],
        [0.0, 0.0, 3.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (14, 11, 6)  # (i, j, k) on disk


def layer_world(index, scale, translate) -> np.ndarray:
    """napari's world coordinate of a voxel for an axis-aligned layer."""
    return np.asarray(translate) + np.asarray(scale) * np.asarray(index)


def ras_to_layer_world(ras) -> np.ndarray:
    """RAS (x, y, z) -> layer world (I, P, L): I = -z, P = -y, L = -x."""
    x, y, z = ras[:3]
    return np.array([-z, -y, -x])


def save(path: Path, data: np.ndarray, affine: np.ndarray = FLIPPED_AFFINE, **header) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    for key, value in header.items():
        hdr[key] = value
    nib.save(nib.Nifti1Image(data, affine, header=hdr), path)
    return path


def only_marker(data: np.ndarray, value) -> tuple[int, ...]:
    hits = np.argwhere(data == value)
    assert len(hits) == 1, f"expected one voxel of value {value}, found {len(hits)}"
    return tuple(int(i) for i in hits[0])


def test_affine_scan_opens_with_spacing_origin_and_reoriented_voxels(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 5.0, SHAPE).astype(np.float32)
    marker = (3, 8, 4)
    data[marker] = 5000.0
    path = save(tmp_path / "ct.nii.gz", data)

    reader = get_nifti_reader(str(path))
    assert reader is not None
    [(layer, kwargs, layer_type)] = reader(str(path))

    assert layer_type == "image"
    assert layer.shape == (6, 11, 14)  # (Z, Y, X) = (k, j, i)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.8, 0.8), rtol=1e-6)
    # voxel (0,0,0) after reorientation: i as is (-x is Left), j flipped (Posterior),
    # k flipped (Inferior: the top slice first).
    corner_ras = FLIPPED_AFFINE @ np.array([0, SHAPE[1] - 1, SHAPE[2] - 1, 1])
    np.testing.assert_allclose(kwargs["translate"], ras_to_layer_world(corner_ras), atol=1e-5)
    # the marker lands where its world coordinate says
    index = only_marker(layer, 5000.0)
    expected = ras_to_layer_world(FLIPPED_AFFINE @ np.array([*marker, 1]))
    np.testing.assert_allclose(
        layer_world(index, kwargs["scale"], kwargs["translate"]), expected, atol=1e-4
    )
    # every voxel moved, none changed: a permutation/flip of the source
    np.testing.assert_array_equal(np.sort(layer, axis=None), np.sort(data, axis=None))
    meta = kwargs["metadata"]
    assert meta["orientation"]["source_axcodes"] == ["L", "A", "S"]
    assert meta["orientation"]["layer_axcodes"] == ["I", "P", "L"]
    assert meta["orientation"]["oblique"] is False
    np.testing.assert_allclose(meta["geometry"]["source_affine"], FLIPPED_AFFINE, atol=1e-6)
    assert meta["nifti"]["sform_code"] == 2


def test_las_and_ras_files_of_the_same_scan_give_the_same_layer(tmp_path):
    rng = np.random.default_rng(1)
    ras_data = rng.integers(0, 1000, SHAPE).astype(np.int16)
    ras_affine = FLIPPED_AFFINE.copy()
    ras_affine[0, 0] = 0.8
    ras_affine[0, 3] = FLIPPED_AFFINE[0, 3] - 0.8 * (SHAPE[0] - 1)  # same physical corner
    save(tmp_path / "ras.nii", ras_data, ras_affine)
    save(tmp_path / "las.nii", ras_data[::-1].copy(), FLIPPED_AFFINE)
    ras, las = read_nifti(tmp_path / "ras.nii"), read_nifti(tmp_path / "las.nii")
    np.testing.assert_array_equal(ras.data, las.data)
    np.testing.assert_allclose(ras.spacing, las.spacing)
    np.testing.assert_allclose(ras.origin, las.origin, atol=1e-5)


def test_label_nifti_opens_as_labels_and_round_trips_through_the_npe2_adapters(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 3:7, 1:3] = 1
    labels[9:12, 1:4, 4:6] = 2
    labels[0, 0, 0] = 3
    src = save(tmp_path / "seg.nii.gz", labels)

    [(data, kwargs, layer_type)] = get_nifti_reader(str(src))(str(src))
    assert layer_type == "labels"
    assert data.dtype == np.uint8
    # in memory and paintable, not a view of the file
    assert not isinstance(data, np.memmap)
    assert data.flags.writeable
    assert data.flags.c_contiguous
    assert set(np.unique(data)) == {0, 1, 2, 3}

    written = write_labels_nifti(str(tmp_path / "saved"), data, kwargs)
    assert written == [str(tmp_path / "saved.nii.gz")]
    original, saved = nib.load(src), nib.load(written[0])
    np.testing.assert_array_equal(np.asarray(saved.dataobj), labels)  # source voxel order
    np.testing.assert_array_equal(saved.affine, original.affine)
    for key in ("qform_code", "sform_code", "pixdim", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(saved.header[key], original.header[key])
    assert saved.get_data_dtype() == np.uint8
    assert saved.header.get_intent()[0] == "label"

    [(again, kwargs_again, type_again)] = get_nifti_reader(written[0])(written[0])
    assert type_again == "labels"
    np.testing.assert_array_equal(again, data)
    assert again.dtype == data.dtype
    assert kwargs_again["scale"] == kwargs["scale"]
    assert kwargs_again["translate"] == kwargs["translate"]


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.int64])
def test_integer_label_dtypes_are_preserved(tmp_path, dtype):
    labels = np.zeros(SHAPE, dtype)
    labels[1:4, 2:5, 2:4] = 40_000 if dtype in (np.int32, np.int64, np.uint16) else 7
    src = save(tmp_path / "seg.nii", labels)
    vol = read_nifti(src)
    assert vol.is_label
    assert vol.data.base is None  # a copy: never a map of the (uncompressed) file
    assert vol.data.flags.writeable
    path = write_nifti(
        tmp_path / "out.nii.gz",
        vol.data,
        spacing=vol.spacing,
        origin=vol.origin,
        metadata=vol.metadata,
    )
    back = read_nifti(path)
    assert back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, vol.data)


def test_new_labels_layer_without_metadata_saves_with_its_scale_and_translate(tmp_path):
    vol = read_nifti(save(tmp_path / "img.nii.gz", np.ones(SHAPE, np.float32)))
    drawn = np.zeros(vol.data.shape, np.int32)
    drawn[1, 2, 3] = 5
    meta = {"scale": np.array(vol.spacing), "translate": np.array(vol.origin), "metadata": {}}
    [path] = write_labels_nifti(str(tmp_path / "drawn.nii"), drawn, meta)
    back = read_nifti(path)
    assert back.is_label
    np.testing.assert_array_equal(back.data, drawn)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    # the written file is in RAS+ voxel order and says so in its affine
    assert nib.aff2axcodes(nib.load(path).affine) == ("R", "A", "S")


def test_changed_scale_wins_over_the_source_geometry(tmp_path):
    vol = read_nifti(
        save(
            tmp_path / "seg.nii",
            np.eye(SHAPE[0], SHAPE[1], dtype=np.uint8)[..., None] * np.ones(SHAPE[2], np.uint8),
        )
    )
    new_scale = (2.0, 1.0, 1.0)
    path = write_nifti(
        tmp_path / "rescaled.nii",
        vol.data,
        spacing=new_scale,
        origin=vol.origin,
        metadata=vol.metadata,
    )
    back = read_nifti(path)
    np.testing.assert_allclose(back.spacing, new_scale)
    np.testing.assert_array_equal(back.data, vol.data)


def test_layer_type_rule(tmp_path):
    few = np.zeros(SHAPE, np.int16)
    few[2:5, 2:5, 2:5] = 4
    many = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)
    negative = few.copy()
    negative[0, 0, 0] = -1
    assert read_nifti(save(tmp_path / "few.nii", few)).is_label
    assert not read_nifti(save(tmp_path / "many.nii", many)).is_label
    assert not read_nifti(save(tmp_path / "neg.nii", negative)).is_label
    # float voxels with the label intent are labels (as int32)
    as_float = few.astype(np.float32)
    vol = read_nifti(save(tmp_path / "float_label.nii", as_float, intent_code=1002))
    assert vol.is_label
    assert vol.data.dtype == np.int32
    # forcing the type
    assert not read_nifti(tmp_path / "few.nii", layer_type="image").is_label


def test_distinct_value_count_handles_large_label_ids():
    ids = np.repeat(np.array([0, 5_000_000, 7_000_000], np.int32), 1000)
    assert count_distinct(ids, limit=256) == 3
    many = (np.arange(3000, dtype=np.int64) % 300) * 1_000_000
    assert count_distinct(many, limit=256) == 257
    fortran = np.asfortranarray(np.arange(24, dtype=np.uint16).reshape(2, 3, 4) % 5)
    assert count_distinct(fortran, limit=256) == 5


def test_scaled_integers_open_as_float32_image_with_scaling_applied(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    img = nib.Nifti1Image(raw, FLIPPED_AFFINE, dtype=np.int16)
    img.header.set_slope_inter(0.5, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = read_nifti(tmp_path / "scaled.nii.gz")
    assert not vol.is_label
    assert vol.data.dtype == np.float32
    assert vol.data.min() == -1024.0
    assert vol.data.max() == pytest.approx(0.5 * raw.max() - 1024.0)
    assert vol.metadata["nifti"]["scl_slope"] == 0.5
    assert read_nifti(save(tmp_path / "plain.nii", raw + 1000)).data.dtype == np.int16


def test_single_slice_file_opens_as_2d_and_saves_back_with_its_shape(tmp_path):
    labels = np.zeros((9, 7), np.uint8)  # (i, j): one axial slice
    labels[2, 5] = 1
    src = save(tmp_path / "slice.nii.gz", labels)
    vol = read_nifti(src)
    assert vol.data.shape == (7, 9)  # (Y, X)
    assert len(vol.spacing) == len(vol.origin) == 2
    np.testing.assert_allclose(vol.spacing, (0.8, 0.8), rtol=1e-6)
    index = only_marker(vol.data, 1)
    world = ras_to_layer_world(FLIPPED_AFFINE @ np.array([2, 5, 0, 1]))
    np.testing.assert_allclose(layer_world(index, vol.spacing, vol.origin), world[1:], atol=1e-4)
    path = write_nifti(
        tmp_path / "back.nii.gz",
        vol.data,
        spacing=vol.spacing,
        origin=vol.origin,
        metadata=vol.metadata,
    )
    saved = nib.load(path)
    assert saved.shape == (9, 7)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), labels)
    np.testing.assert_array_equal(saved.affine, nib.load(src).affine)


def test_4d_file_puts_time_first_and_3d_labels_drawn_on_it_save_with_its_grid(tmp_path):
    series = np.zeros((*SHAPE, 3), np.float32)
    series[4, 5, 2, 1] = 9.0
    src = save(tmp_path / "fmri.nii.gz", series)
    vol = read_nifti(src)
    assert vol.data.shape == (3, 6, 11, 14)  # (T, Z, Y, X)
    assert vol.spacing[0] == 1.0
    assert vol.origin[0] == 0.0
    index = only_marker(vol.data, 9.0)
    assert index[0] == 1
    expected = ras_to_layer_world(FLIPPED_AFFINE @ np.array([4, 5, 2, 1]))
    np.testing.assert_allclose(
        layer_world(index[1:], vol.spacing[1:], vol.origin[1:]), expected, atol=1e-4
    )
    labels = (vol.data[1] > 1).astype(np.uint8)  # a 3D labels layer on the 4D image
    [path] = write_labels_nifti(
        str(tmp_path / "mask.nii.gz"),
        labels,
        {"scale": vol.spacing[1:], "translate": vol.origin[1:], "metadata": vol.metadata},
    )
    saved = nib.load(path)
    assert saved.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(saved.dataobj), series[..., 1] > 1)
    np.testing.assert_array_equal(saved.affine, nib.load(src).affine)


def test_oblique_scan_warns_keeps_rotation_and_round_trips_exactly(tmp_path):
    angle = np.radians(10.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.8, 3.0])
    affine[:3, 3] = (5.0, -3.0, 20.0)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3, 4, 2] = 1
    src = save(tmp_path / "oblique.nii.gz", labels, affine)
    with pytest.warns(UserWarning, match="tilted 10.00 degrees"):
        vol = read_nifti(src)
    assert vol.is_oblique
    np.testing.assert_allclose(vol.spacing, (3.0, 0.8, 0.8), rtol=1e-6)
    # with rotate_oblique the napari affine gives the exact scanner position
    data, kwargs, _ = vol.layer_data(rotate_oblique=True)
    index = only_marker(data, 1)
    physical = layer_world(index, kwargs["scale"], kwargs["translate"])
    world = (kwargs["affine"] @ np.array([*physical, 1.0]))[:3]
    np.testing.assert_allclose(world, ras_to_layer_world(affine @ [3, 4, 2, 1]), atol=1e-4)
    assert "affine" not in vol.layer_data()[1]
    path = write_nifti(
        tmp_path / "back.nii.gz",
        data,
        spacing=kwargs["scale"],
        origin=kwargs["translate"],
        metadata=kwargs["metadata"],
    )
    np.testing.assert_array_equal(nib.load(path).affine, nib.load(src).affine)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), labels)


def test_truncated_gzip_gives_a_clear_error_naming_the_file(tmp_path):
    src = save(tmp_path / "whole.nii.gz", np.random.default_rng(2).random(SHAPE, np.float32))
    blob = src.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz.*truncated or corrupt"):
        read_nifti(cut)
    with pytest.raises(ValueError, match=r"cut\.nii\.gz"):
        get_nifti_reader(str(cut))(str(cut))


def test_non_image_file_renamed_nii_gives_a_clear_error(tmp_path):
    text = tmp_path / "notes.nii"
    text.write_text("these are meeting notes, not an image\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.nii.* not a readable NIfTI file"):
        read_nifti(text)
    fake_gz = tmp_path / "plain.nii.gz"
    fake_gz.write_bytes(b"not gzip at all" * 50)
    with pytest.raises(ValueError, match=r"plain\.nii\.gz"):
        read_nifti(fake_gz)
    gz_text = tmp_path / "text.nii.gz"
    gz_text.write_bytes(gzip.compress(b"hello" * 200))
    with pytest.raises(ValueError, match=r"text\.nii\.gz"):
        read_nifti(gz_text)
    with pytest.raises(FileNotFoundError, match=r"missing\.nii"):
        read_nifti(tmp_path / "missing.nii")


def test_readers_claim_only_their_inputs(tmp_path):
    assert get_nifti_reader(str(tmp_path / "image.tif")) is None
    assert get_nifti_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.png")]) is None
    assert get_nifti_reader(str(tmp_path / "A.NII.GZ")) is not None
    assert get_dicom_reader(str(tmp_path / "a.nii")) is None  # not a folder


def test_writer_refuses_bad_labels_and_names(tmp_path):
    with pytest.raises(ValueError, match="integer label data, got dtype float32"):
        write_nifti(tmp_path / "x.nii", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz, got 'x\.tif'"):
        write_nifti(tmp_path / "x.tif", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="Expected 3 spacing values"):
        write_nifti(tmp_path / "x.nii", np.zeros((3, 4, 5), np.uint8), spacing=(1.0, 1.0))
    # a bool mask is saved as uint8
    path = write_nifti(tmp_path / "mask.nii", np.ones((3, 4, 5), bool))
    assert nib.load(path).get_data_dtype() == np.uint8


def _plugin_manager():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    try:
        pm.get_manifest("napari-seglab")
    except KeyError:  # not installed: register the package's manifest directly
        pm.register(
            npe2.PluginManifest.from_file(Path(napari_seglab.__file__).parent / "napari.yaml")
        )
    return npe2


def test_npe2_reads_and_writes_through_the_manifest(tmp_path):
    npe2 = _plugin_manager()
    labels = np.zeros(SHAPE, np.int16)
    labels[5:9, 2:6, 1:4] = 2
    src = save(tmp_path / "seg.nii.gz", labels)
    [(data, kwargs, layer_type)] = npe2.read([str(src)], stack=False, plugin_name="napari-seglab")
    assert layer_type == "labels"
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.8, 0.8), rtol=1e-6)
    out = tmp_path / "via_npe2.nii.gz"
    written = npe2.write(str(out), [(data, kwargs, "labels")], plugin_name="napari-seglab")
    assert written == [str(out)]
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), labels)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(src).affine)


def test_cli_read_prints_geometry(tmp_path, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 1, 1] = 1
    src = save(tmp_path / "seg.nii.gz", labels)
    assert cli.main(["read", str(src)]) == 0
    out = capsys.readouterr().out
    assert "labels" in out
    assert "(6, 11, 14)" in out
    assert "3, 0.8, 0.8" in out
    assert "L A S -> I P L" in out
    bad = tmp_path / "bad.nii"
    bad.write_text("nope")
    assert cli.main(["read", str(bad)]) == 2
    assert "bad.nii" in capsys.readouterr().err


def _nifti_bytes(data: np.ndarray, affine: np.ndarray = FLIPPED_AFFINE) -> bytes:
    """An uncompressed single-file NIfTI-1 image as bytes."""
    return nib.Nifti1Image(data, affine).to_bytes()


def test_nan_sform_falls_back_to_the_qform_with_a_warning_or_is_refused(tmp_path):
    data = np.random.default_rng(5).random(SHAPE).astype(np.float32)
    img = nib.Nifti1Image(data, FLIPPED_AFFINE)
    img.header.set_qform(FLIPPED_AFFINE, code=1)
    img.header.set_sform(FLIPPED_AFFINE, code=2)
    raw = img.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]))
    header["srow_x"] = [-0.8, 0.0, 0.0, np.nan]
    (tmp_path / "nan_sform.nii.gz").write_bytes(gzip.compress(header.binaryblock + raw[348:]))
    good = read_nifti(save(tmp_path / "good.nii.gz", data))
    with pytest.warns(UserWarning, match=r"sform holds NaN.*qform"):
        vol = read_nifti(tmp_path / "nan_sform.nii.gz")
    assert np.all(np.isfinite(vol.origin))
    np.testing.assert_allclose(vol.origin, good.origin)
    np.testing.assert_allclose(vol.spacing, good.spacing)
    assert vol.metadata["geometry"]["nifti_fields"]["sform_code"] == 0

    header["qform_code"] = 0
    (tmp_path / "nan_only.nii.gz").write_bytes(gzip.compress(header.binaryblock + raw[348:]))
    with pytest.raises(ValueError, match=r"nan_only\.nii\.gz.*sform affine holds NaN"):
        read_nifti(tmp_path / "nan_only.nii.gz")
    assert cli.main(["read", str(tmp_path / "nan_only.nii.gz")]) == 2


def test_gzip_stream_damaged_mid_way_is_refused_not_opened_with_wrong_voxels(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    # stored (level 0) deflate blocks: a flipped byte still decodes, only the CRC tells
    blob = bytearray(gzip.compress(_nifti_bytes(data), compresslevel=0))
    blob[len(blob) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"damaged\.nii\.gz.*damaged gzip stream"):
        read_nifti(damaged)


def test_misleading_suffix_is_read_by_its_content(tmp_path):
    data = np.random.default_rng(6).random(SHAPE).astype(np.float32)
    plain = _nifti_bytes(data)
    not_gzipped = tmp_path / "plain.nii.gz"
    not_gzipped.write_bytes(plain)
    gzipped = tmp_path / "packed.nii"
    gzipped.write_bytes(gzip.compress(plain))
    reference = read_nifti(save(tmp_path / "ref.nii", data))
    for path in (not_gzipped, gzipped):
        vol = read_nifti(path)
        np.testing.assert_array_equal(vol.data, reference.data)
        np.testing.assert_allclose(vol.origin, reference.origin)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_header_asking_for_more_than_memory_or_the_file_is_one_clear_error(tmp_path, suffix):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((30000, 30000, 30000))
    hdr["vox_offset"] = 352
    blob = hdr.binaryblock + b"\0" * 4 + b"\0" * 1000
    huge = tmp_path / f"huge{suffix}"
    huge.write_bytes(gzip.compress(blob) if suffix.endswith("gz") else blob)
    with pytest.raises(ValueError, match=r"huge\.nii.*\(30000, 30000, 30000\).*memory"):
        read_nifti(huge)

    hdr.set_data_shape((40, 40, 40))
    short = tmp_path / f"short{suffix}"
    blob = hdr.binaryblock + b"\0" * 4 + b"\0" * 1000
    short.write_bytes(gzip.compress(blob) if suffix.endswith("gz") else blob)
    with pytest.raises(ValueError, match=r"short\.nii.*\(40, 40, 40\).*holds 1352 bytes"):
        read_nifti(short)
