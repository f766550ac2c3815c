"""SAM 2 propagation: ours (:class:`Sam2Tracker`) against the official video predictor.

1. **Per-plane propagation time after embeddings are cached.** A stack of
   ``--planes`` planes (512 x 512 uint8), one object prompted by two points
   on its middle plane, propagated forward to the end and backward to plane
   0. Ours: :meth:`Sam2Tracker.propagate` with every plane already in the
   plugin's embedding cache. Reference: the official
   ``SAM2VideoPredictor.add_new_points_or_box`` + ``propagate_in_video``
   (forward, then ``reverse=True``) on an inference state built from the same
   preprocessed planes (``init_state`` only reads JPEG files) whose
   ``cached_features`` holds every plane's ``forward_image`` output, so it
   does not encode either. Same network, same prompts; the masks are checked
   to agree (IoU >= 0.99 per plane). Interleaved runs, medians of wall time
   and of process CPU time (one torch thread: steadier on a shared machine).
   Target <= 1.1. Both sides keep the predictor state in CPU memory
   (``offload_state_to_cpu=True``: ``storage_device`` is the CPU); the
   official side holds every plane's features on the device, ours reads them
   from the plugin's cache in host memory and copies each plane over.
   On CUDA ours prefetches (copies the next plane's features while the
   current one is computed, :class:`~napari_seglab.sam.sam2_video.CachedFeatures`);
   two more lines then report ours without prefetch, against the official
   predictor and against ours with prefetch, and the note says whether the
   masks of both are identical (they must be) and how many planes were read
   from a prefetch.
2. **Peak memory, 200 vs 50 planes** of 512 x 512, each run in a child
   process forked after the imports: build the stack, then ``propagate()``
   (sam/propagate.py) from a mask on the middle plane through a bounded
   embedding cache (8 planes in memory, planes encoded as they are reached).
   Reported: the peak resident set size during the run minus the RSS before
   it (``VmHWM`` reset through ``/proc/self/clear_refs``), and the ratio
   200 / 50 (target <= 1.25). The returned ``(Z, Y, X)`` bool volume (52 MB
   for 200 planes) is part of the run. The encoder runs at
   ``--memory-image-size`` (default 256: at 1024 encoding 250 planes takes
   about half an hour on a 2-core CPU); the line says which.

   A second line subtracts the returned volume (Z x 512 x 512 bytes), which
   any propagation returns, to show what the tracking itself adds.

Run: ``python benchmarks/bench_sam2_propagate.py [--quick] [--device cuda --autocast bf16]``
(``--part timing|memory`` runs one part).
Defaults: SAM 2.1 Hiera tiny config (random weights: speed and memory do
not depend on the values), encoder input 1024 for the timing (``--image-size``),
4 planes; ``--quick``: 256 px input, 6 planes, memory with 12 vs 48 planes.
CPU timings use one torch thread. On CUDA the memory part is skipped (CUDA
cannot run in a forked child); the timing part reports ``torch.cuda``'s peak
allocated memory of each side instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import in_child, report


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--autocast", choices=("bf16", "fp16"), default=None)
    parser.add_argument("--image-size", type=int, default=None, help="encoder input (1024)")
    parser.add_argument("--planes", type=int, default=None, help="planes timed (4)")
    parser.add_argument("--memory-image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--part", choices=("timing", "memory", "both"), default="both")
    return parser.parse_args()


def make_stack(n_planes: int, side: int = 512, seed: int = 0) -> np.ndarray:
    """``(Z, side, side)`` uint8: a bright disc drifting across a noisy background."""
    rng = np.random.default_rng(seed)
    stack = (rng.random((n_planes, side, side)) * 60).astype(np.uint8)
    rows, cols = np.ogrid[:side, :side]
    for z in range(n_planes):
        centre = side * (0.3 + 0.4 * z / max(n_planes - 1, 1))
        stack[z][(rows - side / 2) ** 2 + (cols - centre) ** 2 <= (side / 6) ** 2] += 150
    return stack


def _autocast(args):
    import contextlib

    import torch

    if args.autocast and args.device.startswith("cuda"):
        dtype = torch.bfloat16 if args.autocast == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def official_state(model, source, features: dict) -> dict:
    """The official inference state for ``source``'s planes, every plane's features cached."""
    import torch

    return {
        "images": None,  # never read: every plane is in cached_features
        "num_frames": source.n_planes,
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": True,
        "video_height": source.plane_shape[0],
        "video_width": source.plane_shape[1],
        "device": model.device,
        "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": features,
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def timing(args) -> None:
    import torch

    from napari_seglab.sam import EmbeddingCache
    from napari_seglab.sam.image import SamInput
    from napari_seglab.sam.sam2_model import build_sam2_model, preprocess_plane
    from napari_seglab.sam.sam2_tracker import Sam2Tracker

    size = args.image_size or (256 if args.quick else 1024)
    n_planes = args.planes or (6 if args.quick else 4)
    model = build_sam2_model(image_size=None if size == 1024 else size, device=args.device)
    source = SamInput(make_stack(n_planes))
    cache = EmbeddingCache(max_items=n_planes + 1)
    start = time.perf_counter()
    with _autocast(args):
        for z in range(n_planes):
            cache.get_or_compute(model, source.plane(z))
    encode = (time.perf_counter() - start) / n_planes
    features = {}
    with torch.inference_mode(), _autocast(args):
        for z in range(n_planes):
            image = preprocess_plane(model, source.plane(z))
            features[z] = (image, model.net.forward_image(image))
    middle = n_planes // 2
    points = np.array([[256, 256], [40, 40]])  # (row, col)
    labels = np.array([1, 0])
    visited = (n_planes - middle) + (middle + 1)

    hits = []

    def ours(prefetch=None):
        tracker = Sam2Tracker(
            model, source, cache=cache, autocast=args.autocast, prefetch=prefetch
        )
        tracker.set_points(middle, 1, points, labels)
        masks = tracker.propagate()[1]
        hits.append(tracker.features.prefetch_hits)
        return masks

    def official():
        net = model.net
        state = official_state(model, source, features)
        out = np.zeros((n_planes, *source.plane_shape), bool)
        with _autocast(args):
            net.add_new_points_or_box(
                state, middle, 1, points=points[:, ::-1].astype(np.float32), labels=labels
            )
            for reverse in (False, True):
                for z, _, masks in net.propagate_in_video(state, reverse=reverse):
                    out[z] = (masks[0, 0] > 0).cpu().numpy()
        return out

    cuda = args.device.startswith("cuda")
    a, b = ours(), official()  # warm-up, and the check
    same = bool(np.array_equal(a, ours(prefetch=False))) if cuda else None
    ious = [
        np.count_nonzero(a[z] & b[z]) / max(np.count_nonzero(a[z] | b[z]), 1)
        if (a[z] | b[z]).any()
        else 1.0
        for z in range(n_planes)
    ]
    runs = [("ours", ours), ("official", official)]
    if cuda:
        runs.append(("ours without prefetch", lambda: ours(prefetch=False)))
    times = {name: [] for name, _ in runs}
    cpu = {name: [] for name, _ in runs}
    peaks = {}
    for _ in range(args.repeats):
        for name, fn in runs:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if cuda:
                torch.cuda.synchronize()
                peaks[name] = torch.cuda.max_memory_allocated() / 2**20
            times[name].append((time.perf_counter() - start) / visited)
            cpu[name].append((time.process_time() - start_cpu) / visited)
    where = f"{args.device}{'/' + args.autocast if args.autocast else ''}"
    note = (
        f"{n_planes} planes 512x512, encoder input {size}, {where}, "
        f"torch threads {torch.get_num_threads()}, min IoU vs official {min(ious):.4f}, "
        f"encode {encode:.2f} s/plane (cached before timing); both sides state on the CPU, "
        f"official features on the device"
    )
    if cuda:
        note += (
            f"; ours prefetches (planes read from a prefetch: {hits[0]} of {n_planes - 1}), "
            f"masks identical to ours without prefetch: {same}"
        )
    report(
        "SAM 2 propagation per plane (embeddings cached)",
        statistics.median(times["ours"]),
        statistics.median(times["official"]),
        target=1.1,
        note=note,
    )
    if cuda:
        report(
            "SAM 2 propagation per plane, ours without prefetch (embeddings cached)",
            statistics.median(times["ours without prefetch"]),
            statistics.median(times["official"]),
            target=1.1,
            note=f"{where}: each plane's features copied to the device when reached",
        )
        report(
            "SAM 2 propagation per plane, ours: prefetch vs synchronous copies",
            statistics.median(times["ours"]),
            statistics.median(times["ours without prefetch"]),
            note=f"{where}, masks identical: {same}",
        )
    if args.device == "cpu":
        report(
            "SAM 2 propagation per plane, CPU time (embeddings cached)",
            statistics.median(cpu["ours"]),
            statistics.median(cpu["official"]),
            target=1.1,
            note="process CPU time: less sensitive to other jobs on a shared machine",
        )
    if peaks:
        report(
            "SAM 2 propagation peak CUDA memory",
            peaks["ours"],
            peaks["official"],
            unit="MiB",
            note=f"{where}; without prefetch ours {peaks['ours without prefetch']:.0f} MiB",
        )


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key} field")


def memory_child(model, n_planes: int) -> dict:
    """Propagate through ``n_planes`` planes; the peak RSS added by the run (module doc)."""
    import gc

    from napari_seglab.sam import EmbeddingCache, propagate
    from napari_seglab.sam.image import SamInput

    stack = make_stack(n_planes)
    source = SamInput(stack)
    middle = n_planes // 2
    seed = np.zeros(source.plane_shape, bool)
    seed[200:312, 200:312] = True

    class Segmenter:
        def __init__(self):
            self.model, self.cache = model, EmbeddingCache(max_items=8)

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := current RSS
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    volume = propagate(source, middle, seed, segmenter=Segmenter())
    seconds = time.perf_counter() - start
    return {
        "delta_mib": _status_mib("VmHWM") - before,
        "seconds": seconds,
        "planes": int(volume.any(axis=(1, 2)).sum()),
    }


def memory(args) -> None:
    import torch

    from napari_seglab.sam.sam2_model import build_sam2_model

    if args.device != "cpu":
        print("SAM 2 propagation peak RSS: skipped on CUDA (forked children cannot use CUDA)")
        return
    size = args.memory_image_size
    model = build_sam2_model(image_size=None if size == 1024 else size)
    small, large = (12, 48) if args.quick else (50, 200)
    runs = {n: in_child(memory_child, model, n) for n in (small, large)}
    common = (
        f"encoder input {size} (not 1024: CPU time), embedding cache of 8 planes, "
        f"torch threads {torch.get_num_threads()}, forked children, VmHWM"
    )
    report(
        f"SAM 2 propagation peak RSS added, {large} vs {small} planes of 512x512",
        runs[large]["delta_mib"],
        runs[small]["delta_mib"],
        unit="MiB",
        target=1.25,
        note=f"{common}, {runs[small]['seconds']:.0f} s and {runs[large]['seconds']:.0f} s",
    )
    # The returned (Z, Y, X) bool volume grows with the planes whatever the method.
    result = {n: n * 512 * 512 / 2**20 for n in (small, large)}
    report(
        f"SAM 2 propagation peak RSS added less the returned volume, {large} vs {small} planes",
        runs[large]["delta_mib"] - result[large],
        runs[small]["delta_mib"] - result[small],
        unit="MiB",
        target=1.25,
        note=f"returned volumes {result[small]:.0f} and {result[large]:.0f} MiB; {common}",
    )


def main() -> None:
    args = arguments()
    if args.device == "cpu":
        import torch

        torch.set_num_threads(1)  # steadier timings on shared CPUs
    # Memory first: children forked after the timing part would reuse its freed heap
    # (already resident), and their peaks would read too low.
    if args.part in ("memory", "both"):
        memory(args)
    if args.part in ("timing", "both"):
        timing(args)


if __name__ == "__main__":
    main()
