"""``seglab`` on bad inputs: one clear line, exit code 2 or 1, nothing written (issue 12).

The "unclear crashes" of issue 12, each through the installed ``seglab`` command
in a subprocess, plus ``--damaged {error,warn}`` for DICOM series with
unreadable files (and its napari-reader counterpart, ``SEGLAB_DICOM_DAMAGED``).
Some cases are covered elsewhere: ``train`` into a missing folder
(``test_cli_outputs.py::test_train_into_a_missing_folder_fails_before_training``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from test_cli_outputs import _file_size_limit, one_line_error, seglab, snapshot, temporaries
from test_io_dicom import write_series

from napari_seglab import cli
from napari_seglab._io_plugin import DAMAGED_ENV, get_dicom_reader, read_dicom_layers
from napari_seglab.io import DamagedDicomError

# -- helpers ---------------------------------------------------------------------------------


def _by_position(folder):
    """The series' files sorted along the slice normal (axial: z)."""
    return sorted(
        folder.iterdir(),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )


def _edit(path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


@pytest.fixture
def damaged_series(tmp_path):
    """A 3-slice DICOM series whose top slice file is empty; returns (folder, victim)."""
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3, shape=(6, 5))
    victim = _by_position(folder)[-1]  # largest z: the top slice
    victim.write_bytes(b"")
    return folder, victim


