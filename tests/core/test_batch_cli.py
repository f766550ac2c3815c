"""``seglab batch``: the command in a subprocess on a real two-worker LocalCluster; its parser."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_seglab import data
from napari_seglab._commands.batch import PIPELINE_MODULES, pipeline_modules
from napari_seglab.cli import build_parser, main
from napari_seglab.io import write_nifti
from napari_seglab.unet import SegmentationModel, predict_and_split, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, one_torch_thread):
    sample = data.nuclei_2d(shape=(64, 64), n_objects=6)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs={"channels": [4, 8, 16]},
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
    )
    model.slicewise = True
    return model.save(tmp_path_factory.mktemp("batch_cli_model") / "model.pt")


def test_seglab_batch_predict_in_a_subprocess_exit_code_1_with_one_failed_item(
    model_file, tmp_path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image_2d = data.nuclei_2d(shape=(48, 64), seed=1).image
    tifffile.imwrite(inputs / "flat.tif", image_2d)
    np.save(inputs / "stack.npy", data.nuclei_3d(shape=(8, 40, 40), n_objects=3, seed=2).image)
    volume = data.nuclei_3d(shape=(8, 40, 40), n_objects=3, seed=3).image.astype(np.float32)
    write_nifti(inputs / "ct.nii.gz", volume, spacing=(2.0, 0.5, 0.5), is_label=False)
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "napari_seglab.cli", "batch", "predict", str(model_file),
         str(inputs / "*.tif"), str(inputs / "stack.npy"), str(inputs / "*.nii.gz"),
         "-o", str(out), "--workers", "2", "--instances", "connected", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "dashboard:" in done.stdout
    assert "batch predict: 3 done, 1 failed, 0 skipped (done before) of 4 items" in done.stdout
    assert f"report: {out / 'report.csv'}" in done.stdout
    assert "failed: broken:" in done.stderr
    assert "4/4" in done.stderr  # the progress bar reached the end
    with open(out / "report.csv", newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert [rows[n]["status"] for n in ("flat", "stack", "ct", "broken")] == [
        "done", "done", "done", "failed"
    ]  # fmt: skip
    assert "broken.nii.gz" in rows["broken"]["error"]
    assert "gzip" in rows["broken"]["error"]
    assert sum(1 for row in rows.values() if row["error"]) == 1
    for name in ("flat_labels.tif", "flat_instances.tif", "stack_labels.npy", "ct_labels.nii.gz"):
        assert (out / name).is_file()
    expected = predict_and_split(SegmentationModel.load(model_file), image_2d, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(out / "flat_labels.tif"), expected.labels)


def test_batch_help_lists_the_pipelines_found(capsys):
    found = pipeline_modules()
    assert {"predict", "evaluate"} <= set(found) <= set(PIPELINE_MODULES)
    for module in found.values():
        assert isinstance(module.HELP, str)
        assert callable(module.add_arguments)
        assert callable(module.make_pipeline)
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    out = capsys.readouterr().out
    assert "predict" in out
    assert "evaluate" in out
    args = build_parser().parse_args(
        ["batch", "predict", "m.pt", "a.tif", "b/", "-o", "out", "--workers", "3", "--crf"]
    )
    assert args.inputs == ["a.tif", "b/"]
    assert args.workers == 3
    assert args.crf
    assert args.scheduler is None
    args = build_parser().parse_args(
        ["batch", "evaluate", "p/", "--truth", "t1/", "t2.tif", "-o", "out", "--instances"]
    )
    assert args.truth == ["t1/", "t2.tif"]


def test_bad_inputs_fail_before_any_cluster_starts(model_file, tmp_path, capsys):
    code = main(["batch", "predict", str(model_file), str(tmp_path / "none.tif"), "-o", "o"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.tif").write_bytes(b"")
    code = main(["batch", "predict", str(tmp_path / "nomodel.pt"), str(tmp_path / "x.tif"),
                 "-o", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "y.tif").write_bytes(b"")
    code = main(["batch", "evaluate", str(tmp_path / "x.tif"), "--truth", str(tmp_path / "y.tif"),
                 "-o", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "no prediction matches a ground-truth name" in capsys.readouterr().err
