"""The ``seglab train/predict/suggest`` commands, run in-process on small TIFF files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_seglab import data
from napari_seglab.cli import main
from napari_seglab.unet import SegmentationModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet_cli")
    sample = data.nuclei_3d(shape=(6, 32, 32), n_objects=4)
    tifffile.imwrite(folder / "image.tif", sample.image)
    tifffile.imwrite(folder / "labels.tif", sample.labels)
    np.save(folder / "image.npy", sample.image)
    return folder


def test_train_predict_suggest_round_trip(files, capsys):
    model_path = files / "model.pt"
    code = main(
        [
            "train",
            str(files / "image.tif"),
            str(files / "labels.tif"),
            "-o",
            str(model_path),
            "--binary",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "1",
            "--patch-size",
            "8",
            "32",
            "32",
            "--device",
            "cpu",
            "--spacing",
            "2",
            "0.5",
            "0.5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "epoch 2:" in out
    model = SegmentationModel.load(model_path)
    assert model.classes == (0, 1)
    assert model.spacing == (2.0, 0.5, 0.5)

    labels_path = files / "pred.tif"
    prob_path = files / "prob.npy"
    assert (
        main(
            [
                "predict",
                str(model_path),
                str(files / "image.npy"),
                "-o",
                str(labels_path),
                "--probabilities",
                str(prob_path),
                "--instances",
                "connected",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    labels = tifffile.imread(labels_path)
    probs = np.load(prob_path)
    assert labels.shape == (6, 32, 32)
    assert probs.shape == (2, 6, 32, 32)
    assert labels.dtype == np.int32

    assert (
        main(["suggest", str(model_path), str(files / "image.tif"), "-k", "3", "--device", "cpu"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert [line.split()[0] for line in lines] == ["1.", "2.", "3."]
    assert all("plane" in line for line in lines)


def test_errors_are_one_line_messages(files, capsys):
    missing_model = [str(files / "missing.pt"), str(files / "image.tif")]
    assert main(["predict", *missing_model, "-o", str(files / "x.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err
    missing_labels = [str(files / "image.tif"), str(files / "nope.tif")]
    assert main(["train", *missing_labels, "-o", str(files / "m.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    constant = np.zeros((6, 32, 32), np.uint8)
    tifffile.imwrite(files / "empty.tif", constant)
    empty = [str(files / "image.tif"), str(files / "empty.tif")]
    assert main(["train", *empty, "-o", str(files / "m.pt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seglab train: error:")
    assert "single class" in err
    assert len(err.strip().splitlines()) == 1


def test_instance_labels_error_names_the_binary_flag(files, capsys):
    many = np.arange(6 * 32 * 32, dtype=np.uint16).reshape(6, 32, 32) % 40  # 40 "objects"
    tifffile.imwrite(files / "objects.tif", many)
    args = [str(files / "image.tif"), str(files / "objects.tif"), "-o", str(files / "m.pt")]
    assert main(["train", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "distinct values" in err
    assert "--binary" in err


def test_predict_splits_with_the_given_spacing_like_the_core(files):
    from napari_seglab.unet import predict_and_split, train

    sample = data.nuclei_3d(shape=(6, 32, 32), n_objects=4)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs={"channels": [4, 8, 16]},
        patch_size=(8, 32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
    )
    model.save(files / "split.pt")
    out = files / "split.npy"
    common = [str(files / "split.pt"), str(files / "image.npy"), "--instances", "watershed"]
    common += ["--device", "cpu"]
    assert main(["predict", *common, "-o", str(out), "--spacing", "4", "1", "1"]) == 0
    image = np.load(files / "image.npy")
    expected = predict_and_split(
        model, image, instances="watershed", spacing=(4.0, 1.0, 1.0), device="cpu"
    )
    assert expected.spacing == (4.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.load(out), expected.instances)


def test_train_takes_the_spacing_of_the_nifti_header(files, capsys):
    from napari_seglab.io import write_nifti

    sample = data.nuclei_3d(shape=(6, 32, 32), n_objects=4)
    write_nifti(files / "aniso.nii.gz", sample.image, spacing=(2.0, 0.7, 0.5), is_label=False)
    write_nifti(files / "aniso_labels.nii.gz", sample.semantic, spacing=(2.0, 0.7, 0.6))
    model_path = files / "aniso.pt"
    args = [str(files / "aniso.nii.gz"), str(files / "aniso_labels.nii.gz")]
    args += ["-o", str(model_path), "--epochs", "1", "--steps-per-epoch", "1"]
    args += ["--batch-size", "1", "--patch-size", "8", "32", "32", "--device", "cpu"]
    assert main(["train", *args]) == 0
    captured = capsys.readouterr()
    assert "spacing: 2 0.7 0.5 (header of aniso.nii.gz)" in captured.out
    # The labels file says otherwise: the command says which one it used.
    assert "aniso_labels.nii.gz stores spacing 2 0.7 0.6; using 2 0.7 0.5" in captured.err
    model = SegmentationModel.load(model_path)
    assert model.spacing == pytest.approx((2.0, 0.7, 0.5))


def test_predict_takes_the_spacing_of_the_nifti_header(files, capsys):
    from napari_seglab.io import read_array, write_nifti
    from napari_seglab.unet import predict_and_split, train

    sample = data.nuclei_3d(shape=(6, 32, 32), n_objects=4)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs={"channels": [4, 8, 16]},
        patch_size=(8, 32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
    )
    assert model.spacing is None  # so a spacing in the output can only come from the file
    model.save(files / "unit.pt")
    write_nifti(files / "stack.nii.gz", sample.image, spacing=(4.0, 1.0, 0.5), is_label=False)
    out = files / "stack_pred.nii.gz"
    common = [str(files / "unit.pt"), str(files / "stack.nii.gz"), "--instances", "watershed"]
    common += ["--device", "cpu", "-o", str(out), "--probabilities", str(files / "p.nii.gz")]
    assert main(["predict", *common]) == 0
    assert "spacing: 4 1 0.5 (header of stack.nii.gz)" in capsys.readouterr().out
    written = read_array(out)
    assert written.spacing == pytest.approx((4.0, 1.0, 0.5))
    assert read_array(files / "p.nii.gz").spacing[-3:] == pytest.approx((4.0, 1.0, 0.5))
    expected = predict_and_split(
        model, sample.image, instances="watershed", spacing=(4.0, 1.0, 0.5), device="cpu"
    )
    np.testing.assert_array_equal(np.asarray(written.data), expected.instances)

    # --spacing wins over the header, and the output says so (same outputs: --overwrite).
    assert main(["predict", *common, "--spacing", "1", "1", "1"]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err
    assert main(["predict", *common, "--spacing", "1", "1", "1", "--overwrite"]) == 0
    assert "spacing: 1 1 1 (--spacing)" in capsys.readouterr().out
    assert read_array(out).spacing == pytest.approx((1.0, 1.0, 1.0))

    # No spacing anywhere: unit voxels, said so.
    np.save(files / "plain.npy", sample.image)
    plain = [str(files / "unit.pt"), str(files / "plain.npy"), "-o", str(files / "plain.tif")]
    assert main(["predict", *plain, "--device", "cpu"]) == 0
    assert "spacing: unit voxels (not stored in plain.npy)" in capsys.readouterr().out
