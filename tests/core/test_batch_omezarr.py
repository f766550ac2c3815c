"""OME-Zarr outputs: round trip with pyramid and geometry, streamed, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_seglab.batch.atomic import atomic_dir
from napari_seglab.batch.omezarr import (
    is_ome_zarr,
    ome_zarr_layers,
    read_ome_zarr,
    write_ome_zarr,
)
from napari_seglab.checkpoints import TEMP_PREFIX
from napari_seglab.io import read_array

da = pytest.importorskip("dask.array")


def temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    lab = np.zeros((40, 70, 66), np.uint16)
    lab[5:30, 10:60, 20:50] = 3
    lab[rng.random(lab.shape) > 0.97] = 7
    lab[1, 1, 1] = 9  # a one-voxel object on an odd index never reaches coarser levels
    return lab


def test_labels_round_trip_pyramid_geometry(tmp_path, labels):
    target = tmp_path / "pred.ome.zarr"
    written = write_ome_zarr(
        da.from_array(labels, chunks=(16, 32, 32)),
        target,
        spacing=(2.0, 0.5, 0.25),
        origin=(10.0, -1.0, 2.0),
        kind="labels",
        pyramid_levels=3,
        chunks=(16, 32, 32),
    )
    assert written == target
    assert is_ome_zarr(target)
    image = read_ome_zarr(target)
    assert image.kind == "labels"
    assert image.axes == ("z", "y", "x")
    assert [lvl.shape for lvl in image.levels] == [(40, 70, 66), (20, 35, 33), (10, 18, 17)]
    assert image.scales == [(2.0, 0.5, 0.25), (4.0, 1.0, 0.5), (8.0, 2.0, 1.0)]
    assert image.translations == [(10.0, -1.0, 2.0)] * 3
    assert all(isinstance(lvl, da.Array) for lvl in image.levels)
    np.testing.assert_array_equal(image.levels[0].compute(), labels)
    full_ids = set(np.unique(labels))
    for level, step in zip(image.levels[1:], (2, 4)):
        values = level.compute()
        assert values.dtype == labels.dtype
        assert set(np.unique(values)) <= full_ids  # never a new (averaged) id
        np.testing.assert_array_equal(values, labels[::step, ::step, ::step])
    assert image.levels[0].chunksize == (16, 32, 32)
    # the generic reader sees the full-resolution level with its geometry
    file = read_array(target, lazy=True)
    assert file.spacing == (2.0, 0.5, 0.25)
    assert file.origin == (10.0, -1.0, 2.0)
    assert file.shape == labels.shape
    assert file.label_hint is True  # from the image-label metadata, no values read


def test_image_pyramid_means_and_centres(tmp_path):
    image = np.arange(2 * 8 * 16 * 16, dtype=np.float32).reshape(2, 8, 16, 16)
    target = tmp_path / "probs.ome.zarr"
    write_ome_zarr(image, target, spacing=(1.0, 2.0, 1.0), origin=(0, 0, 0), pyramid_levels=2)
    back = read_ome_zarr(target, lazy=False)
    assert back.kind == "image"
    assert back.axes == ("c", "z", "y", "x")
    assert isinstance(back.levels[0], np.ndarray)
    np.testing.assert_array_equal(back.levels[0], image)
    coarse = image.reshape(2, 4, 2, 8, 2, 8, 2).mean(axis=(2, 4, 6))
    np.testing.assert_allclose(back.levels[1], coarse)
    assert back.scales[1] == (1.0, 2.0, 4.0, 2.0)
    # a 2x2x2 mean is centred half a fine voxel further on
    assert back.translations[1] == (0.0, 0.5, 1.0, 0.5)
    layers = ome_zarr_layers(target)
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image"
    assert kwargs["channel_axis"] == 0
    assert kwargs["scale"] == [1.0, 2.0, 1.0]
    assert kwargs["multiscale"] is True
    assert len(data) == 2


class Recorder:
    """An array-like that records the largest region read from it."""

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.uint8), len(shape)
        self.largest = 0

    def __getitem__(self, index):
        out = np.ones(self.shape, self.dtype)[index]
        self.largest = max(self.largest, out.size)
        return out


def test_dask_input_is_streamed_chunk_by_chunk(tmp_path):
    source = Recorder((64, 64, 64))
    lazy = da.from_array(source, chunks=(16, 16, 16), asarray=False)
    write_ome_zarr(lazy, tmp_path / "s.ome.zarr", kind="labels", pyramid_levels=3)
    assert source.largest == 16**3
    assert read_ome_zarr(tmp_path / "s.ome.zarr").levels[2].sum().compute() == 16**3


def test_failed_write_leaves_nothing_and_keeps_old(tmp_path, labels):
    target = tmp_path / "out.ome.zarr"
    write_ome_zarr(labels, target, kind="labels", pyramid_levels=1)

    def boom(block, block_info=None):
        info = (block_info or {}).get(None)
        if info is not None and info["chunk-location"] == (1, 1, 1):
            raise OSError("disk full")
        return block

    failing = da.from_array(np.zeros_like(labels), chunks=(16, 32, 32)).map_blocks(boom)
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(failing, target, kind="labels")
    np.testing.assert_array_equal(read_ome_zarr(target).data.compute(), labels)
    assert temps(tmp_path) == []
    fresh = tmp_path / "fresh.ome.zarr"
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(failing, fresh, kind="labels")
    assert not fresh.exists()
    assert temps(tmp_path) == []
    with pytest.raises(FileExistsError):
        write_ome_zarr(labels, target, kind="labels", overwrite=False)


def test_killed_write_leaves_no_output_folder(tmp_path):
    target = tmp_path / "killed.ome.zarr"
    script = textwrap.dedent(
        f"""
        import time, numpy as np, dask.array as da
        from napari_seglab.batch.omezarr import write_ome_zarr

        def slow(block):
            time.sleep(0.2)
            return block

        data = da.ones((64, 64, 64), dtype=np.uint8, chunks=16).map_blocks(slow)
        write_ome_zarr(data, {str(target)!r}, kind="labels", chunks=(16, 16, 16))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = [tmp_path / n for n in temps(tmp_path)]
            if started and any((started[0] / "s0").rglob("c*")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer never started writing chunks")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not target.exists()
    assert len(temps(tmp_path)) == 1  # the killed writer's temporary folder
    write_ome_zarr(np.ones((8, 8), np.uint8), tmp_path / "next.ome.zarr", kind="labels")
    assert temps(tmp_path) == []  # removed as stale by the next write beside it


def test_atomic_dir_replaces_and_refuses(tmp_path):
    target = tmp_path / "store"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == ["b.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "file"):
        pass
    with pytest.raises(FileNotFoundError), atomic_dir(tmp_path / "missing" / "x"):
        pass


def test_refusals_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="integer label ids"):
        write_ome_zarr(np.zeros((4, 4), np.float32), tmp_path / "f.ome.zarr", kind="labels")
    with pytest.raises(ValueError, match="axis names"):
        write_ome_zarr(np.zeros((4, 4)), tmp_path / "a.ome.zarr", axes=("z", "y", "x"))
    with pytest.raises(ValueError, match="spacing"):
        write_ome_zarr(np.zeros((4, 4)), tmp_path / "s.ome.zarr", spacing=(1, 2, 3))
    with pytest.raises(ValueError, match="zarr group"):
        read_ome_zarr(tmp_path)
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ValueError, match="multiscales"):
        read_ome_zarr(tmp_path / "plain.zarr")
    assert not is_ome_zarr(tmp_path)
    write_ome_zarr(np.zeros((4, 4), np.uint8), tmp_path / "m.ome.zarr", kind="labels")
    meta = json.loads((tmp_path / "m.ome.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    assert "image-label" in meta
    assert meta["multiscales"][0]["axes"][0]["name"] == "y"
