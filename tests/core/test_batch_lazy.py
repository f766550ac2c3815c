"""Lazy inputs give read_array's array and geometry, without reading the whole file."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_seglab.batch.lazy import open_lazy
from napari_seglab.batch.omezarr import write_ome_zarr
from napari_seglab.io import read_array

da = pytest.importorskip("dask.array")


def same_as_read_array(path, chunk_bytes=None, **kwargs):
    lazy = open_lazy(path, **kwargs, **({"chunk_bytes": chunk_bytes} if chunk_bytes else {}))
    eager = read_array(path, **kwargs)
    assert isinstance(lazy.data, da.Array)
    values = lazy.data.compute()
    assert values.dtype == np.asarray(eager.data).dtype
    np.testing.assert_array_equal(values, np.asarray(eager.data))
    assert lazy.spacing == eager.spacing
    assert lazy.origin == eager.origin
    assert lazy.format == eager.format
    if eager.affine is None:
        assert lazy.affine is None
    else:
        np.testing.assert_allclose(lazy.affine, eager.affine)
    return lazy, eager


# (label, affine) pairs covering flips, permutations, obliquity and a scaled grid
AFFINES = {
    "ras": np.diag([0.8, 0.9, 2.5, 1.0]),
    "lps": np.array([[-0.7, 0, 0, 30], [0, -0.7, 0, 20], [0, 0, 3.0, -50], [0, 0, 0, 1]]),
    "permuted": np.array([[0, 0, -2.0, 5], [1.0, 0, 0, -3], [0, -1.5, 0, 7], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_orientation_and_geometry(tmp_path, name):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(11, 13, 7)).astype(np.float32)
    path = tmp_path / f"{name}.nii"
    nib.save(nib.Nifti1Image(raw, AFFINES[name]), path)
    lazy, eager = same_as_read_array(path)
    assert lazy.metadata["geometry"] == eager.metadata["geometry"]
    assert lazy.metadata["orientation"] == eager.metadata["orientation"]
    assert lazy.metadata["nifti"] == eager.metadata["nifti"]
    assert lazy.label_hint == eager.label_hint
    assert lazy.metadata["lazy"] is True


def test_nifti_oblique_scaled_labels_2d_4d(tmp_path):
    rng = np.random.default_rng(2)
    angle = np.deg2rad(10)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    oblique = np.eye(4)
    oblique[:3, :3] = rot * [1.0, 1.2, 2.0]
    img = nib.Nifti1Image(rng.integers(-100, 100, (9, 8, 6)).astype(np.int16), oblique)
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # oblique grid warning, both readers
        lazy, _ = same_as_read_array(tmp_path / "scaled.nii")
    assert lazy.data.dtype == np.float32
    labels = np.zeros((10, 12, 5), np.uint8)
    labels[2:5, 3:9, 1:3] = 4
    nib.save(nib.Nifti1Image(labels, AFFINES["lps"]), tmp_path / "liver_seg.nii")
    lazy, eager = same_as_read_array(tmp_path / "liver_seg.nii")
    assert lazy.label_hint is True
    assert lazy.metadata["nifti"]["opened_as"] == eager.metadata["nifti"]["opened_as"]
    lazy, _ = same_as_read_array(tmp_path / "liver_seg.nii", layer_type="image")
    assert lazy.label_hint is False
    nib.save(
        nib.Nifti1Image(rng.random((14, 9, 1)).astype(np.float32), np.eye(4)), tmp_path / "p.nii"
    )
    lazy, _ = same_as_read_array(tmp_path / "p.nii")
    assert lazy.data.ndim == 2
    four = rng.random((6, 5, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, AFFINES["ras"]), tmp_path / "four.nii")
    lazy, _ = same_as_read_array(tmp_path / "four.nii")
    assert lazy.data.shape == (3, 4, 5, 6)


def test_nifti_is_read_slab_by_slab(tmp_path):
    raw = np.arange(16 * 16 * 40, dtype=np.float32).reshape(16, 16, 40)
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(raw, np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    lazy = open_lazy(path, chunk_bytes=16 * 16 * 4 * 8)  # 8 planes per chunk
    assert lazy.data.numblocks == (5, 1, 1)  # file k axis -> layer Z (I), in 5 slabs
    plane = lazy.data[3].compute()
    np.testing.assert_array_equal(plane, np.asarray(read_array(path).data)[3])


def test_gzip_nifti_is_read_eagerly(tmp_path):
    raw = np.random.default_rng(3).random((5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(raw, AFFINES["lps"]), tmp_path / "c.nii.gz")
    lazy, _ = same_as_read_array(tmp_path / "c.nii.gz")
    assert lazy.metadata["lazy"] is False


def test_tiff_npy_zarr_omezarr(tmp_path):
    rng = np.random.default_rng(4)
    stack = rng.integers(0, 4000, (6, 30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    lazy, _ = same_as_read_array(tmp_path / "plain.tif")
    assert lazy.data.chunksize == (1, 30, 40)  # one page per chunk
    tifffile.imwrite(tmp_path / "tiled.tif", stack, compression="zlib", tile=(16, 16))
    same_as_read_array(tmp_path / "tiled.tif")
    tifffile.imwrite(
        tmp_path / "imagej.tif",
        stack.astype(np.uint8),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"spacing": 2.0, "axes": "ZYX"},
    )
    lazy, _ = same_as_read_array(tmp_path / "imagej.tif")
    assert lazy.spacing == (2.0, 0.5, 0.5)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif", ome=True) as tif:
        tif.write(stack, subifds=1, tile=(16, 16), metadata={"axes": "ZYX"})
        tif.write(stack[:, ::2, ::2], subfiletype=1, tile=(16, 16))
    lazy, _ = same_as_read_array(tmp_path / "pyramid.ome.tif")  # level 0 of the pyramid
    assert lazy.data.chunksize == (1, 16, 16)
    np.save(tmp_path / "a.npy", stack)
    lazy, _ = same_as_read_array(tmp_path / "a.npy", chunk_bytes=30 * 40 * 2 * 2)
    assert lazy.data.numblocks == (3, 1, 1)
    import zarr

    zarr.save_array(str(tmp_path / "a.zarr"), stack)
    same_as_read_array(tmp_path / "a.zarr")
    write_ome_zarr(
        stack, tmp_path / "o.ome.zarr", spacing=(3.0, 1.0, 0.5), origin=(1, 2, 3), kind="labels"
    )
    lazy, _ = same_as_read_array(tmp_path / "o.ome.zarr")
    assert lazy.spacing == (3.0, 1.0, 0.5)
    assert lazy.origin == (1.0, 2.0, 3.0)
    assert lazy.label_hint is True


def test_picture_and_errors(tmp_path):
    from PIL import Image

    Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20)).save(tmp_path / "p.png")
    lazy, _ = same_as_read_array(tmp_path / "p.png")
    assert lazy.metadata["lazy"] is False
    with pytest.raises(FileNotFoundError):
        open_lazy(tmp_path / "missing.nii")
    with pytest.raises(ValueError, match="unsupported"):
        open_lazy((tmp_path / "x.txt").write_text("x") and tmp_path / "x.txt")
    raw = np.zeros((8, 8, 8), np.float32)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "cut.nii")
    data = (tmp_path / "cut.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        open_lazy(tmp_path / "cut.nii")
