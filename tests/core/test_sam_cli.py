"""``seglab sam`` and ``seglab sam-download`` end to end with a tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
tifffile = pytest.importorskip("tifffile")

from napari_seglab import cli  # noqa: E402
from napari_seglab.sam import PromptSegmenter  # noqa: E402


@pytest.fixture
def files(tmp_path, make_tiny_sam):
    model = make_tiny_sam(seed=5)
    checkpoint = tmp_path / "tiny.pth"
    torch.save(model.sam.state_dict(), checkpoint)
    image = np.random.default_rng(0).integers(0, 3000, size=(48, 72)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", image)
    return model, checkpoint, image


def test_sam_command_writes_the_api_mask(files, tmp_path, capsys):
    model, checkpoint, image = files
    out = tmp_path / "mask.tif"
    argv = ["sam", str(tmp_path / "image.tif"), "--points", "20,30", "--negative", "5,5"]
    argv += ["--box", "10,10,40,60", "--model", "tiny", "--checkpoint", str(checkpoint)]
    argv += ["--device", "cpu", "-o", str(out)]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    segmenter = PromptSegmenter(model)
    segmenter.set_image(image)
    expected = segmenter.predict(
        points=[[20, 30], [5, 5]], labels=[1, 0], box=(10, 10, 40, 60), multimask=False
    ).mask
    np.testing.assert_array_equal(tifffile.imread(out), expected.astype(np.uint8))


def test_sam_command_errors_are_one_line(files, tmp_path, capsys):
    _, checkpoint, _ = files
    stack = tmp_path / "stack.npy"
    np.save(stack, np.zeros((3, 20, 20), np.uint8))
    argv = ["sam", str(stack), "--points", "1,1", "-o", str(tmp_path / "m.tif")]
    argv += ["--model", "tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert cli.main(argv) == 2
    assert "--plane" in capsys.readouterr().err
    assert cli.main(["sam", str(stack), "-o", str(tmp_path / "m.tif")]) == 2
    assert "at least one prompt" in capsys.readouterr().err


def test_sam_download_lists_registry_and_fails_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path))
    assert cli.main(["sam-download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_b_01ec64.pth" in out
    assert "medsam_vit_b.pth" in out
    assert cli.main(["sam-download", "vit_q"]) == 2
    assert "Unknown SAM checkpoint" in capsys.readouterr().err


def test_sam_download_lists_sam2_and_sam2_model_offline_names_the_file(
    files, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["sam-download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "sam2.1_hiera_tiny.pt" in out
    assert "sam2.1_hiera_large.pt" in out
    argv = ["sam", str(tmp_path / "image.tif"), "--points", "20,30"]
    argv += ["--model", "sam2.1_hiera_tiny", "--offline", "-o", str(tmp_path / "m.tif")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cache" / "sam" / "sam2.1_hiera_tiny.pt") in err
    assert not (tmp_path / "m.tif").exists()
