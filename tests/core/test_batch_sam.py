"""The ``sam`` and ``embed`` batch pipelines with a tiny SAM shipped to workers as a file.

Workers get the pipeline pickled, so the model travels as a ``.pth`` file
(a tiny SAM's state dict) that :func:`napari_seglab.sam.load_model` reads
with ``model_type="tiny"``; the pipeline records the file's SHA-256.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from napari_seglab.batch.pipeline import BatchItem, Pipeline

HEADER = "image,object,kind,plane,row,col,row1,col1,label\n"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, make_tiny_sam, one_torch_thread):
    """A tiny SAM checkpoint whose IoU head is confident, so propagation goes on.

    Random weights score every mask near 0, below propagation's minimum score;
    the last IoU-head layer is set to constant scores (a different one per
    mask token, so ``best`` still chooses).
    """
    import torch

    model = make_tiny_sam(seed=2)
    head = model.sam.mask_decoder.iou_prediction_head.layers[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, 5.2, 4.8, 5.1]))
    path = tmp_path_factory.mktemp("model") / "tiny_sam.pth"
    torch.save(model.sam.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(tiny_file):
    from napari_seglab.sam import load_model

    return load_model("tiny", checkpoint=tiny_file, device="cpu")


def scene_2d():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (64, 80)).astype(np.float32)
    image[10:30, 12:40] += 80
    image[38:58, 45:75] += 120
    return image


def scene_3d():
    rng = np.random.default_rng(1)
    stack = rng.normal(0, 0.05, (6, 64, 80)).astype(np.float32)
    for k in range(6):
        stack[k, 15 + k : 40 + k, 25 : 60 - k] += 1.0
    return stack


def reference(model, data, objects):
    """The labels the prompting core gives: PromptSegmenter, propagate, free pixels only.

    ``objects``: ``(plane, points, point_labels, box, label, propagate)`` each.
    """
    from napari_seglab.sam import PromptSegmenter, SamInput, propagate

    source = SamInput(data)
    segmenter = PromptSegmenter(model)
    shape = (source.n_planes, *source.plane_shape) if source.is_stack else source.plane_shape
    labels = np.zeros(shape, dtype=np.int64)
    reserved = max((obj[4] or 0 for obj in objects), default=0)
    for plane, points, point_labels, box, label, spread in objects:
        segmenter.set_image(source, plane)
        prediction = segmenter.predict(
            points=points or None,
            labels=point_labels or None,
            box=box,
            multimask=len(points) <= 1 and box is None,
        )
        mask = prediction.mask_at(prediction.best)
        if source.is_stack:
            volume = np.zeros(shape, dtype=bool)
            if spread:
                volume = propagate(source, plane, mask, segmenter=segmenter)
            else:
                volume[plane] = mask
        else:
            volume = mask
        free = volume & (labels == 0)
        if free.any():
            labels[free] = label or max(int(labels.max()) + 1, reserved + 1)
    return labels


def write_inputs(folder):
    import tifffile

    from napari_seglab.io import write_nifti

    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / "cells.tif", scene_2d())
    write_nifti(
        folder / "stack.nii.gz",
        scene_3d(),
        spacing=(2.0, 0.5, 0.5),
        origin=(10.0, -5.0, 3.0),
        is_label=False,
    )
    (folder / "prompts.csv").write_text(
        HEADER
        + "cells,a,positive,,20,25,,,\n"  # one point: three proposals, best score kept
        + "cells,b,box,,36,43,59,77,\n"
        + "cells,b,positive,,48,60,,,\n"
        + "cells,b,negative,,5,5,,,\n"
        + "cells,c,box,,8,10,32,42,9\n"  # a box over object a: only free pixels, id 9
        + "stack,s,positive,2,28,40,,,\n"
        + "stack,s,box,2,16,24,42,58,\n"
    )
    return folder


CELLS = [
    (None, [[20, 25]], [1], None, None, False),
    (None, [[48, 60], [5, 5]], [1, 0], [36, 43, 59, 77], None, False),
    (None, [], [], [8, 10, 32, 42], 9, False),
]


def stack_objects(spread):
    return [(2, [[28, 40]], [1], [16, 24, 42, 58], None, spread)]


def test_sam_pipeline_equals_the_prompting_core_in_2d_and_3d(tmp_path, tiny_file, model):
    from napari_seglab.batch.sam import SamPipeline
    from napari_seglab.io import read_array

    inputs = write_inputs(tmp_path / "in")
    pipeline = SamPipeline(tiny_file, inputs / "prompts.csv", propagate=True, device="cpu")
    assert isinstance(pipeline, Pipeline)
    assert pipeline.model.architecture == "tiny"  # guessed from the file
    clone = pickle.loads(pickle.dumps(pipeline))
    assert clone.fingerprint() == pipeline.fingerprint()
    loaded = clone.load()
    out = tmp_path / "out"
    out.mkdir()

    cells = BatchItem("cells", inputs / "cells.tif")
    outcome = clone.run_item(cells, out, loaded)
    assert outcome.outputs == ["cells_sam.tif"]
    written = read_array(out / "cells_sam.tif").data
    expected = reference(model, scene_2d(), CELLS)
    np.testing.assert_array_equal(written, expected)
    assert set(np.unique(written)) == {0, 9, 10, 11}  # new ids above the named label 9
    assert outcome.row["objects"] == 3
    assert outcome.row["objects_empty"] == 0

    stack = BatchItem("stack", inputs / "stack.nii.gz")
    source = read_array(inputs / "stack.nii.gz")
    outcome = clone.run_item(stack, out, loaded)
    assert outcome.outputs == ["stack_sam.nii.gz"]
    result = read_array(out / "stack_sam.nii.gz")
    expected = reference(model, np.asarray(source.data), stack_objects(True))
    np.testing.assert_array_equal(result.data, expected)
    assert outcome.row["planes"] == int(expected.any(axis=(1, 2)).sum())
    assert outcome.row["planes"] > 3  # propagated beyond the prompted plane
    np.testing.assert_allclose(result.affine, source.affine)
    assert result.spacing == source.spacing


def test_without_propagation_objects_stay_on_their_plane(tmp_path, tiny_file, model):
    from napari_seglab.batch.sam import SamPipeline
    from napari_seglab.io import read_array

    inputs = write_inputs(tmp_path / "in")
    pipeline = SamPipeline(tiny_file, inputs / "prompts.csv", device="cpu")
    outcome = pipeline.run_item(
        BatchItem("stack", inputs / "stack.nii.gz"), tmp_path, pipeline.load()
    )
    written = read_array(tmp_path / outcome.outputs[0]).data
    data = np.asarray(read_array(inputs / "stack.nii.gz").data)
    np.testing.assert_array_equal(written, reference(model, data, stack_objects(False)))
    assert outcome.row["planes"] == 1


def test_settings_fingerprint_and_item_errors(tmp_path, tiny_file):
    from napari_seglab.batch.sam import SamPipeline

    inputs = write_inputs(tmp_path / "in")
    pipeline = SamPipeline(tiny_file, inputs / "prompts.csv", device="cpu")
    settings = pipeline.settings()
    assert settings["model_hash"].startswith("sha256:")
    assert settings["prompts_hash"] == pipeline.prompts.digest
    other_rule = SamPipeline(tiny_file, inputs / "prompts.csv", proposal="largest")
    assert other_rule.fingerprint() != pipeline.fingerprint()
    (inputs / "prompts.csv").write_text(HEADER + "cells,a,positive,,20,99,,,\n")
    edited = SamPipeline(tiny_file, inputs / "prompts.csv", device="cpu")
    assert edited.fingerprint() != pipeline.fingerprint()

    loaded = edited.load()
    with pytest.raises(ValueError, match=r"prompts\.csv line 2: point \(row 20, col 99\)"):
        edited.run_item(BatchItem("cells", inputs / "cells.tif"), tmp_path, loaded)
    with pytest.raises(ValueError, match="No prompts for the image 'stack'"):
        edited.run_item(BatchItem("stack", inputs / "stack.nii.gz"), tmp_path, loaded)
    assert not list(tmp_path.glob("*_sam*"))
    with pytest.raises(ValueError, match="proposal rule"):
        SamPipeline(tiny_file, inputs / "prompts.csv", proposal="first")
    with pytest.raises(FileNotFoundError, match="neither a registered checkpoint"):
        SamPipeline("vit_z", inputs / "prompts.csv")


def test_segmenting_objects_is_a_job_that_cancels_with_the_labels_so_far(tmp_path, model):
    import threading

    from napari_seglab.batch.prompts import read_prompts
    from napari_seglab.batch.sam import segment_objects_steps
    from napari_seglab.jobs import JobCancelled

    prompts = read_prompts(write_inputs(tmp_path) / "prompts.csv")
    cancel = threading.Event()
    job = segment_objects_steps(model, scene_2d(), prompts.images["cells"], cancel=cancel)
    first = next(job)
    assert (first.stage, first.done, first.total, first.object) == ("prompting", 1, 3, "a")
    cancel.set()
    with pytest.raises(JobCancelled) as info:
        next(job)
    expected = reference(model, scene_2d(), CELLS[:1])
    np.testing.assert_array_equal(info.value.partial, np.where(expected > 0, first.value, 0))


def test_output_names_follow_the_input_format(tmp_path):
    from napari_seglab.batch.sam import output_suffix

    (tmp_path / "series").mkdir()
    (tmp_path / "big.zarr").mkdir()
    names = ["a.nii.gz", "a.nii", "a.npy", "a.tif", "a.png", "a.dcm", "series", "big.zarr"]
    got = [output_suffix(tmp_path / name) for name in names]
    assert got == [".nii.gz", ".nii", ".npy", ".tif", ".tif", ".nii.gz", ".nii.gz", ".tif"]
    assert output_suffix(tmp_path / "a.tif", "nii.gz") == ".nii.gz"
    with pytest.raises(ValueError, match="output format"):
        output_suffix(tmp_path / "a.tif", "png")


def test_proposal_rules_pick_by_area(model):
    from napari_seglab.batch.sam import choose_proposal
    from napari_seglab.sam import PromptSegmenter

    segmenter = PromptSegmenter(model)
    segmenter.set_image(scene_2d())
    prediction = segmenter.predict(points=[[20, 25]], labels=[1])
    areas = [int(prediction.mask_at(k).sum()) for k in range(3)]
    assert choose_proposal(prediction, "best") == prediction.best
    assert areas[choose_proposal(prediction, "largest")] == max(areas)
    assert areas[choose_proposal(prediction, "smallest")] == min(areas)


def test_seglab_batch_embed_in_a_worker_process_serves_the_widget_session(
    tmp_path, tiny_file, capsys
):
    """``seglab batch embed`` on a worker process fills the default disk cache; a session
    here (the widget's default cache) and a second embed compute nothing."""
    import json

    from napari_seglab.batch.embed import EmbedPipeline, default_cache_dir
    from napari_seglab.cli import main
    from napari_seglab.io import read_array
    from napari_seglab.sam import load_model
    from napari_seglab.sessions import SamPromptSession

    pytest.importorskip("napari_seglab.batch.run")
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["batch", "embed", str(tiny_file), str(inputs / "stack.nii.gz"), "-o", str(out)]
    args += ["--device", "cpu", "--workers", "1", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    (row,) = json.loads((out / "report.json").read_text())["items"]
    assert (row["status"], row["planes"], row["computed"], row["cached"]) == ("done", 6, 6, 0)
    assert row["worker"]  # ran on a worker process, not here
    record = json.loads((out / "stack_embed.json").read_text())
    assert record["cache_dir"] == str(default_cache_dir().resolve())
    assert len(set(record["keys"])) == 6

    session = SamPromptSession()  # the widget's default: memory plus the default disk cache
    session.set_model(load_model("tiny", checkpoint=tiny_file, device="cpu"))
    session.set_image(read_array(inputs / "stack.nii.gz").data)
    assert all(session.is_embedded(plane) for plane in range(6))
    session.add_point((3, 30, 40))
    assert session.predict(3) is not None
    assert session.cache.misses == 0
    assert session.cache.disk_hits == 1

    pipeline = EmbedPipeline(tiny_file, device="cpu")
    again = pipeline.run_item(BatchItem("stack", inputs / "stack.nii.gz"), out, pipeline.load())
    assert (again.row["computed"], again.row["cached"]) == (0, 6)


def test_a_fine_tuned_decoder_is_applied_on_the_workers(tmp_path, tiny_file, model):
    import torch

    from napari_seglab.batch.sam import SamPipeline
    from napari_seglab.io import read_array
    from napari_seglab.sam import load_model, save_decoder

    tuned = load_model("tiny", checkpoint=tiny_file, device="cpu")
    with torch.no_grad():
        for parameter in tuned.sam.mask_decoder.output_upscaling.parameters():
            parameter.mul_(-1.0)
    tuned.invalidate()
    decoder = save_decoder(tuned, tmp_path / "decoder.pth")
    inputs = write_inputs(tmp_path / "in")
    plain = SamPipeline(tiny_file, inputs / "prompts.csv", device="cpu")
    pipeline = SamPipeline(tiny_file, inputs / "prompts.csv", decoder=decoder, device="cpu")
    assert pipeline.settings()["decoder_hash"].startswith("sha256:")
    assert pipeline.fingerprint() != plain.fingerprint()
    outcome = pipeline.run_item(
        BatchItem("cells", inputs / "cells.tif"), tmp_path, pipeline.load()
    )
    written = read_array(tmp_path / outcome.outputs[0]).data
    tuned_reference = reference(load_model("tiny", tiny_file, "cpu", decoder), scene_2d(), CELLS)
    np.testing.assert_array_equal(written, tuned_reference)
    assert not np.array_equal(written, reference(model, scene_2d(), CELLS))


def test_seglab_batch_sam_on_two_worker_processes(tmp_path, tiny_file, model, capsys):
    """``seglab batch sam`` on a LocalCluster of two processes: outputs, one failure, exit 1."""
    import json

    import tifffile

    from napari_seglab.cli import main
    from napari_seglab.io import read_array

    pytest.importorskip("napari_seglab.batch.run")
    inputs = write_inputs(tmp_path / "in")
    tifffile.imwrite(inputs / "extra.tif", scene_2d())  # an input without prompts
    out = tmp_path / "out"
    common = [str(tiny_file), str(inputs / "cells.tif"), str(inputs / "stack.nii.gz")]
    options = ["--prompts", str(inputs / "prompts.csv"), "--device", "cpu", "--quiet"]
    code = main(
        ["batch", "sam", *common, str(inputs / "extra.tif"), *options, "--propagate"]
        + ["-o", str(out), "--workers", "2"]
    )
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "1 input(s) have no prompts" in captured.err
    assert "failed: extra: " in captured.err
    assert "No prompts for the image 'extra'" in captured.err
    np.testing.assert_array_equal(
        read_array(out / "cells_sam.tif").data, reference(model, scene_2d(), CELLS)
    )
    data = np.asarray(read_array(inputs / "stack.nii.gz").data)
    np.testing.assert_array_equal(
        read_array(out / "stack_sam.nii.gz").data, reference(model, data, stack_objects(True))
    )
    rows = {row["name"]: row for row in json.loads((out / "report.json").read_text())["items"]}
    assert rows["cells"]["status"] == "done"
    assert rows["cells"]["objects"] == 3
    assert rows["extra"]["status"] == "failed"
    assert not (out / "extra_sam.tif").exists()


def test_seglab_batch_sam_refuses_prompts_for_images_not_among_the_inputs(tmp_path, tiny_file):
    from napari_seglab.cli import main

    inputs = write_inputs(tmp_path / "in")
    args = ["batch", "sam", str(tiny_file), str(inputs / "cells.tif")]
    args += ["--prompts", str(inputs / "prompts.csv"), "-o", str(tmp_path / "out")]
    assert main(args) == 2
    assert not (tmp_path / "out").exists()
