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
