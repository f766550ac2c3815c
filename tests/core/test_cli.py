from __future__ import annotations

import subprocess
import sys

import numpy as np
import tifffile

from napari_seglab import cli, data


def test_sample_writes_image_and_ground_truth(tmp_path, capsys):
    assert cli.main(["sample", "2d", "-o", str(tmp_path), "--seed", "2"]) == 0
    expected = data.nuclei_2d(seed=2)
    assert np.array_equal(tifffile.imread(tmp_path / "nuclei_2d_image.tif"), expected.image)
    assert np.array_equal(tifffile.imread(tmp_path / "nuclei_2d_labels.tif"), expected.labels)
    assert "spacing (1.0, 1.0)" in capsys.readouterr().out


def test_info_reports_device(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device" in out
    assert "cache folder" in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "usage: seglab" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "napari_seglab.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("napari-seglab ")


def test_a_cancelled_job_exits_130_and_other_errors_2(monkeypatch, capsys):
    from napari_seglab._commands import info
    from napari_seglab.jobs import JobCancelled

    def cancelled(args):
        raise JobCancelled("CRF refinement was cancelled.")

    monkeypatch.setattr(info, "run", cancelled)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err == "seglab info: cancelled\n"

    def failing(args):
        raise FileNotFoundError("image file not found: 'x.tif' does not exist")

    monkeypatch.setattr(info, "run", failing)
    assert cli.main(["info"]) == 2
    assert "seglab info: error: image file not found" in capsys.readouterr().err
