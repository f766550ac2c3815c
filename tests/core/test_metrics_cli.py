"""``seglab evaluate`` on files: the same numbers as the Python API."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_seglab import data, metrics
from napari_seglab.cli import main


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture
def stack(tmp_path):
    sample = data.nuclei_3d()
    gt = sample.labels
    pred = np.roll(gt, 1, axis=2)
    np.save(tmp_path / "pred.npy", pred)
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    return pred, gt, sample.spacing


def test_instance_mode_writes_both_csv_files(tmp_path, stack, capsys):
    pred, gt, _ = stack
    code = main(
        [
            "evaluate",
            str(tmp_path / "pred.npy"),
            str(tmp_path / "gt.tif"),
            "--mode",
            "instance",
            "--iou-threshold",
            "0.7",
            "--csv",
            str(tmp_path / "summary.csv"),
            "--objects-csv",
            str(tmp_path / "objects.csv"),
        ]
    )
    assert code == 0
    expected = metrics.instances(pred, gt, iou_threshold=0.7)
    out = capsys.readouterr().out
    assert f"TP {expected['tp']}, FP {expected['fp']}, FN {expected['fn']}" in out
    header, *rows = _rows(tmp_path / "summary.csv")
    row = next(r for r in rows if float(r[0]) == 0.7)
    assert float(row[header.index("f1")]) == expected["f1"]
    assert float(row[header.index("pq")]) == expected["pq"]
    assert len(_rows(tmp_path / "objects.csv")) == 1 + len(expected["objects"]["gt_id"])


def test_semantic_mode_with_spacing(tmp_path, stack):
    pred, gt, spacing = stack
    out = tmp_path / "semantic.csv"
    args = ["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "gt.tif"), "--csv", str(out)]
    assert main([*args, "--spacing", *map(str, spacing), "--classes", "3", "5"]) == 0
    expected = metrics.semantic(pred, gt, classes=[3, 5], spacing=spacing)
    header, *rows = _rows(out)
    assert [int(r[0]) for r in rows] == [3, 5]
    for row in rows:
        for key in ("dice", "hd95", "surface_dice", "volume_gt"):
            assert float(row[header.index(key)]) == expected[int(row[0])][key]


def test_nifti_ground_truth_gives_spacing(tmp_path):
    from napari_seglab.io import read_nifti, write_nifti

    gt = np.zeros((6, 20, 20), dtype=np.uint8)
    gt[1:5, 4:15, 5:12] = 1
    pred = np.roll(gt, 2, axis=1)
    write_nifti(tmp_path / "gt.nii.gz", gt, spacing=(3.0, 0.5, 0.7))
    write_nifti(tmp_path / "pred.nii.gz", pred, spacing=(3.0, 0.5, 0.7))
    volume = read_nifti(tmp_path / "gt.nii.gz", layer_type="labels")
    read_pred = read_nifti(tmp_path / "pred.nii.gz", layer_type="labels").data
    out = tmp_path / "s.csv"
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"),
                 "--csv", str(out)]) == 0  # fmt: skip
    expected = metrics.semantic(read_pred, volume.data, spacing=volume.spacing)[1]
    header, row = _rows(out)
    assert float(row[header.index("hd95")]) == pytest.approx(expected["hd95"], rel=1e-12)
    assert float(row[header.index("volume_gt")]) == pytest.approx(gt.sum() * 3.0 * 0.5 * 0.7)


def test_errors_are_one_line_messages(tmp_path, stack, capsys):
    assert main(["evaluate", str(tmp_path / "nope.npy"), str(tmp_path / "gt.tif")]) == 2
    assert "label file not found" in capsys.readouterr().err
    np.save(tmp_path / "small.npy", np.zeros((3, 3), np.uint8))
    assert main(["evaluate", str(tmp_path / "small.npy"), str(tmp_path / "gt.tif")]) == 2
    assert "same shape" in capsys.readouterr().err
    (tmp_path / "x.txt").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "x.txt"), str(tmp_path / "gt.tif")]) == 2
    err = capsys.readouterr().err
    assert "unsupported label file" in err
    assert ".nii.gz" in err  # the formats it would have read
    (tmp_path / "empty.png").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "empty.png"), str(tmp_path / "gt.tif")]) == 2
    err = capsys.readouterr().err
    assert "could not read" in err
    assert "empty.png" in err


def test_spacing_comes_from_any_ground_truth_file_that_stores_one(tmp_path, stack, capsys):
    pred, gt, spacing = stack
    tifffile.imwrite(tmp_path / "gt_spaced.tif", gt, metadata={"spacing": list(spacing)})
    out = tmp_path / "s.csv"
    args = ["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "gt_spaced.tif")]
    assert main([*args, "--classes", "3", "--csv", str(out)]) == 0
    expected = metrics.semantic(pred, gt, classes=[3], spacing=spacing)[3]
    header, row = _rows(out)
    assert float(row[header.index("volume_gt")]) == pytest.approx(expected["volume_gt"])
    assert float(row[header.index("hd95")]) == pytest.approx(expected["hd95"])
    assert "evaluate: 100% done" in capsys.readouterr().err  # progress of the job


def test_foreground_and_map_options_and_instance_warning(tmp_path, capsys):
    sample = data.nuclei_2d(shape=(96, 96), n_objects=14, seed=6)
    pred = np.where(sample.labels > 0, 2 - sample.labels % 2, 0).astype(np.uint8)
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "instances.npy", sample.labels)
    np.save(tmp_path / "mask.npy", sample.semantic)
    base = ["evaluate", str(tmp_path / "pred.npy"), "--quiet", "--no-surface"]

    assert main([*base, str(tmp_path / "instances.npy")]) == 0
    captured = capsys.readouterr()
    assert "looks like instances" in captured.err

    assert main([*base, str(tmp_path / "instances.npy"), "--foreground"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    rows = [line.split() for line in captured.out.splitlines()]
    assert rows[1][0] == "1"
    assert len(rows) == 2
    assert rows[1][1] == "1"  # Dice 1: the same foreground

    csv_path = tmp_path / "mapped.csv"
    code = main([*base, str(tmp_path / "mask.npy"), "--map", "1:1,2:1", "--csv", str(csv_path)])
    assert code == 0
    written = _rows(csv_path)
    assert [row[0] for row in written[1:]] == ["1"]
    assert float(written[1][1]) == 1.0

    assert main([*base, str(tmp_path / "mask.npy"), "--map", "1=1"]) == 2
    assert "PRED:GT" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "mask.npy"), "--foreground", "--mode", "instance"]) == 2
    assert "need --mode semantic" in capsys.readouterr().err
