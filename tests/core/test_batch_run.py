"""Batch runs on a real dask LocalCluster with two worker processes.

One cluster (started by :func:`napari_seglab.batch.engine.batch_client`, as a
run without ``scheduler=`` would) serves the whole module; the runs connect
to it with ``scheduler=ADDRESS``.
"""

from __future__ import annotations

import os
import signal
import threading

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_seglab import data
from napari_seglab.batch.engine import WORKER_CACHE, batch_client
from napari_seglab.batch.evaluate import EvaluatePipeline
from napari_seglab.batch.inputs import collect_items, pair_items
from napari_seglab.batch.manifest import Manifest
from napari_seglab.batch.pipeline import BatchItem
from napari_seglab.batch.predict import PredictPipeline
from napari_seglab.batch.run import check_run, run_batch, run_batch_events
from napari_seglab.io import read_array, write_nifti
from napari_seglab.jobs import JobCancelled
from napari_seglab.unet import SegmentationModel, predict_and_split, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, one_torch_thread):
    """A tiny 2D U-Net (a few training steps) that predicts 3D stacks plane by plane."""
    sample = data.nuclei_2d(shape=(64, 64), n_objects=6)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs={"channels": [4, 8, 16]},
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        device="cpu",
    )
    model.slicewise = True
    return model.save(tmp_path_factory.mktemp("batch_model") / "model.pt")


@pytest.fixture(scope="module")
def model(model_file):
    return SegmentationModel.load(model_file)


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each (the engine's own local cluster)."""
    with batch_client(workers=2, dashboard_address=None) as client:
        client.wait_for_workers(2, timeout=120)
        yield client


@pytest.fixture(scope="module")
def address(client):
    return client.scheduler.address


def _loads(client) -> int:
    counts = client.run(lambda dask_worker: getattr(dask_worker, WORKER_CACHE, {}).get("loads", 0))
    return sum(counts.values())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """2D TIFF, 3D .npy, 3D NIfTI with spacing and a corrupt TIFF."""
    folder = tmp_path_factory.mktemp("batch_in")
    tifffile.imwrite(folder / "a.tif", data.nuclei_2d(shape=(48, 64), seed=1).image)
    np.save(folder / "b.npy", data.nuclei_3d(shape=(8, 40, 40), n_objects=3, seed=2).image)
    volume = data.nuclei_3d(shape=(8, 40, 40), n_objects=3, seed=3).image.astype(np.float32)
    write_nifti(folder / "c.nii.gz", volume, spacing=(2.0, 0.5, 0.5), is_label=False)
    (folder / "bad.tif").write_bytes(b"this is not a TIFF file")
    return folder


@pytest.fixture(scope="module")
def first_run(mixed, model_file, address, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_out")
    pipeline = PredictPipeline(
        model_file, outputs=("labels", "probabilities"), instances="connected", device="cpu"
    )
    loads = _loads(client)
    events = []
    result = run_batch(
        pipeline, collect_items([mixed]), out, scheduler=address, callback=events.append
    )
    return result, out, pipeline, events, _loads(client) - loads


def test_mixed_batch_outputs_one_error_row_and_report(first_run, mixed):
    result, out, _, events, _ = first_run
    assert result.counts == {"done": 3, "failed": 1, "skipped": 0}
    assert not result.ok
    [bad] = [row for row in result.rows if row["status"] == "failed"]
    assert bad["name"] == "bad"
    assert bad["error"].startswith("ValueError:")
    assert "bad.tif" in bad["error"]
    assert "\n" not in bad["error"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            f"{n}_{k}{s}"
            for n, s in (("a", ".tif"), ("b", ".npy"), ("c", ".nii.gz"))
            for k in ("labels", "probabilities", "instances")
        ]
        + ["manifest.json", "report.csv", "report.json", "report.png"]
    )
    rows = {row["name"]: row for row in result.rows}
    assert rows["a"]["shape"] == [48, 64]
    assert rows["c"]["spacing"] == [2.0, 0.5, 0.5]
    assert rows["b"]["objects"] == int(np.load(out / "b_instances.npy").max())
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,status,shape,spacing,seconds,objects")
    assert [line.split(",")[0] for line in csv_lines[1:]] == [
        "a",
        "b",
        "bad",
        "c",
        "(mean)",
        "(min)",
        "(max)",
    ]
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert events[0].stage == "starting"
    assert events[-1].stage == "done"
    assert sorted(e.item for e in events if e.stage == "running") == ["a", "b", "bad", "c"]
    manifest = Manifest.load(out)
    assert {n: r["status"] for n, r in manifest.items.items()} == {
        "a": "done",
        "b": "done",
        "c": "done",
        "bad": "failed",
    }


def test_outputs_equal_in_process_prediction(first_run, mixed, model):
    _, out, _, _, _ = first_run
    for name, suffix in (("a", ".tif"), ("b", ".npy"), ("c", ".nii.gz")):
        source = read_array(mixed / f"{name}{suffix}")
        expected = predict_and_split(
            model, source.data, instances="connected", spacing=source.spacing, device="cpu"
        )
        labels = read_array(out / f"{name}_labels{suffix}").data
        np.testing.assert_array_equal(labels, expected.labels)
        np.testing.assert_array_equal(
            read_array(out / f"{name}_instances{suffix}").data, expected.instances
        )
        probabilities = np.asarray(read_array(out / f"{name}_probabilities{suffix}").data)
        np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-6)
    # NIfTI outputs keep the source geometry
    source, written = nib.load(mixed / "c.nii.gz"), nib.load(out / "c_labels.nii.gz")
    np.testing.assert_allclose(written.affine, source.affine)


