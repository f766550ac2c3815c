"""The demo behind ``make demo``: sample data, every widget docked, the main pipeline.

With a display, napari opens with the 2D sample and the plugin's widgets docked,
and the pipeline's results are added as layers as they arrive. Without one
(``--headless``, on a virtual screen), the same pipeline runs as a script and
writes screenshots plus ``report.md`` into the output folder.

The pipeline: train a small U-Net on the synthetic nuclei (time-bounded, CPU
friendly), predict, refine with the dense CRF, evaluate each against the ground
truth, then split into instances and score the instance matching. Headless,
the trained model then predicts a folder of four more samples from the
Batch prediction dock (a local cluster of two worker processes), and the
batch report's rows go into ``report.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

WIDGETS = (
    "SAM prompting",
    "U-Net train / predict",
    "CRF refinement",
    "Evaluation",
    "SAM decoder fine-tuning",
    "Batch prediction",
)


def run_pipeline(sample, *, time_budget_s: float = 45.0, log=print) -> dict:
    """Train on one synthetic image, then predict, refine and evaluate on ``sample``.

    The network is trained on ``nuclei_2d(seed=1)``, a different image from the
    one shown (``seed=0``), so the scores are on data it has not seen.

    Parameters
    ----------
    sample : napari_seglab.data.SyntheticSample
        The image to segment and its ground truth.
    time_budget_s : float
        Training time budget in seconds.

    Returns
    -------
    dict
        ``layers``: list of ``(data, kwargs, layer_type)`` results; ``rows``:
        report rows ``(step, seconds, result)``; ``model``: the trained model.
    """
    from .. import crf, metrics, unet
    from ..data import nuclei_2d

    rows, layers = [], []
    truth = sample.semantic
    training = nuclei_2d(seed=1)

    start = time.perf_counter()
    model = unet.train(training.image, training.semantic, time_budget_s=time_budget_s, seed=0)
    rows.append(("U-Net training on another image", time.perf_counter() - start, ""))
    log(f"trained U-Net in {rows[-1][1]:.1f} s")

    start = time.perf_counter()
    probabilities = unet.predict(model, sample.image)
    predicted = unet.probabilities_to_labels(probabilities)
    scores = metrics.semantic(predicted, truth, spacing=sample.spacing)[1]
    rows.append(("U-Net prediction", time.perf_counter() - start, _semantic_summary(scores)))
    layers.append(
        (
            probabilities[1],
            {"name": "U-Net probability", "colormap": "magma", "opacity": 0.5, "visible": False},
            "image",
        )
    )
    layers.append((predicted.astype("uint8"), {"name": "U-Net prediction"}, "labels"))
    log(f"U-Net: {rows[-1][2]}")

    start = time.perf_counter()
    refined = crf.refine(sample.image, probabilities, spacing=sample.spacing)
    scores = metrics.semantic(refined, truth, spacing=sample.spacing)[1]
    rows.append(("CRF refinement", time.perf_counter() - start, _semantic_summary(scores)))
    layers.append((refined.astype("uint8"), {"name": "CRF refined", "visible": False}, "labels"))
    log(f"CRF: {rows[-1][2]}")

    start = time.perf_counter()
    instances = unet.to_instances(refined, spacing=sample.spacing, min_size=20)
    inst = metrics.instances(instances, sample.labels, iou_threshold=0.5)
    rows.append(
        (
            "Instances + matching",
            time.perf_counter() - start,
            f"F1 {inst['f1']:.3f}, PQ {inst['pq']:.3f}, TP {inst['tp']}, "
            f"FP {inst['fp']}, FN {inst['fn']}",
        )
    )
    layers.append((instances, {"name": "instances"}, "labels"))
    log(f"instances: {rows[-1][2]}")
    return {"layers": layers, "rows": rows, "model": model}


def _semantic_summary(scores: dict) -> str:
    return f"Dice {scores['dice']:.3f}, IoU {scores['iou']:.3f}, HD95 {scores['hd95']:.2f} px"


def _open_viewer(show: bool):
    import napari

    from ..data import nuclei_2d

    viewer = napari.Viewer(title="napari-seglab demo", show=show)
    sample = nuclei_2d()
    viewer.open_sample("napari-seglab", "nuclei_2d")
    widgets = {
        name: viewer.window.add_plugin_dock_widget("napari-seglab", name, tabify=True)
        for name in WIDGETS
    }
    return viewer, sample, widgets


def headless(out: Path, time_budget_s: float) -> int:
    """Run the pipeline on a (virtual) screen and write screenshots and a report."""
    from qtpy.QtWidgets import QApplication

    out.mkdir(parents=True, exist_ok=True)
    viewer, sample, widgets = _open_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    widgets["SAM prompting"][0].raise_()  # the tab a new user starts with
    app.processEvents()
    shots = [_shot(viewer, out / "01_sample_and_widgets.png")]

    lines = ["# napari-seglab demo report", ""]
    sam_note = _prompt_in_sam_widget(viewer, widgets["SAM prompting"][1], sample)
    widgets["SAM prompting"][0].raise_()
    shots.append(_shot(viewer, out / "01b_sam_positive_and_negative_point.png"))
    lines += [sam_note, ""]
    for layer in [layer for layer in viewer.layers if layer.name.startswith("SAM")]:
        viewer.layers.remove(layer)
    for layer in viewer.layers:
        layer.visible = True
    try:
        result = run_pipeline(sample, time_budget_s=time_budget_s)
    except Exception as exc:  # the report says what failed; screenshots still come out
        lines += [f"Pipeline failed: `{type(exc).__name__}: {exc}`", ""]
        result = {"layers": [], "rows": []}
        status = 1
    else:
        status = 0
    for data, kwargs, kind in result["layers"]:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    app.processEvents()
    shots.append(_shot(viewer, out / "02_pipeline_results.png"))
    if result["layers"]:
        dock, evaluation = widgets["Evaluation"]
        _evaluate_in_widget(evaluation, "instances", f"{sample.name} ground truth")
        dock.raise_()
        shots.append(_shot(viewer, out / "03_evaluation_widget.png"))
        dock, batch = widgets["Batch prediction"]
        dock.raise_()
        batch_lines = _batch_in_widget(batch, result["model"], out)
        shots.append(_shot(viewer, out / "03b_batch_widget.png"))
        lines += batch_lines
        status = status or int(batch.result is None or batch.result.counts.get("failed", 0) > 0)

    viewer.layers.clear()
    viewer.open_sample("napari-seglab", "nuclei_3d")
    viewer.dims.set_point(0, 30.0)
    app.processEvents()
    shots.append(_shot(viewer, out / "04_3d_sample.png"))

    lines += ["| step | seconds | result |", "|---|---:|---|"]
    lines += [f"| {step} | {sec:.1f} | {res} |" for step, sec, res in result["rows"]]
    lines += ["", "Screenshots:", *[f"- `{p.name}`" for p in shots], ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    viewer.close()
    return status


def _sam_model():
    """ViT-B when its checkpoint is already in the cache, else a tiny random-weight SAM."""
    from ..sam import build_tiny_sam, checkpoint_path, load_model

    if checkpoint_path("vit_b").exists():
        return load_model("vit_b", progress=False), "ViT-B (official weights, from the cache)"
    note = "a tiny SAM with random weights (no checkpoint in the cache: masks are not meaningful)"
    return build_tiny_sam(seed=3), note


def _prompt_in_sam_widget(viewer, widget, sample, timeout_s: float = 120.0) -> str:
    """Click a nucleus (positive) and Shift+click beside it (negative) on the real canvas."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    app = QApplication.instance()
    model, description = _sam_model()
    widget.set_model(model, source=description)
    widget.form.image.value = viewer.layers[0]
    widget.start()
    centres = ndi.center_of_mass(sample.labels > 0, sample.labels, [1, 2])
    (r0, c0), (r1, c1) = centres
    for layer in viewer.layers:
        if layer.name.endswith("ground truth"):
            layer.visible = False  # the clicks and the preview stay readable
    viewer.reset_view()
    widget.prompt_layers.activate()
    app.processEvents()
    native = viewer.window._qt_viewer.canvas.native
    view = viewer.window._qt_viewer.canvas.view
    transform = view.transform * view.scene.transform  # world (x, y) -> canvas pixels
    for (row, col), modifier in (
        ((r0, c0), Qt.KeyboardModifier.NoModifier),
        ((r1, c1), Qt.KeyboardModifier.ShiftModifier),  # Shift+click: a negative point
    ):
        x, y = transform.map([col, row, 0, 1])[:2]
        pos = QPoint(round(float(x)), round(float(y)))
        QTest.mouseMove(native, pos)
        QTest.mouseClick(native, Qt.MouseButton.LeftButton, modifier, pos)
        app.processEvents()
    deadline = time.perf_counter() + timeout_s
    while (widget.busy or widget.session.prediction is None) and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.02)
    positive = widget.session.prompts(None).positive.tolist()
    pixels = int(widget.session.mask().sum())
    return (
        f"SAM prompting with {description}: real clicks on the canvas gave points "
        f"{['positive' if p else 'negative' for p in positive]}; the preview has {pixels} pixels."
    )


