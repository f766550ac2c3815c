"""``seglab`` outputs never destroy inputs, and every file is written atomically (issue 12).

Each test runs the installed ``seglab`` command in a subprocess, on tiny inputs,
as a user would; nothing here trains a model (``train`` must refuse before it).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_seglab.checkpoints import TEMP_PREFIX

SEGLAB = Path(sys.executable).with_name("seglab")


def seglab(*argv, cwd=None, preexec_fn=None, prefix=()) -> subprocess.CompletedProcess:
    """``seglab ARGV`` in a subprocess (the console script, else ``python -m``)."""
    command = [str(SEGLAB)] if SEGLAB.exists() else [sys.executable, "-m", "napari_seglab.cli"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*prefix, *command, *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        preexec_fn=preexec_fn,
        env=environment,
        timeout=300,
    )


def one_line_error(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single stderr line of a failed command (no traceback)."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture
def files(tmp_path):
    """A tiny image, labels, a prediction, probabilities and a fake model/checkpoint."""
    rng = np.random.default_rng(0)
    labels = np.zeros((128, 128), np.int64)
    labels[20:60, 20:60] = 1
    labels[70:110, 60:120] = 2
    image = (labels * 80 + rng.integers(0, 40, labels.shape)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "nuc.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels.astype(np.uint8))
    np.save(tmp_path / "pred.npy", labels)
    probs = np.stack([labels == 0, labels > 0]).astype(np.float32) * 0.8 + 0.1
    np.save(tmp_path / "probs.npy", probs)
    (tmp_path / "base.pth").write_bytes(b"not really weights")
    (tmp_path / "model.pt").write_bytes(b"not really a model")
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


REFUSED = {
    "evaluate --csv pred.npy": ["evaluate", "pred.npy", "lab.tif", "--csv", "pred.npy"],
    "evaluate --objects-csv lab.tif": [
        *("evaluate", "pred.npy", "lab.tif", "--mode", "instance", "--objects-csv", "lab.tif"),
    ],
    "predict -o nuc.tif": ["predict", "model.pt", "nuc.tif", "-o", "nuc.tif"],
    "predict --probabilities model.pt": [
        *("predict", "model.pt", "nuc.tif", "-o", "p.tif", "--probabilities", "model.pt"),
    ],
    "train -o lab.tif": ["train", "nuc.tif", "lab.tif", "-o", "lab.tif", "--epochs", "50"],
    "finetune -o base.pth": [
        *("finetune", "--images", "nuc.tif", "--labels", "lab.tif"),
        *("--model", "vit_b", "--checkpoint", "base.pth", "-o", "base.pth", "--offline"),
    ],
    "crf -o probs.npy": ["crf", "nuc.tif", "probs.npy", "-o", "probs.npy"],
    "crf -o sub/../nuc.tif": ["crf", "nuc.tif", "probs.npy", "-o", "sub/../nuc.tif"],
    "sam -o nuc.tif": ["sam", "nuc.tif", "--points", "5,5", "-o", "nuc.tif", "--offline"],
    "convert lab.nii lab.nii": ["convert", "lab.nii", "lab.nii"],
}


@pytest.mark.parametrize("argv", REFUSED.values(), ids=REFUSED.keys())
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(files, argv):
    (files / "sub").mkdir()
    (files / "lab.nii").write_bytes(b"stand-in: refused before it is read")
    before = snapshot(files)
    done = seglab(*argv, "--overwrite", cwd=files)
    error = one_line_error(done)
    assert "refusing to write" in error
    output = argv[argv.index("-o") + 1] if "-o" in argv else argv[-1]
    if argv[0] == "convert":
        output = "lab.nii"
    elif "--csv" in argv or "--objects-csv" in argv or "--probabilities" in argv:
        output = argv[-1]
    assert output in error  # names the output ...
    assert "it is the " in error  # ... and which input it is
    assert snapshot(files) == before  # nothing written, nothing changed
    assert "epoch" not in done.stdout  # train refused before training


def test_the_same_file_under_another_name_is_an_input(files):
    os.link(files / "pred.npy", files / "pred_link.csv")  # a hard link: one file, two names
    before = snapshot(files)
    done = seglab("evaluate", "pred.npy", "lab.tif", "--csv", "pred_link.csv", cwd=files)
    assert "it is the prediction 'pred.npy'" in one_line_error(done)
    assert snapshot(files) == before
    (files / "out.tif").symlink_to(files / "nuc.tif")
    done = seglab("crf", "nuc.tif", "probs.npy", "-o", "out.tif", "--overwrite", cwd=files)
    assert "it is the image 'nuc.tif'" in one_line_error(done)
    assert snapshot(files) == before | {"out.tif": before["nuc.tif"]}


def test_an_existing_output_needs_overwrite(files):
    (files / "refined.npy").write_bytes(b"an earlier result")
    argv = ["crf", "nuc.tif", "pred.npy", "--labels", "--quiet", "-o", "refined.npy"]
    error = one_line_error(seglab(*argv, cwd=files))
    assert error == ("seglab crf: error: -o 'refined.npy' exists; add --overwrite to replace it")
    assert (files / "refined.npy").read_bytes() == b"an earlier result"
    done = seglab(*argv, "--overwrite", cwd=files)
    assert done.returncode == 0, done.stderr
    assert np.load(files / "refined.npy").shape == (128, 128)
    # seglab sample refuses to replace the files it wrote, unless told to
    assert seglab("sample", "2d", "-o", "samples", cwd=files).returncode == 0
    error = one_line_error(seglab("sample", "2d", "-o", "samples", cwd=files))
    assert "nuclei_2d_image.tif" in error
    assert "--overwrite" in error
    assert seglab("sample", "2d", "-o", "samples", "--overwrite", cwd=files).returncode == 0


def test_train_into_a_missing_folder_fails_before_training(files):
    done = seglab(
        "train", "nuc.tif", "lab.tif", "-o", "missing/m.pt", "--epochs", "500", cwd=files
    )
    error = one_line_error(done)
    assert "output folder not found" in error
    assert "missing" in error
    assert done.stdout == ""  # not even the spacing: nothing was read or trained
    assert not (files / "missing").exists()


BAD_OUTPUTS = {
    "a folder": (["crf", "nuc.tif", "probs.npy", "-o", "folder.npy"], "got the folder"),
    "no such folder": (["predict", "model.pt", "nuc.tif", "-o", "x/p.tif"], "folder not found"),
    "twice": (
        ["predict", "model.pt", "nuc.tif", "-o", "p.tif", "--probabilities", "p.tif"],
        "name the same file",
    ),
    "model suffix": (["train", "nuc.tif", "lab.tif", "-o", "model.tif"], "expected one of .pt"),
    "csv suffix": (["evaluate", "pred.npy", "lab.tif", "--csv", "s.npy"], "expected one of .csv"),
    "decoder in a folder": (
        [
            *("finetune", "--images", "nuc.tif", "--labels", "lab.tif"),
            *("--checkpoint", "base.pth", "-o", "nowhere/d.pth", "--offline"),
        ],
        "folder not found",
    ),
}


@pytest.mark.parametrize(("argv", "message"), BAD_OUTPUTS.values(), ids=BAD_OUTPUTS.keys())
def test_bad_outputs_are_one_line_before_any_work(files, argv, message):
    (files / "folder.npy").mkdir()
    before = snapshot(files)
    error = one_line_error(seglab(*argv, cwd=files))
    assert error.startswith(f"seglab {argv[0]}: error: ")
    assert message in error
    assert snapshot(files) == before
    assert sorted(p.name for p in (files / "folder.npy").iterdir()) == []


def test_a_read_only_output_folder_is_one_line(files):
    (files / "locked").mkdir()
    os.chmod(files / "locked", 0o555)
    prefix = []
    if os.geteuid() == 0:  # root writes anywhere: drop the capability that lets it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    done = seglab("crf", "nuc.tif", "probs.npy", "-o", "locked/out.npy", cwd=files, prefix=prefix)
    error = one_line_error(done)
    assert "not writable" in error
    assert "locked/out.npy" in error
    assert list((files / "locked").iterdir()) == []


def test_an_upper_case_suffix_is_written_under_exactly_that_name(files):
    done = seglab("crf", "nuc.tif", "pred.npy", "--labels", "--quiet", "-o", "x.NPY", cwd=files)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote x.NPY ")
    assert not (files / "x.NPY.npy").exists()
    assert np.load(files / "x.NPY").shape == (128, 128)


def _file_size_limit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("name", ["out.npy", "out.tif", "out.nii"])
def test_a_full_disk_leaves_the_old_output_intact(files, name):
    """A write that fails part-way (file-size limit: EFBIG, as ENOSPC on a full disk)."""
    old = files / name
    old.write_bytes(b"the previous result, still needed")
    argv = ["crf", "nuc.tif", "pred.npy", "--labels", "--quiet", "-o", name, "--overwrite"]
    done = seglab(*argv, cwd=files, preexec_fn=_file_size_limit(32 * 1024))  # output: 128 KiB
    error = one_line_error(done, code=1)
    assert error.startswith("seglab crf: error:")
    assert old.read_bytes() == b"the previous result, still needed"
    assert temporaries(files) == []
    assert "wrote" not in done.stdout


def test_a_full_disk_leaves_the_old_csv_intact(files):
    old = files / "scores.csv"
    old.write_text("class,dice\n1,0.5\n")
    argv = ["evaluate", "pred.npy", "lab.tif", "--no-surface", "--quiet", "--csv", "scores.csv"]
    done = seglab(*argv, "--overwrite", cwd=files, preexec_fn=_file_size_limit(100))
    one_line_error(done, code=1)
    assert old.read_text() == "class,dice\n1,0.5\n"
    assert temporaries(files) == []
    done = seglab(*argv, "--overwrite", cwd=files)
    assert done.returncode == 0, done.stderr
    assert old.read_text().startswith("class,dice,iou")


KILLED_WRITER = """
import os, signal, sys
import nibabel
import numpy as np
from napari_seglab.io import write_nifti

