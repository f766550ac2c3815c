"""``seglab read`` and ``seglab convert`` on the formats that are not NIfTI or DICOM folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_seglab import cli, data
from napari_seglab.io import read_array


def test_read_summarises_a_tiff_with_its_spacing(tmp_path, capsys):
    sample = data.nuclei_3d(seed=0)
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, sample.labels, metadata={"spacing": list(sample.spacing)})
    assert cli.main(["read", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layer:       labels" in out
    assert f"shape:       {sample.labels.shape}" in out
    assert "spacing:     (2, 0.5, 0.5) (napari scale)" in out
    assert f"labels:      {sample.labels.max()}" in out
    np.save(tmp_path / "image.npy", sample.image)
    assert cli.main(["read", str(tmp_path / "image.npy"), "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["layer"] == "image"
    assert summary["spacing"].startswith("not stored")


def test_convert_a_tiff_to_nifti_keeps_data_and_spacing(tmp_path, capsys):
    sample = data.nuclei_3d(seed=1)
    source = tmp_path / "labels.tif"
    tifffile.imwrite(source, sample.labels, metadata={"spacing": list(sample.spacing)})
    target = tmp_path / "labels.nii.gz"
    assert cli.main(["convert", str(source), str(target)]) == 0
    assert "labels" in capsys.readouterr().out
    back = read_array(target)
    np.testing.assert_array_equal(back.data, sample.labels)
    assert back.spacing == pytest.approx(sample.spacing)
    assert back.is_label


def test_read_errors_name_the_path(tmp_path, capsys):
    assert cli.main(["read", str(tmp_path / "absent.tif")]) == 2
    err = capsys.readouterr().err
    assert "absent.tif" in err
    assert "does not exist" in err
    (tmp_path / "notes.txt").write_text("text")
    assert cli.main(["read", str(tmp_path / "notes.txt")]) == 2
    assert "unsupported input file" in capsys.readouterr().err