def _evaluate_in_widget(widget, prediction: str, truth: str, timeout_s: float = 120.0) -> None:
    """Drive the Evaluation widget as a user would: pick layers, instance mode, Evaluate."""
    from qtpy.QtWidgets import QApplication

    widget.form.pred.value = widget.viewer.layers[prediction]
    widget.form.gt.value = widget.viewer.layers[truth]
    widget.form.mode.value = "instance"
    widget.evaluate_button.click()
    deadline = time.perf_counter() + timeout_s
    while widget.busy and time.perf_counter() < deadline:
        QApplication.instance().processEvents()
        time.sleep(0.02)


def _batch_in_widget(widget, model, out: Path, timeout_s: float = 300.0) -> list[str]:
    """Predict four more samples from the Batch dock; the report's rows as markdown lines."""
    import csv

    import tifffile
    from qtpy.QtWidgets import QApplication

    from ..data import nuclei_2d
    from ._sessions import model_slot

    folder = out / "batch-input"
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(10, 14):
        tifffile.imwrite(folder / f"nuclei_{seed}.tif", nuclei_2d(seed=seed).image)
    model_slot(widget.viewer).set(model)  # as after training in the U-Net dock
    widget.form.inputs.value = str(folder)
    widget.form.output.value = str(out / "batch-output")
    widget.form.instances.value = "connected"
    widget.form.workers.value = 2
    start = time.perf_counter()
    widget.run_button.click()
    while widget.jobs.running("batch") and time.perf_counter() - start < timeout_s:
        QApplication.instance().processEvents()
        time.sleep(0.05)
    lines = [f"Batch prediction of {folder.name}/ from the Batch dock: {widget.status.text()}", ""]
    report = out / "batch-output" / "report.csv"
    if report.exists():
        with open(report, newline="") as fh:
            rows = list(csv.DictReader(fh))
        keys = [k for k in ("name", "status", "shape", "seconds", "objects") if k in rows[0]]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
        lines.append("")
    return lines


def _shot(viewer, path: Path) -> Path:
    from qtpy.QtWidgets import QApplication

    QApplication.instance().processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    return path


def interactive(time_budget_s: float) -> int:
    """Open napari with the sample and the widgets, run the pipeline, keep the window open."""
    import napari
    from napari.qt.threading import create_worker

    viewer, sample, _ = _open_viewer(show=True)

    def add_results(result: dict) -> None:
        for data, kwargs, kind in result["layers"]:
            getattr(viewer, f"add_{kind}")(data, **kwargs)

    # The model work runs in a worker thread so the viewer stays responsive.
    worker = create_worker(run_pipeline, sample, time_budget_s=time_budget_s)
    worker.returned.connect(add_results)
    worker.start()
    napari.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headless", action="store_true", help="no window: screenshots + report")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--time-budget", type=float, default=45.0, help="training seconds")
    args = parser.parse_args(argv)
    if args.headless:
        return headless(args.out, args.time_budget)
    return interactive(args.time_budget)


if __name__ == "__main__":
    raise SystemExit(main())
