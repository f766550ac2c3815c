"""Batch throughput on dask.distributed: workers against workers, and against a plain loop.

1. ``batch 2 workers vs 1 worker``: items per second of ``run_batch`` with a
   ``PredictPipeline`` over the same volumes (target: ratio >= 1.6).
2. ``batch 1 worker vs plain loop``: items per second of one worker against
   a plain Python loop calling the same core functions in this process
   (``pipeline.load()`` once, then ``pipeline.run_item`` per item), with one
   torch thread on both sides, as dask's nanny gives each worker (target:
   ratio >= 0.9: the scheduler costs little).
   Throughput is measured from the moment every worker has loaded the model
   (the last ``"loading"`` event) to the last item; the cluster's start-up
   (worker processes importing torch and MONAI, the model loaded once per
   worker) is reported separately as a per-run cost.
3. ``batch per-item overhead``: seconds per item of one worker on many tiny
   2D images against the loop on the same images: the fixed cost of an item
   (scheduling, hashing the input, the manifest, atomic writes). Reported.

The model is a small random-weight 3D MONAI UNet with a fitted intensity
recipe (the timings measure the batch machinery, not a trained network).
Run: ``python benchmarks/bench_batch.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import arguments, report


def tiny_model(dims: int, patch, channels=(8, 16, 32)):
    import torch

    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.unet.architectures import network_kwargs
    from napari_seglab.unet.model import SegmentationModel

    torch.manual_seed(0)
    meta = {
        "architecture": "unet",
        "network_kwargs": network_kwargs("unet", dims, overrides={"channels": list(channels)}),
        "spatial_dims": dims,
        "in_channels": 1,
        "classes": [0, 1],
        "patch_size": list(patch),
        "intensity": IntensityRecipe("percentile", stats={"lo": 0.0, "hi": 1.0}).to_dict(),
    }
    model = SegmentationModel.from_metadata(meta)
    model.network.eval()
    return model


def write_inputs(folder: Path, n: int, shape, seed: int = 0) -> None:
    from scipy import ndimage as ndi

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        volume = ndi.gaussian_filter(rng.random(shape, dtype=np.float32), 2)
        np.save(folder / f"item_{i:03d}.npy", volume.astype(np.float32))


def loop_rate(pipeline, items, out: Path) -> float:
    """Items per second of the plain loop (one torch thread), model loaded once before."""
    import torch

    torch.set_num_threads(1)
    out.mkdir()
    loaded = pipeline.load()
    start = time.perf_counter()
    for item in items:
        pipeline.run_item(item, out, loaded)
    return len(items) / (time.perf_counter() - start)


def batch_rate(pipeline, items, out: Path, workers: int) -> tuple[float, float]:
    """(items per second once the cluster is up, seconds until it is up) of ``run_batch``."""
    from napari_seglab.batch.run import run_batch

    marks = {}

    def on_event(event) -> None:
        marks[event.stage] = time.perf_counter()  # the last event of each stage

    start = time.perf_counter()
    result = run_batch(pipeline, items, out, workers=workers, callback=on_event)
    if result.counts.get("failed"):
        raise RuntimeError(f"batch items failed: {result.rows}")
    ready = marks["loading"]  # every worker has loaded the model
    return len(items) / (marks["running"] - ready), ready - start


def main() -> None:
    from napari_seglab.batch.inputs import collect_items
    from napari_seglab.batch.predict import PredictPipeline

    args = arguments(__doc__.splitlines()[0])
    n_volumes, shape = (8, (16, 64, 64)) if args.quick else (16, (32, 96, 96))
    n_small = 24 if args.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = tmp / "model.pt"
        tiny_model(3, (16, 32, 32)).save(model_path)
        pipeline = PredictPipeline(model_path, device="cpu")
        write_inputs(tmp / "volumes", n_volumes, shape)
        items = collect_items([tmp / "volumes"])

        loop = loop_rate(pipeline, items, tmp / "loop")
        one, start_one = batch_rate(pipeline, items, tmp / "one", 1)
        two, start_two = batch_rate(pipeline, items, tmp / "two", 2)
        size = "x".join(map(str, shape))
        report(
            f"batch {n_volumes} volumes {size} 2 workers vs 1 worker throughput",
            two,
            one,
            unit="items/s",
            target=1.6,
            higher_is_better=True,
        )
        report(
            f"batch {n_volumes} volumes {size} 1 worker vs plain loop throughput",
            one,
            loop,
            unit="items/s",
            target=0.9,
            higher_is_better=True,
            note=f"cluster start-up {start_one:.1f} s (1 worker), {start_two:.1f} s (2 workers)",
        )

        small_model = _saved(tiny_model(2, (32, 32), channels=(4, 8)), tmp / "small.pt")
        small = PredictPipeline(small_model, device="cpu")
        write_inputs(tmp / "small", n_small, (48, 48), seed=1)
        small_items = collect_items([tmp / "small"])
        small_loop = loop_rate(small, small_items, tmp / "small-loop")
        small_one, _ = batch_rate(small, small_items, tmp / "small-one", 1)
        report(
            f"batch per-item time, {n_small} images 48x48, 1 worker vs plain loop",
            1.0 / small_one,
            1.0 / small_loop,
            note=f"overhead {1000 * (1 / small_one - 1 / small_loop):.1f} ms per item",
        )


def _saved(model, path: Path) -> Path:
    model.save(path)
    return path


if __name__ == "__main__":
    main()