def test_model_is_loaded_once_per_worker_before_the_first_item(first_run):
    _, _, _, events, loads = first_run
    assert loads == 2  # both workers loaded it once, before any item
    stages = [event.stage for event in events]
    loading = [event for event in events if event.stage == "loading"]
    assert [event.status for event in loading] == [
        "model loaded on 1 of 2 workers",
        "model loaded on 2 of 2 workers",
    ]
    assert stages.index("loading") < stages.index("running")
    assert max(i for i, s in enumerate(stages) if s == "loading") < stages.index("running")


def test_rerun_skips_finished_items_and_redoes_a_changed_input(first_run, mixed, address):
    result, out, pipeline, _, _ = first_run
    items = collect_items([mixed])
    outputs = [p for p in out.iterdir() if "_" in p.name]
    mtimes = {p.name: p.stat().st_mtime_ns for p in outputs}
    again = run_batch(pipeline, items, out, scheduler=address)
    assert again.counts == {"done": 0, "failed": 1, "skipped": 3}  # the corrupt file is retried
    assert {p.name: p.stat().st_mtime_ns for p in outputs} == mtimes
    assert {r["name"]: r["status"] for r in again.rows}["a"] == "skipped"
    assert [r.get("objects") for r in again.rows] == [r.get("objects") for r in result.rows]
    # new content for b: only b is redone
    np.save(mixed / "b.npy", data.nuclei_3d(shape=(8, 40, 40), n_objects=3, seed=9).image)
    third = run_batch(pipeline, items, out, scheduler=address)
    statuses = {r["name"]: r["status"] for r in third.rows}
    assert statuses == {"a": "skipped", "b": "done", "bad": "failed", "c": "skipped"}
    assert (out / "b_labels.npy").stat().st_mtime_ns != mtimes["b_labels.npy"]
    assert (out / "a_labels.tif").stat().st_mtime_ns == mtimes["a_labels.tif"]
    # other settings: everything is redone
    other = PredictPipeline(pipeline.model_bytes, instances="connected", overlap=0.25)
    assert other.fingerprint() != pipeline.fingerprint()


def test_cancel_records_finished_items_and_a_rerun_finishes(address, model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):  # enough that some are still running when the first ends
        tifffile.imwrite(folder / f"p{i}.tif", data.nuclei_2d(shape=(160, 160), seed=i).image)
    pipeline = PredictPipeline(model_file, device="cpu")
    stop = threading.Event()
    job = run_batch_events(
        pipeline, collect_items([folder]), tmp_path / "out", scheduler=address, cancel=stop
    )
    with pytest.raises(JobCancelled) as info:
        _run_and_cancel_after_first_item(job, stop)
    partial = info.value.partial
    assert partial.counts["done"] >= 1
    statuses = {n: r["status"] for n, r in Manifest.load(tmp_path / "out").items.items()}
    assert statuses.keys() == {f"p{i}" for i in range(12)}
    assert set(statuses.values()) <= {"done", "pending"}
    rest = run_batch(pipeline, collect_items([folder]), tmp_path / "out", scheduler=address)
    assert rest.counts["skipped"] == partial.counts["done"]
    assert rest.counts["failed"] == 0
    assert rest.counts["done"] + rest.counts["skipped"] == 12