def save_then_die(img, filename):
    with open(filename, "wb") as fh:
        fh.write(b"half a NIfTI file")
    os.kill(os.getpid(), signal.SIGKILL)

nibabel.save = save_then_die
write_nifti(sys.argv[1], np.ones((4, 5, 6), np.uint8))
"""


def test_a_killed_writer_leaves_no_temporary_after_the_next_run(files):
    target = files / "labels.nii.gz"
    target.write_bytes(b"an earlier result")
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=120)
    assert killed.returncode == -9
    assert target.read_bytes() == b"an earlier result"
    left = temporaries(files)
    assert len(left) == 1  # what a kill leaves: the partial temporary ...
    assert left[0].endswith("labels.nii.gz")
    done = seglab("convert", "lab.tif", "lab.nii.gz", cwd=files)  # the next write to the folder
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote lab.nii.gz ")
    assert temporaries(files) == []  # ... is removed by the next run
    assert target.read_bytes() == b"an earlier result"


# --------------------------------------------------------------- the atomic writer itself
def _temp_name(host: str, pid: int, name: str = "x.npy") -> str:
    return f"{TEMP_PREFIX}{host}-{pid}-abcd1234-{name}"


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from napari_seglab.checkpoints import atomic_path

    target = tmp_path / "scores.csv"
    target.write_text("old")

    def write_half():
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new ")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_half()
    assert target.read_text() == "old"
    assert temporaries(tmp_path) == []
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith("scores.csv")  # writers that go by suffix see the same one
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_stale_temporaries_are_cleaned_and_live_ones_kept(tmp_path):
    from napari_seglab.checkpoints import _host_tag, clean_stale_temps

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(finished.stdout)
    host = _host_tag()
    names = {
        "dead writer": _temp_name(host, dead),
        "live writer": _temp_name(host, os.getppid()),
        "live writer, untouched for 2 h": _temp_name(host, os.getppid(), "y.tif"),
        "other machine": _temp_name("0ther0ne", dead),
        "not ours": ".x.npy.abcdef.part",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / names["live writer, untouched for 2 h"], (old, old))
    removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        [names["dead writer"], names["live writer, untouched for 2 h"]]
    )
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([names["live writer"], names["other machine"], names["not ours"]])


def test_a_model_file_write_that_fails_keeps_the_old_model(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from napari_seglab.checkpoints import atomic_torch_save

    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.zeros(3)}, target)
    good = target.read_bytes()

    def disk_full(payload, fh):
        fh.write(b"\x80\x02 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"w": torch.ones(3)}, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("name", ["p.tif", "out.npy"])
def test_predict_on_a_full_disk_leaves_the_old_output_intact(files, name):
    """The reported case: ``predict -o p.tif`` left a file that read back as shape (0,)."""
    pytest.importorskip("monai")
    from napari_seglab.unet import train

    labels = tifffile.imread(files / "lab.tif")
    image = tifffile.imread(files / "nuc.tif")
    model = train(image, (labels > 0).astype(np.uint8), network_kwargs={"channels": [4, 8]},
                  patch_size=(32, 32), max_epochs=1, steps_per_epoch=1, batch_size=1,
                  device="cpu")  # fmt: skip
    model.save(files / "tiny.pt")
    tifffile.imwrite(files / name, np.arange(6, dtype=np.uint8).reshape(2, 3))
    old = (files / name).read_bytes()
    argv = ["predict", "tiny.pt", "nuc.tif", "-o", name, "--device", "cpu", "--overwrite"]
    done = seglab(*argv, cwd=files, preexec_fn=_file_size_limit(16 * 1024))  # output: 64 KiB
    assert one_line_error(done, code=1).startswith("seglab predict: error:")
    assert (files / name).read_bytes() == old
    assert temporaries(files) == []
    done = seglab(*argv, cwd=files)
    assert done.returncode == 0, done.stderr
    assert f"wrote {name} shape (128, 128)" in done.stdout
