"""SAM prompting in a real napari viewer: the time from a mouse click to the preview mask.

The SAM prompting dock in a shown viewer (1280x900) on a 512x512 image, the
real ViT-B architecture with random weights (speed does not depend on the
values). After the embedding is ready, real Qt mouse clicks on the canvas at
different places, one at a time; for each, the time from the click to the
preview layer showing the new mask (click -> Points layer -> prompt thread ->
queued result -> preview refreshed).

Ours: the median click-to-preview time. Reference: the median of the same
prompts through ``PromptSegmenter.predict(...).mask`` on the main thread with
the same cached embedding (the compute floor); the ratio is the widget's
overhead factor. Also printed: the median compute inside the prompt thread.
Needs a display (``make bench`` runs under Xvfb when there is none); without
one it prints a skip line and exits 0. ``--quick``: the tiny model, 256x256, 4 clicks.

    python benchmarks/bench_sam_viewer.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import arguments, report


def wait_until(app, condition, timeout: float = 120.0) -> None:
    """Process Qt events until ``condition()`` holds (RuntimeError after ``timeout`` s).

    Sleeps 0.5 ms between rounds, as an idle event loop would wait, so polling
    does not hold the GIL against the prompt thread.
    """
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise RuntimeError("timed out waiting in the viewer")
        app.processEvents()
        time.sleep(0.0005)


def settle(app, seconds: float) -> None:
    """Process Qt events for ``seconds`` (the viewer draws, nothing is timed)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def canvas_point(viewer, row: float, col: float):
    """The canvas pixel (QPoint) of the world position ``(row, col)``."""
    from qtpy.QtCore import QPoint

    view = viewer.window._qt_viewer.canvas.view
    x, y = (view.transform * view.scene.transform).map([col, row, 0, 1])[:2]
    return QPoint(round(float(x)), round(float(y)))


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("# bench_sam_viewer: skipped (no display; run under xvfb-run)", flush=True)
        return

    import napari
    import torch
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_seglab.data import nuclei_2d
    from napari_seglab.sam import build_tiny_sam

    quick = args.quick
    size = 256 if quick else 512
    arch = "tiny" if quick else "vit_b"
    n_clicks = 4 if quick else 12
    model = build_tiny_sam(architecture=arch, seed=0, device="cpu")
    print(
        f"# model {arch} (random weights), image {size}x{size}, {n_clicks} clicks, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    image = nuclei_2d((size, size), n_objects=30, seed=0).image

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.resize(1280, 900)
    viewer.add_image(image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    widget.set_model(model)
    widget.start_button.click()
    viewer.reset_view()
    session = widget.session
    wait_until(app, lambda: not widget.jobs.running("neighbours") and session.is_embedded(None))
    settle(app, 0.3)

    # Timestamps of each click's path: the prompt handed to the prompt thread (GUI thread),
    # the compute there, the result taken on the GUI thread, the preview shown.
    stamps: dict[str, float] = {}
    computed: list[float] = []
    layers = widget.prompt_layers

    def stamp(name, function):
        def call(*args, **kwargs):
            if name in ("accept", "request"):
                stamps[name] = time.perf_counter()
            result = function(*args, **kwargs)
            if name == "shown":
                stamps[name] = time.perf_counter()
            return result

        return call

    widget.request_prediction = stamp("request", widget.request_prediction)
    widget._on_predicted = stamp("accept", widget._on_predicted)  # before the server exists
    layers.show = stamp("shown", layers.show)
    job = session.prediction_job

    def timed_job(plane=None):
        begin = time.perf_counter()
        result = yield from job(plane)
        stamps["computed"] = time.perf_counter()
        computed.append(stamps["computed"] - begin)
        return result

    session.prediction_job = timed_job
    native = viewer.window._qt_viewer.canvas.native
    rng = np.random.default_rng(0)
    positions = rng.uniform(0.15 * size, 0.85 * size, size=(n_clicks + 1, 2))
    segmenter = session.segmenter
    latencies, floors, phases = [], [], []
    for i, (row, col) in enumerate(positions):
        previous = session.prediction
        point = canvas_point(viewer, row, col)
        QTest.mouseMove(native, point)
        app.processEvents()
        stamps.clear()
        start = time.perf_counter()
        QTest.mouseClick(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)

        def updated(p=previous) -> bool:
            return session.prediction is not p and "shown" in stamps and not widget.busy

        wait_until(app, updated)
        n_points = len(session.prompts().points)
        if n_points != i + 1:
            raise RuntimeError(f"click {i}: expected {i + 1} points, the session has {n_points}")
        # The compute floor: the same prompts, the same cached embedding, on this thread.
        kwargs = session.prompts().predict_kwargs()
        segmenter.set_image(session.source, None)
        begin = time.perf_counter()
        _ = segmenter.predict(**kwargs).mask
        floor = time.perf_counter() - begin
        if i > 0:  # the first click warms up (first-call allocations on the prompt thread)
            latencies.append(stamps["shown"] - start)
            floors.append(floor)
            marks = [start, *(stamps[k] for k in ("request", "computed", "accept", "shown"))]
            phases.append(np.diff(marks))
        settle(app, 0.05)

    ours, reference = statistics.median(latencies), statistics.median(floors)
    thread = statistics.median(computed[1:])
    report(
        "SAM click-to-preview in the viewer vs predict+mask on the main thread",
        ours,
        reference,
        note=(
            f"median of {len(latencies)} clicks; compute inside the prompt thread "
            f"{thread * 1000:.0f} ms; click-to-preview min {min(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        ),
    )
    medians = np.median(np.array(phases), axis=0) * 1000
    names = ("click handled", "queue + compute", "result delivered", "preview drawn")
    print(
        "# click-to-preview phases (median ms): "
        + ", ".join(f"{n} {m:.0f}" for n, m in zip(names, medians)),
        flush=True,
    )
    viewer.close()


if __name__ == "__main__":
    main()