def test_evaluate_pairs_by_name_and_writes_one_table(address, tmp_path):
    from napari_seglab import metrics

    preds, truths = tmp_path / "pred", tmp_path / "truth"
    preds.mkdir()
    truths.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for name in ("x", "y"):
        truth = rng.integers(0, 3, size=(6, 20, 20)).astype(np.uint8)
        pred = truth.copy()
        pred[:, :5] = rng.integers(0, 3, size=(6, 5, 20))
        tifffile.imwrite(preds / f"{name}_labels.tif", pred)
        np.save(truths / f"{name}.npy", truth)
        expected[f"{name}_labels"] = metrics.semantic(pred, truth, surface=False)
    tifffile.imwrite(preds / "z_labels.tif", np.zeros((6, 20, 20), np.uint8))  # no truth
    items = pair_items(collect_items([preds]), collect_items([truths]))
    result = run_batch(
        EvaluatePipeline(instances=True), items, tmp_path / "out", scheduler=address
    )
    rows = {row["name"]: row for row in result.rows}
    assert rows["z_labels"]["status"] == "failed"
    assert "no ground truth" in rows["z_labels"]["error"]
    for name, scores in expected.items():
        for cls in (1, 2):
            assert rows[name][f"dice_{cls}"] == pytest.approx(scores[cls]["dice"])
            assert rows[name][f"iou_{cls}"] == pytest.approx(scores[cls]["iou"])
        assert "pq" in rows[name]
    lines = (tmp_path / "out" / "report.csv").read_text().splitlines()
    header = lines[0].split(",")
    mean = dict(zip(header, lines[-3].split(",")))
    assert mean["name"] == "(mean)"
    want = np.mean([rows[n]["dice"] for n in expected])
    assert float(mean["dice"]) == pytest.approx(want, rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json",
        "report.csv",
        "report.json",
        "report.png",
    ]


