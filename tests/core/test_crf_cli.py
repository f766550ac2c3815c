"""``seglab crf`` on files: probabilities and labels in, refined result out."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from napari_seglab import crf, data, metrics
from napari_seglab.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crf_cli")
    sample = data.nuclei_2d(shape=(128, 128), n_objects=12, seed=4)
    tifffile.imwrite(folder / "image.tif", sample.image)
    probs = data.degrade_probabilities(sample.labels)
    np.save(folder / "probs.npy", probs)
    np.save(folder / "foreground.npy", probs[1])
    tifffile.imwrite(folder / "grown.tif", data.blobby_labels(sample.labels))
    (folder / "notes.txt").write_text("not an image")
    return folder, sample, probs


def test_probabilities_to_class_indices(files, capsys):
    folder, sample, probs = files
    out = folder / "classes.tif"
    assert main(["crf", str(folder / "image.tif"), str(folder / "probs.npy"), "-o", str(out)]) == 0
    result = tifffile.imread(out)
    assert np.array_equal(result, crf.refine(sample.image, probs))
    assert "wrote" in capsys.readouterr().out


def test_single_foreground_map_and_options(files):
    folder, sample, probs = files
    out = folder / "classes.npy"
    argv = ["crf", str(folder / "image.tif"), str(folder / "foreground.npy"), "-o", str(out)]
    argv += ["--spacing", "0.5", "0.5", "--iterations", "3", "--bilateral-weight", "5", "--quiet"]
    assert main(argv) == 0
    expected = crf.refine(
        sample.image, probs, spacing=(0.5, 0.5), iterations=3, bilateral_weight=5.0
    )
    assert np.array_equal(np.load(out), expected)


def test_the_no_harm_checks_can_be_set_from_the_command_line(files):
    folder, sample, probs = files
    out = folder / "plain.npy"
    argv = ["crf", str(folder / "image.tif"), str(folder / "probs.npy"), "-o", str(out)]
    argv += ["--no-verify", "--no-keep-objects", "--keep-confident", "0.95", "--quiet"]
    assert main(argv) == 0
    expected = crf.refine(
        sample.image, probs, verify=False, keep_objects=False, keep_confident=0.95
    )
    assert np.array_equal(np.load(out), expected)
    default = crf.refine(sample.image, probs)
    plain = crf.refine(sample.image, probs, verify=False, keep_objects=False)
    assert not np.array_equal(default, plain)  # the flags change something here


def test_labels_are_refined_per_object(files):
    folder, sample, _ = files
    out = folder / "refined.tif"
    argv = [
        "crf",
        str(folder / "image.tif"),
        str(folder / "grown.tif"),
        "--labels",
        "-o",
        str(out),
    ]
    assert main([*argv, "--confidence", "0.8"]) == 0
    grown = tifffile.imread(folder / "grown.tif")
    result = tifffile.imread(out)
    assert result.dtype == grown.dtype
    assert np.array_equal(result, crf.refine_labels(sample.image, grown, confidence=0.8))
    assert metrics.foreground_dice(result, sample.labels) > metrics.foreground_dice(
        grown, sample.labels
    )


@pytest.mark.parametrize(
    ("second", "extra", "message"),
    [
        ("grown.tif", [], "probabilities in \\[0, 1\\]"),
        ("missing.npy", [], "input file not found: '.*missing.npy' does not exist"),
        ("probs.npy", ["--spacing", "1", "1", "1"], "spacing"),
        ("notes.txt", [], r"unsupported input file '.*notes\.txt': expected .*\.tif"),
    ],
)
def test_errors_are_one_line_and_exit_code_2(files, capsys, second, extra, message):
    folder, _, _ = files
    argv = ["crf", str(folder / "image.tif"), str(folder / second), "-o", str(folder / "x.npy")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab crf: error:")
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err)


def test_output_suffix_is_checked_before_any_work(files, capsys):
    folder, _, _ = files
    argv = ["crf", str(folder / "image.tif"), str(folder / "probs.npy"), "-o", "out.png"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "unsupported output file 'out.png'" in captured.err
    assert "%" not in captured.err  # no CRF progress: it never started


def test_nifti_inputs_give_their_spacing_and_nifti_output(tmp_path):
    from napari_seglab.io import read_array, write_nifti

    sample = data.nuclei_3d(shape=(12, 64, 64), n_objects=5, seed=3)
    grown = data.blobby_labels(sample.labels, grow=1.5, spacing=sample.spacing)
    write_nifti(tmp_path / "image.nii.gz", sample.image, spacing=sample.spacing, is_label=False)
    write_nifti(tmp_path / "grown.nii.gz", grown, spacing=sample.spacing)
    out = tmp_path / "refined.nii.gz"
    argv = ["crf", str(tmp_path / "image.nii.gz"), str(tmp_path / "grown.nii.gz"), "--labels"]
    assert main([*argv, "-o", str(out), "--quiet"]) == 0
    image = read_array(tmp_path / "image.nii.gz", layer_type="image")
    given = read_array(tmp_path / "grown.nii.gz")
    assert image.spacing == pytest.approx(sample.spacing)
    expected = crf.refine_labels(image.data, given.data, spacing=image.spacing)
    written = read_array(out)
    np.testing.assert_array_equal(written.data, expected)
    assert written.spacing == pytest.approx(sample.spacing)
