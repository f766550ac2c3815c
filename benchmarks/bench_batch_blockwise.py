"""Blockwise prediction of volumes larger than memory: flat memory, linear time.

1. Peak memory of :func:`napari_seglab.batch.blockwise.predict_blockwise`
   (zarr input on disk, probabilities and labels written to zarr on disk) as
   one volume grows 1x, 2x, 4x, 8x with the same block shape. Each size runs
   in a fresh subprocess; reported: added peak RSS (sampled) and the numpy
   peak (tracemalloc) of the 8x volume against the 1x one. Target: ratio
   <= 1.2 (memory stays flat).
2. CPU time of the same runs (wall time on a shared 2-core machine is noise):
   per window run, 8x against 1x (target <= 1.2: linear in the work), and in
   total, 8x against 8 times 1x (reported: windows overlapping two blocks run
   for both (except along the last axis, where they are kept for the next
   block), so interior blocks cost up to ``((k + 1) / k) ** 2`` times the
   whole-volume share with blocks of ``k`` window steps per axis; a larger
   volume has more interior blocks, until that factor is reached).
   Each size starts with the middle block of its first axis already cut on
   both sides (three blocks per axis), so the 1x run has the halo a large
   volume has; memory then does not depend on the volume's size.
3. Blockwise against whole-volume CPU time (:func:`napari_seglab.unet.predict_and_split`)
   on a volume that fits in memory, with blocks of the benchmark's block shape
   (windows overlapping several blocks run once per block) and with the block
   chosen from the default memory budget. Reported, no target: the price of
   bounded memory.

The model is a small random-weight 3D MONAI UNet (the timings measure the
blockwise machinery, not a trained network). One torch thread.
Run: ``python benchmarks/bench_batch_blockwise.py [--quick]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import peak_memory, python_peak_memory, report

PATCH = (8, 16, 16)
BLOCK = (16, 32, 32)
GROWTH = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2)}


def base_shape(quick: bool) -> tuple[int, int, int]:
    # three blocks per axis already at 1x: the middle block has its full halo on every side,
    # so growing the volume adds blocks, never a larger input region per block
    return (48, 96, 96) if quick else (96, 192, 192)


def tiny_model():
    import torch

    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.unet.architectures import network_kwargs
    from napari_seglab.unet.model import SegmentationModel

    torch.manual_seed(0)
    meta = {
        "architecture": "unet",
        "network_kwargs": network_kwargs("unet", 3, overrides={"channels": [4, 8]}),
        "spatial_dims": 3,
        "in_channels": 1,
        "classes": [0, 1, 2],
        "patch_size": list(PATCH),
        "intensity": IntensityRecipe("percentile", stats={"lo": 0.0, "hi": 1.0}).to_dict(),
    }
    model = SegmentationModel.from_metadata(meta)
    model.network.eval()
    return model


def write_input(folder: Path, shape) -> object:
    """A random float32 volume written to zarr chunk by chunk (never whole in memory)."""
    import dask.array as da
    import zarr

    folder.mkdir(exist_ok=True)
    data = da.random.default_rng(0).random(shape, dtype=np.float32, chunks=BLOCK)
    target = zarr.open_array(
        str(folder / "input.zarr"), mode="w", shape=shape, chunks=BLOCK, dtype=np.float32
    )
    da.store(data, target, scheduler="synchronous")
    return zarr.open_array(str(folder / "input.zarr"), mode="r")


def child(scale: int, quick: bool) -> None:
    """One size, in its own process: prints JSON with seconds and peaks."""
    import torch

    from napari_seglab.batch.blockwise import create_outputs, predict_blockwise

    torch.set_num_threads(1)
    shape = tuple(b * g for b, g in zip(base_shape(quick), GROWTH[scale]))
    model = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume = write_input(folder, shape)

        def run(name: str):
            out = create_outputs(
                folder / name, model, shape, what=("probabilities", "labels"), chunks=BLOCK
            )
            return predict_blockwise(model, volume, out, block_shape=BLOCK, device="cpu")

        warm = write_input(folder / "warm", PATCH)  # first-call costs, on one window only
        out = create_outputs(folder / "warm.zarr", model, PATCH, what=("labels",))
        predict_blockwise(model, warm, out, device="cpu")
        start, cpu = time.perf_counter(), time.process_time()
        result = {}
        rss = peak_memory(lambda: result.update(windows=run("timed.zarr").windows))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        traced = python_peak_memory(lambda: run("traced.zarr"))
    row = {"shape": shape, "seconds": seconds, "cpu": cpu, "rss_mib": rss, "numpy_mib": traced}
    row["windows"] = result["windows"]
    print(json.dumps(row))


def measure(scale: int, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(scale)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(quick: bool) -> None:
    rows = {scale: measure(scale, quick) for scale in GROWTH}
    for scale, row in rows.items():
        print(
            f"  {scale}x {tuple(row['shape'])}: {row['seconds']:.2f} s ({row['cpu']:.2f} s CPU), "
            f"peak RSS +{row['rss_mib']:.1f} MiB, numpy peak {row['numpy_mib']:.1f} MiB",
            flush=True,
        )
    one, eight = rows[1], rows[8]
    report(
        "blockwise peak RSS 8x vs 1x volume",
        eight["rss_mib"],
        one["rss_mib"],
        unit="MiB",
        target=1.2,
        note=f"block {BLOCK}, added RSS over the process baseline",
    )
    report(
        "blockwise numpy peak 8x vs 1x volume",
        eight["numpy_mib"],
        one["numpy_mib"],
        unit="MiB",
        target=1.2,
        note="tracemalloc",
    )
    report(
        "blockwise CPU time per window run, 8x vs 1x volume",
        eight["cpu"] / eight["windows"],
        one["cpu"] / one["windows"],
        unit="s",
        target=1.2,
        note="the machinery is linear in the windows it runs",
    )
    report(
        "blockwise CPU time 8x volume vs 8 x (1x volume)",
        eight["cpu"],
        8 * one["cpu"],
        note=(
            f"windows run {eight['windows']} vs 8 x {one['windows']}: more blocks have a "
            f"halo on both sides, up to ((k+1)/k)^2 for blocks of k window steps "
            f"(the last axis shares its windows); "
            f"wall {eight['seconds']:.1f} s vs 8 x {one['seconds']:.1f} s on a shared machine"
        ),
    )


def versus_whole(quick: bool) -> None:
    import torch

    from napari_seglab.batch.blockwise import predict_blockwise
    from napari_seglab.unet import predict_and_split

    torch.set_num_threads(1)
    model = tiny_model()
    shape = base_shape(quick)
    shape = (shape[0] * 2, shape[1] * 2, shape[2])
    volume = np.random.default_rng(1).random(shape, dtype=np.float32)

    def whole():
        return predict_and_split(model, volume, device="cpu", batch_size=2)

    def blocks(block_shape):
        out = {
            "probabilities": np.zeros((3, *shape), np.float32),
            "labels": np.zeros(shape, np.uint8),
        }
        return predict_blockwise(
            model, volume, out, block_shape=block_shape, device="cpu", batch_size=2
        )

    def cpu_seconds(fn):
        start = time.process_time()
        value = fn()
        return time.process_time() - start, value

    whole()
    t_whole, _ = cpu_seconds(whole)
    for label, block_shape in ((f"blocks of {BLOCK}", BLOCK), ("budget block", None)):
        t_block, result = cpu_seconds(lambda b=block_shape: blocks(b))
        report(
            f"blockwise ({label}) vs whole-volume CPU time {shape}",
            t_block,
            t_whole,
            note=(
                f"{result.blocks} blocks of {result.block_shape}, "
                f"{result.windows} windows run vs {result.grid_windows}"
            ),
        )


def main() -> None:
    if "--child" in sys.argv:
        child(int(sys.argv[sys.argv.index("--child") + 1]), "--quick" in sys.argv)
        return
    quick = "--quick" in sys.argv
    growth(quick)
    versus_whole(quick)


if __name__ == "__main__":
    main()