def test_checks_before_any_work(model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(folder / "a_labels.tif", np.zeros((32, 32), np.uint8))
    pipeline = PredictPipeline(model_file)
    with pytest.raises(ValueError, match="it is \\(inside\\) the input"):
        check_run(pipeline, collect_items([folder]), folder)
    with pytest.raises(ValueError, match="would both write"):
        check_run(_SameOutput(), collect_items([folder]), tmp_path / "o")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.tif").write_bytes(b"someone else's file")
    with pytest.raises(ValueError, match="add --overwrite"):
        next(run_batch_events(pipeline, [BatchItem("a", folder / "a.tif")], out))
    # -o was the input folder: the earlier run's outputs are not new inputs
    (folder / "a_labels.tif").unlink()
    manifest = Manifest(folder)
    manifest.mark_pending(BatchItem("a", folder / "a.tif"), pipeline, ["a_labels.tif"])
    manifest.save()
    tifffile.imwrite(folder / "a_labels.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="is an output of item 'a' of an earlier run"):
        next(run_batch_events(pipeline, collect_items([folder]), folder))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create the output folder"):
        check_run(pipeline, [BatchItem("a", folder / "a.tif")], tmp_path / "file" / "sub")


def _run_and_cancel_after_first_item(job, stop):
    for event in job:
        if event.stage == "running":
            stop.set()


class _SameOutput:
    name = "same"

    def output_names(self, item):
        return ["result.tif"]


@pytest.mark.parametrize("output_format", ["npy", "ome-zarr"])
def test_input_over_the_memory_budget_goes_block_by_block_with_equal_labels(
    model_file, model, tmp_path, output_format
):
    volume = data.nuclei_3d(shape=(8, 80, 80), n_objects=5, seed=4).image
    np.save(tmp_path / "v.npy", volume)
    pipeline = PredictPipeline(
        model_file,
        outputs=("labels",),
        instances="connected",
        device="cpu",
        output_format=output_format,
        memory_budget="200kB",
    )
    out = tmp_path / "out"
    out.mkdir()
    outcome = pipeline.run_item(BatchItem("v", tmp_path / "v.npy"), out, pipeline.load())
    assert outcome.row["blocks"] > 1
    suffix = ".npy" if output_format == "npy" else ".ome.zarr"
    assert outcome.outputs == [f"v_labels{suffix}", f"v_instances{suffix}"]
    assert sorted(p.name for p in out.iterdir()) == sorted(outcome.outputs)  # no scratch left
    expected = predict_and_split(model, volume, instances="connected", device="cpu")
    labels = np.asarray(read_array(out / outcome.outputs[0]).data)
    np.testing.assert_array_equal(labels, expected.labels)
    objects = np.asarray(read_array(out / outcome.outputs[1]).data)
    assert outcome.row["objects"] == int(expected.instances.max())
    np.testing.assert_array_equal(objects > 0, expected.instances > 0)


def test_report_rows_summary_and_figure(tmp_path):
    from napari_seglab.batch.report import write_report

    rows = [
        {"name": "a", "status": "done", "seconds": 1.0, "dice": 0.5, "shape": [4, 4]},
        {"name": "b", "status": "skipped", "seconds": 3.0, "dice": float("nan"), "extra": 2},
        {"name": "c", "status": "failed", "seconds": 9.0, "error": "ValueError: bad"},
    ]
    paths = write_report(rows, tmp_path, pipeline="evaluate", settings={"k": 1})
    assert [p.name for p in paths] == ["report.csv", "report.json", "report.png"]
    lines = (tmp_path / "report.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:6] == ["name", "status", "shape", "spacing", "seconds", "objects"]
    assert header[-2:] == ["worker", "error"]
    table = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert table[0]["shape"] == "4 4"
    assert table[1]["dice"] == "nan"
    assert [row["name"] for row in table[3:]] == ["(mean)", "(min)", "(max)"]
    assert table[3]["seconds"] == "2"  # failed items are not summarised
    assert table[3]["dice"] == "0.5"  # NaN left out
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"done": 1, "skipped": 1, "failed": 1}
    assert report["items"][1]["dice"] is None  # NaN is not JSON
    assert report["summary"][0]["status"] == "2 of 3"
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_an_item_error_is_one_line_and_workers_default_to_items_or_cores(tmp_path):
    from napari_seglab.batch.engine import default_workers, run_on_worker

    (tmp_path / "x.tif").write_bytes(b"not a tiff\nat all")
    result = run_on_worker(EvaluatePipeline(), BatchItem("x", tmp_path / "x.tif"), str(tmp_path))
    assert result.status == "failed"
    assert result.error.startswith("FileNotFoundError: no ground truth")
    assert result.input_hash is not None
    assert default_workers(1) == 1
    assert default_workers(1000) >= 1
    assert default_workers(5, workers=3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        default_workers(5, workers=0)


def test_killed_worker_mid_run_still_completes_every_item(
    client, address, model_file, model, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    volumes = [data.nuclei_3d(shape=(8, 64, 64), n_objects=4, seed=s).image for s in (0, 1)]
    for i in range(6):
        np.save(folder / f"v{i:02d}.npy", volumes[i % 2])
    pipeline = PredictPipeline(model_file, device="cpu")
    before = set(client.run(os.getpid).values())
    killed = []
    job = run_batch_events(pipeline, collect_items([folder]), tmp_path / "out", scheduler=address)
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if event.stage == "running" and not killed:
            busy = [w for w, keys in client.processing().items() if keys]
            assert busy, "no item was running when the worker was to be killed"
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    assert result.counts == {"done": 6, "failed": 0, "skipped": 0}
    client.wait_for_workers(2, timeout=120)
    after = set(client.run(os.getpid).values())
    assert killed[0] in before
    assert killed[0] not in after  # the nanny started a new worker process
    expected = [predict_and_split(model, v, device="cpu").labels for v in volumes]
    for i in range(6):
        labels = np.load(tmp_path / "out" / f"v{i:02d}_labels.npy")
        np.testing.assert_array_equal(labels, expected[i % 2])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".seglab-tmp")]


@pytest.mark.filterwarnings("ignore:CRF refinement changed:RuntimeWarning")  # tiny model
def test_crf_over_the_memory_budget_runs_block_by_block_like_the_whole_volume(
    model_file, model, tmp_path
):
    from napari_seglab import crf
    from napari_seglab.batch.crf_blocks import crf_block_voxels

    volume = data.nuclei_3d(shape=(8, 80, 80), n_objects=5, seed=4).image
    np.save(tmp_path / "v.npy", volume)
    pipeline = PredictPipeline(
        model_file,
        outputs=("labels",),
        crf=True,
        instances="connected",
        device="cpu",
        output_format="npy",
        memory_budget="200kB",
    )
    out = tmp_path / "out"
    out.mkdir()
    outcome = pipeline.run_item(BatchItem("v", tmp_path / "v.npy"), out, pipeline.load())
    assert outcome.row["blocks"] > 1
    assert sorted(p.name for p in out.iterdir()) == ["v_instances.npy", "v_labels.npy"]
    whole = predict_and_split(model, volume, instances="none", device="cpu")
    index = crf.refine(volume, whole.probabilities, max_block_voxels=crf_block_voxels(200_000, 2))
    expected = np.asarray(model.classes)[index]
    labels = np.load(out / "v_labels.npy")
    assert (labels != whole.labels).any()  # the CRF changed something
    np.testing.assert_array_equal(labels, expected)
    objects = np.load(out / "v_instances.npy")
    assert outcome.row["objects"] == int(objects.max()) > 0
    np.testing.assert_array_equal(objects > 0, expected > model.classes[0])
