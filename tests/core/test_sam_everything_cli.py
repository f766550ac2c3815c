"""``seglab sam-everything`` end to end with a tiny checkpoint, against the API."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
tifffile = pytest.importorskip("tifffile")

from napari_seglab import cli  # noqa: E402
from napari_seglab.sam import segment_everything  # noqa: E402

SETTINGS = ["--points-per-side", "4", "--pred-iou-thresh", "0"]
SETTINGS += ["--stability-score-thresh", "0", "--box-nms-thresh", "1.0"]
API = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


@pytest.fixture
def files(tmp_path, make_tiny_sam):
    model = make_tiny_sam(seed=0)
    checkpoint = tmp_path / "tiny.pth"
    torch.save(model.sam.state_dict(), checkpoint)
    image = np.random.default_rng(0).integers(0, 3000, size=(48, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", image)
    return model, checkpoint, image


def test_writes_the_api_labels_and_records(files, tmp_path, capsys):
    model, checkpoint, image = files
    out, table = tmp_path / "labels.tif", tmp_path / "objects.csv"
    argv = ["sam-everything", str(tmp_path / "image.tif"), "-o", str(out), "--quiet"]
    argv += ["--model", "tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]
    argv += [*SETTINGS, "--objects", str(table)]
    assert cli.main(argv) == 0
    expected = segment_everything(model, image, **API)
    assert len(expected.objects) >= 2
    assert f"{len(expected.objects)} objects" in capsys.readouterr().out
    np.testing.assert_array_equal(tifffile.imread(out), expected.labels)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in rows] == [r["id"] for r in expected.objects]
    assert [int(r["area"]) for r in rows] == [r["area"] for r in expected.objects]

    as_json = tmp_path / "objects.json"
    argv[argv.index(str(table))] = str(as_json)
    assert cli.main([*argv, "--overwrite"]) == 0
    records = json.loads(as_json.read_text())
    assert records == json.loads(json.dumps(expected.records()))


def test_errors_are_one_line(files, tmp_path, capsys):
    _, checkpoint, _ = files
    image = str(tmp_path / "image.tif")
    base = ["sam-everything", image, "--model", "tiny", "--checkpoint", str(checkpoint)]
    assert cli.main([*base, "-o", str(tmp_path / "l.tif"), "--points-per-side", "0"]) == 2
    assert "points_per_side" in capsys.readouterr().err
    assert cli.main([*base, "-o", str(tmp_path / "l.tif"), "--objects", "o.txt"]) == 2
    assert ".csv" in capsys.readouterr().err
    assert cli.main([*base, "-o", image]) == 2
    assert "refusing" in capsys.readouterr().err