@pytest.fixture
def files(tmp_path):
    """A tiny 2D image and its labels."""
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:60, 30:60] = 1
    image = (labels * 80 + rng.integers(0, 40, labels.shape)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "nuc.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    return tmp_path


def no_traceback(done) -> None:
    assert "Traceback" not in done.stderr, done.stderr


# -- --damaged {error,warn} ------------------------------------------------------------------

IMAGE_COMMANDS = {
    "read": ["read", "x.nii"],
    "convert": ["convert", "x.nii", "y.nii"],
    "crf": ["crf", "x.tif", "p.npy", "-o", "o.npy"],
    "evaluate": ["evaluate", "p.npy", "g.npy"],
    "train": ["train", "x.tif", "l.tif", "-o", "m.pt"],
    "predict": ["predict", "m.pt", "x.tif", "-o", "o.tif"],
    "suggest": ["suggest", "m.pt", "x.tif"],
    "sam": ["sam", "x.tif", "--points", "1,1", "-o", "o.tif"],
    "finetune": ["finetune", "--images", "x.tif", "--labels", "l.tif", "-o", "d.pth"],
}


@pytest.mark.parametrize("argv", IMAGE_COMMANDS.values(), ids=IMAGE_COMMANDS.keys())
def test_every_subcommand_that_reads_images_takes_damaged(argv):
    parser = cli.build_parser()
    assert parser.parse_args(argv).damaged == "error"
    assert parser.parse_args([*argv, "--damaged", "warn"]).damaged == "warn"


def test_seglab_read_refuses_a_damaged_series_naming_the_file_and_the_option(damaged_series):
    folder, victim = damaged_series
    done = seglab("read", folder)
    error = one_line_error(done)
    assert error.startswith("seglab read: error: ")
    assert f"'{victim.name}': empty file (0 bytes)" in error
    assert "add --damaged warn" in error
    assert "damaged='warn'" not in error  # the Python spelling is not the command's
    assert done.stdout == ""


def test_seglab_read_with_damaged_warn_reads_the_rest_and_names_the_file(damaged_series):
    folder, victim = damaged_series
    done = seglab("read", folder, "--damaged", "warn")
    assert done.returncode == 0, done.stderr
    no_traceback(done)
    warning = [line for line in done.stderr.splitlines() if victim.name in line]
    assert len(warning) == 1, done.stderr
    assert warning[0].startswith("seglab read: warning: ")
    assert "without 1 unreadable file" in warning[0]
    assert "shape:       (2, 6, 5)" in done.stdout
    done = seglab("read", folder, "--damaged", "warn", "--json")
    assert json.loads(done.stdout)[0]["metadata"]["dicom"]["skipped_files"][0][0] == victim.name


def test_seglab_convert_writes_nothing_unless_told_to_skip_damaged_files(damaged_series, tmp_path):
    folder, victim = damaged_series
    target = tmp_path / "ct.nii.gz"
    error = one_line_error(seglab("convert", folder, target))
    assert victim.name in error
    assert not target.exists()
    done = seglab("convert", folder, target, "--damaged", "warn")
    assert done.returncode == 0, done.stderr
    assert victim.name in done.stderr
    assert nib.load(target).shape == (5, 6, 2)  # (columns, rows, slices): one slice short


def test_seglab_crf_passes_damaged_to_the_reader(damaged_series, tmp_path):
    folder, victim = damaged_series
    labels = np.zeros((2, 6, 5), np.uint8)
    labels[:, 2:4, 1:4] = 1
    np.save(tmp_path / "lab.npy", labels)
    argv = ["crf", folder, tmp_path / "lab.npy", "--labels", "--quiet", "-o", tmp_path / "r.npy"]
    assert victim.name in one_line_error(seglab(*argv))
    assert not (tmp_path / "r.npy").exists()
    done = seglab(*argv, "--damaged", "warn")
    assert done.returncode == 0, done.stderr
    assert victim.name in done.stderr
    assert np.load(tmp_path / "r.npy").shape == (2, 6, 5)


# -- the napari reader: SEGLAB_DICOM_DAMAGED -------------------------------------------------


def test_napari_reader_refuses_damaged_files_and_names_the_environment_variable(
    damaged_series, monkeypatch
):
    folder, victim = damaged_series
    monkeypatch.delenv(DAMAGED_ENV, raising=False)
    reader = get_dicom_reader(str(folder))
    assert reader is read_dicom_layers
    with pytest.raises(DamagedDicomError, match=rf"'{victim.name}'.*{DAMAGED_ENV}=warn") as info:
        reader(str(folder))
    assert info.value.files[0][0] == victim.name
    # a single file of the series: the same
    other = next(p for p in folder.iterdir() if p != victim)
    with pytest.raises(DamagedDicomError, match=DAMAGED_ENV):
        read_dicom_layers(str(other))


def test_napari_reader_with_the_variable_set_skips_them_with_a_warning(
    damaged_series, monkeypatch
):
    folder, victim = damaged_series
    monkeypatch.setenv(DAMAGED_ENV, "warn")
    with pytest.warns(UserWarning, match=rf"without 1 unreadable file.*'{victim.name}'"):
        [(data, kwargs, layer_type)] = read_dicom_layers(str(folder))
    assert layer_type == "image"
    assert data.shape == (2, 6, 5)
    assert kwargs["metadata"]["dicom"]["skipped_files"][0][0] == victim.name


def test_napari_reader_refuses_a_bad_value_of_the_variable(damaged_series, monkeypatch):
    folder, _ = damaged_series
    monkeypatch.setenv(DAMAGED_ENV, "ignore")
    with pytest.raises(ValueError, match=rf"{DAMAGED_ENV} must be 'error' or 'warn'"):
        read_dicom_layers(str(folder))


def test_damaged_dicom_error_survives_pickling(damaged_series):
    import pickle

    error = DamagedDicomError([("a.dcm", "empty file (0 bytes)")], "series 'x'", "do this")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.files == [("a.dcm", "empty file (0 bytes)")]


# -- warnings and memory in the command ------------------------------------------------------


def test_warnings_are_one_line_and_memory_errors_exit_1(monkeypatch, capsys):
    def warns(args):
        warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
        return 0

    def runs_out(args):
        raise MemoryError

    from napari_seglab._commands import info

    monkeypatch.setattr(info, "run", warns)
    assert cli.main(["info"]) == 0
    assert capsys.readouterr().err == "seglab info: warning: first line second line\n"
    monkeypatch.setattr(info, "run", runs_out)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err == "seglab info: error: out of memory\n"


# -- read-only output folder: every writer ---------------------------------------------------

WRITERS = {
    "convert": ["convert", "small.nii.gz", "locked/c.nii.gz"],
    "crf": ["crf", "nuc.tif", "lab.tif", "--labels", "-o", "locked/c.npy"],
    "predict": ["predict", "model.pt", "nuc.tif", "-o", "locked/p.tif"],
    "predict --probabilities": [
        *("predict", "model.pt", "nuc.tif", "-o", "p.tif", "--probabilities", "locked/p.npy"),
    ],
    "train": ["train", "nuc.tif", "lab.tif", "-o", "locked/m.pt", "--epochs", "50"],
    "evaluate --csv": ["evaluate", "lab.tif", "lab.tif", "--csv", "locked/s.csv"],
    "evaluate --objects-csv": [
        *("evaluate", "lab.tif", "lab.tif", "--mode", "instance", "--objects-csv", "locked/o.csv"),
    ],
    "sam": ["sam", "nuc.tif", "--points", "5,5", "-o", "locked/s.tif", "--offline"],
    "finetune": [
        *("finetune", "--images", "nuc.tif", "--labels", "lab.tif", "-o", "locked/d.pth"),
        "--offline",
    ],
    "sample": ["sample", "2d", "-o", "locked"],
}


@pytest.fixture
def unprivileged():
    """A command prefix that takes root's right to write anywhere away (else nothing)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


@pytest.mark.parametrize("argv", WRITERS.values(), ids=WRITERS.keys())
def test_a_read_only_output_folder_is_one_line_for_every_writer(files, argv, unprivileged):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.uint8), np.eye(4)), files / "small.nii.gz")
    (files / "model.pt").write_bytes(b"refused before it is read")
    (files / "locked").mkdir()
    os.chmod(files / "locked", 0o555)
    before = snapshot(files)
    done = seglab(*argv, cwd=files, prefix=unprivileged)
    error = one_line_error(done)
    assert error.startswith(f"seglab {argv[0]}: error: cannot write ")
    assert "not writable" in error
    assert "epoch" not in done.stdout
    assert snapshot(files) == before
    assert list((files / "locked").iterdir()) == []


# -- a folder where a file is expected -------------------------------------------------------

FOLDER_INPUTS = {
    "model": (["predict", "d.pt", "nuc.tif", "-o", "p.tif"], "'d.pt' is a folder"),
    "suggest model": (["suggest", "d.pt", "nuc.tif"], "'d.pt' is a folder"),
    "tif image": (["crf", "d.tif", "lab.tif", "--labels", "-o", "r.npy"], "'d.tif'"),
    "npy prediction": (["evaluate", "d.npy", "lab.tif"], "'d.npy'"),
    "png image": (["sam", "d.png", "--points", "5,5", "-o", "s.tif", "--offline"], "'d.png'"),
    "nifti image": (["read", "d.nii.gz"], "got a folder: 'd.nii.gz'"),
    "nifti labels": (["train", "nuc.tif", "d.nii.gz", "-o", "m.pt"], "got a folder"),
    "folder without DICOM": (["convert", "empty", "c.nii"], "'empty' is empty"),
    "sam checkpoint": (
        [
            *("sam", "nuc.tif", "--points", "5,5", "-o", "s.tif"),
            *("--checkpoint", "d.pth", "--offline"),
        ],
        "d.pth (it is a folder)",
    ),
    "finetune checkpoint": (
        [
            *("finetune", "--images", "nuc.tif", "--labels", "lab.tif", "-o", "x.pth"),
            *("--checkpoint", "d.pth", "--offline"),
        ],
        "d.pth (it is a folder)",
    ),
    "output": (["crf", "nuc.tif", "lab.tif", "--labels", "-o", "d.npy"], "got the folder"),
}


@pytest.mark.parametrize(("argv", "message"), FOLDER_INPUTS.values(), ids=FOLDER_INPUTS.keys())
def test_a_folder_given_for_a_file_is_one_line(files, argv, message):
    for name in ("d.pt", "d.tif", "d.npy", "d.png", "d.nii.gz", "d.pth", "empty"):
        (files / name).mkdir()
    before = snapshot(files)
    error = one_line_error(seglab(*argv, cwd=files))
    assert error.startswith(f"seglab {argv[0]}: error: ")
    assert message in error
    assert snapshot(files) == before
    assert all(not any((files / name).iterdir()) for name in ("d.npy", "empty"))


# -- a NIfTI header claiming 30000^3 voxels --------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("command", ["read", "convert", "crf"])
def test_a_nifti_header_claiming_30000_cubed_voxels_is_one_line(files, suffix, command):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((4, 4, 4))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4), header), files / "a.nii")
    raw = bytearray((files / "a.nii").read_bytes())
    raw[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], "<i2").tobytes()  # dim[0..7]
    name = f"huge{suffix}"
    if suffix == ".nii.gz":
        import gzip

        (files / name).write_bytes(gzip.compress(bytes(raw)))
    else:
        (files / name).write_bytes(bytes(raw))
    argv = {
        "read": ["read", name],
        "convert": ["convert", name, "out.nii.gz"],
        "crf": ["crf", name, "lab.tif", "--labels", "-o", "out.npy"],
    }[command]
    before = snapshot(files)
    error = one_line_error(seglab(*argv, cwd=files))
    assert f"'{name}'" in error
    assert "(30000, 30000, 30000)" in error
    assert "MemoryError" not in error
    assert snapshot(files) == before


# -- training: full disk, tiny and thin images -----------------------------------------------

TRAIN_FAST = ("--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--device", "cpu")


def test_a_full_disk_while_train_saves_is_one_line_and_keeps_the_old_model(files):
    pytest.importorskip("monai")
    old = files / "model.pt"
    old.write_bytes(b"the previous model, still needed")
    argv = ["train", "nuc.tif", "lab.tif", "-o", "model.pt", *TRAIN_FAST, "--overwrite"]
    done = seglab(*argv, cwd=files, preexec_fn=_file_size_limit(64 * 1024))  # model: ~800 KiB
    error = one_line_error(done, code=1)
    assert error == "seglab train: error: [Errno 27] File too large: 'model.pt'"
    assert "enforce fail" not in done.stderr
    assert old.read_bytes() == b"the previous model, still needed"
    assert temporaries(files) == []
    assert "wrote" not in done.stdout


def test_an_image_too_small_for_the_network_is_one_line_and_trains_nothing(files):
    pytest.importorskip("monai")
    tifffile.imwrite(files / "tiny.tif", np.arange(9, dtype=np.uint16).reshape(3, 3))
    tifffile.imwrite(files / "tiny_lab.tif", np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]], "u1"))
    before = snapshot(files)
    done = seglab("train", "tiny.tif", "tiny_lab.tif", "-o", "m.pt", *TRAIN_FAST, cwd=files)
    error = one_line_error(done)
    assert "shape (3, 3) are too small" in error
    assert "smallest accepted shape" in error
    assert snapshot(files) == before


def test_thin_and_tiny_images_train_and_predict_on_their_own_shape(files):
    """1 x 2000 trains (short axes are padded); the model predicts 1 x 2000 and 3 x 3 images."""
    pytest.importorskip("monai")
    rng = np.random.default_rng(1)
    thin_labels = np.zeros((1, 2000), np.uint8)
    thin_labels[0, 300:900] = 1
    thin = (thin_labels * 80 + rng.integers(0, 40, thin_labels.shape)).astype(np.uint16)
    tifffile.imwrite(files / "thin.tif", thin)
    tifffile.imwrite(files / "thin_lab.tif", thin_labels)
    tifffile.imwrite(files / "tiny.tif", np.arange(9, dtype=np.uint16).reshape(3, 3))
    done = seglab("train", "thin.tif", "thin_lab.tif", "-o", "thin.pt", *TRAIN_FAST, cwd=files)
    assert done.returncode == 0, done.stderr
    no_traceback(done)
    for image, shape in (("thin.tif", (1, 2000)), ("tiny.tif", (3, 3))):
        done = seglab(
            "predict", "thin.pt", image, "-o", f"p_{image}", "--device", "cpu", cwd=files
        )
        assert done.returncode == 0, done.stderr
        no_traceback(done)
        assert tifffile.imread(files / f"p_{image}").shape == shape


# -- DICOM with NaN geometry or pixel data not matching BitsAllocated ------------------------

DICOM_FAULTS = {
    "NaN position": ({"ImagePositionPatient": ["nan", "0", "0"]}, "ImagePositionPatient"),
    "NaN spacing": ({"PixelSpacing": ["nan", "0.9"]}, "PixelSpacing"),
    "BitsAllocated 8": ({"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}, "BitsAllocated 8"),
}


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(("values", "message"), DICOM_FAULTS.values(), ids=DICOM_FAULTS.keys())
@pytest.mark.parametrize("command", ["read", "convert"])
def test_dicom_with_nan_geometry_or_wrong_bits_is_one_line_naming_the_file(
    tmp_path, values, message, command
):
    folder = tmp_path / "ct"
    write_series(folder, n_slices=3)
    victim = _by_position(folder)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _edit(victim, **values)
    argv = ["read", folder] if command == "read" else ["convert", folder, tmp_path / "c.nii"]
    before = snapshot(tmp_path)
    done = seglab(*argv)
    error = one_line_error(done)
    assert victim.name in error
    assert message in error
    assert "SVD did not converge" not in error
    assert "broadcast" not in error
    assert snapshot(tmp_path) == before


# -- bad U-Net model files: one line, never "use weights_only=False" ---------------------------


class _NotATensor:
    pass


def _bad_models(folder, good) -> dict:
    import torch

    payload = torch.load(good, weights_only=True)
    meta = json.loads(payload["metadata_json"])
    paths = {}
    paths["garbage"] = folder / "garbage.pt"
    paths["garbage"].write_bytes(b"not a model at all")
    paths["cut short"] = folder / "cut.pt"
    paths["cut short"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths["python object"] = folder / "object.pt"
    torch.save({**payload, "extra": _NotATensor()}, paths["python object"])
    paths["wide channels"] = folder / "wide.pt"
    channels = [4096 * 2**k for k in range(len(meta["network_kwargs"]["channels"]))]
    wide = {**meta, "network_kwargs": {**meta["network_kwargs"], "channels": channels}}
    torch.save({**payload, "metadata_json": json.dumps(wide)}, paths["wide channels"])
    return paths


def test_bad_unet_model_files_are_one_line_each(files):
    pytest.importorskip("monai")
    done = seglab("train", "nuc.tif", "lab.tif", "-o", "good.pt", *TRAIN_FAST, cwd=files)
    assert done.returncode == 0, done.stderr
    bad = _bad_models(files, files / "good.pt")
    expected = {
        "garbage": "not a PyTorch file of plain tensors",
        "cut short": "cut short or damaged",
        "python object": "not a PyTorch file of plain tensors",
        "wide channels": "its metadata describes another network than its weights",
    }
    before = snapshot(files)
    for case, path in bad.items():
        argv = ["predict", path.name, "nuc.tif", "-o", "p.tif"]
        if case == "garbage":
            argv = ["suggest", path.name, "nuc.tif"]
        error = one_line_error(seglab(*argv, cwd=files))
        assert f"'{path.name}'" in error, case
        assert expected[case] in error, (case, error)
        assert "weights_only` set to `False`" not in error
        assert "will likely succeed" not in error
    assert snapshot(files) == before


def test_a_bad_sam_checkpoint_is_one_line_without_unsafe_advice(files):
    (files / "garbage.pth").write_bytes(b"not a checkpoint")
    argv = ["sam", "nuc.tif", "--points", "5,5", "-o", "s.tif", "--checkpoint", "garbage.pth"]
    error = one_line_error(seglab(*argv, "--offline", cwd=files))
    assert "garbage.pth" in error
    assert "not a PyTorch file of plain tensors" in error
    assert "will likely succeed" not in error
    assert not (files / "s.tif").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
