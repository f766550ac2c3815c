"""Model-family benchmarks: ours against plain PyTorch in one run.

``"unet"`` and ``"deeplabv3plus"`` are measured here; ``"maskrcnn"`` (crops
with per-object targets, instance prediction) by ``bench_maskrcnn.py``, which
``--families maskrcnn`` runs.

For each family:

1. Training throughput (samples/s): :func:`napari_seglab.unet.train` with
   ``family=`` against a plain PyTorch loop (numpy random crops, cross-entropy
   + soft Dice, AdamW) around the same network (same constructor arguments),
   the same image, patch, batch and number of steps. Both without augmentation
   and validation, so the ratio measures our overhead (label encoding,
   class-balanced MONAI sampling, ignore-aware loss, events, best-model
   snapshot). Wall and CPU clocks, interleaved runs, medians. Target >= 0.9.
2. Prediction speed (1/s): :func:`napari_seglab.unet.predict` of a
   ``(64, 512, 512)`` uint16 stack (``--quick``: 4 or 8 planes of 256 x 256) with a 2D
   model of the family (plane by plane), against a plain loop over planes and
   windows (same window positions as MONAI's, same batch of windows, softmax,
   Gaussian blending) with the same network. The two outputs are checked to
   agree. Target >= 0.9.
3. Peak memory: each of the four runs above (train/predict, ours/reference)
   once in a child process forked from the benchmark after its imports (cheap:
   no re-import), which builds its inputs, then runs. Reported is the peak
   resident set size during the run minus the RSS just before it, in MiB. The
   peak is the kernel's high-water mark ``VmHWM`` of ``/proc/self/status``,
   reset to the current RSS just before the run by writing ``5`` to
   ``/proc/self/clear_refs`` (Linux >= 4.0). Plain
   ``getrusage(RUSAGE_SELF).ru_maxrss`` deltas do not work here: the import
   transient (and, in a forked child, the parent's own peak) already set a
   higher maximum than the run reaches. Where ``clear_refs`` cannot be written
   the ``ru_maxrss`` delta is reported and the line says whether it is valid.
   Informational (the issue sets no target); the ratio is ours / reference.
   CPU only (skipped with a note on a GPU: CUDA cannot run in a forked child).

Run: ``python benchmarks/bench_families.py [--quick]``. CPU timings use one
torch thread (steadier on shared cores); ``SEGLAB_DEVICE`` overrides the device.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import in_child, median_time, report

FAMILIES = ("unet", "deeplabv3plus", "maskrcnn")  # maskrcnn: bench_maskrcnn.py


def sizes(quick: bool, family: str) -> dict:
    """Benchmark sizes: training image, patch, batch, steps; prediction stack and window."""
    heavy = family == "deeplabv3plus"
    return {
        "train_shape": (256, 256) if quick else (512, 512),
        "patch": (64, 64),
        "batch": 8,
        "steps": (3 if heavy else 16) if quick else (12 if heavy else 32),
        "stack": ((4 if heavy else 8), 256, 256) if quick else (64, 512, 512),
        "window": (128, 128) if quick else (256, 256),
        "window_batch": 8,
        "overlap": 0.5,
    }


def interleaved(ours, reference, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of ``ours`` and ``reference``, runs alternating."""

    def timed(fn) -> tuple[float, float]:
        cpu0 = time.process_time()
        wall = median_time(fn, repeats=1, warmup=0)
        return wall, time.process_time() - cpu0

    ours(), reference()  # warm-up
    runs = {"ours": [], "reference": []}
    for _ in range(repeats):
        runs["ours"].append(timed(ours))
        runs["reference"].append(timed(reference))
    med = {k: [statistics.median(r[i] for r in v) for i in (0, 1)] for k, v in runs.items()}
    return {
        "wall": (med["ours"][0], med["reference"][0]),
        "cpu": (med["ours"][1], med["reference"][1]),
    }


# ---------------------------------------------------------------- training
def training_jobs(family: str, quick: bool, device):
    """``(ours, reference)`` callables training ``family`` the same number of steps."""
    import torch
    import torch.nn.functional as F

    from napari_seglab.data import nuclei_2d
    from napari_seglab.imaging import normalize_percentile
    from napari_seglab.unet import train
    from napari_seglab.unet.architectures import build_network, network_kwargs

    s = sizes(quick, family)
    sample = nuclei_2d(shape=s["train_shape"])
    image, labels = sample.image, sample.semantic
    kwargs = network_kwargs(family, 2)
    patch, batch, steps = s["patch"], s["batch"], s["steps"]

    def ours() -> None:
        train(
            image,
            labels,
            family=family,
            patch_size=patch,
            batch_size=batch,
            max_epochs=1,
            steps_per_epoch=steps,
            validation_fraction=0.0,
            augment=False,
            learning_rate=1e-3,
            device=device,
        )

    def reference() -> None:
        rng = np.random.default_rng(0)
        x_all = normalize_percentile(image)
        y_all = labels.astype(np.int64)
        torch.manual_seed(0)
        net = build_network(family, 2, 1, 2, kwargs).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
        net.train()
        hi = np.array(image.shape) - np.array(patch) + 1
        for _ in range(steps):
            corners = rng.integers(0, hi, size=(batch, 2))
            xs = [x_all[y : y + patch[0], x : x + patch[1]] for y, x in corners]
            ys = [y_all[y : y + patch[0], x : x + patch[1]] for y, x in corners]
            xb = torch.from_numpy(np.stack(xs)[:, None]).to(device)
            yb = torch.from_numpy(np.stack(ys)).to(device)
            opt.zero_grad()
            logits = net(xb)
            probs = torch.softmax(logits, 1)
            onehot = F.one_hot(yb, 2).permute(0, 3, 1, 2).float()
            inter = (probs * onehot).sum((2, 3))
            dice = 1 - (2 * inter + 1e-5) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
            loss = F.cross_entropy(logits, yb) + dice.mean()
            loss.backward()
            opt.step()
        float(loss.item())

    return ours, reference


def training_throughput(family: str, quick: bool, device) -> None:
    s = sizes(quick, family)
    ours, reference = training_jobs(family, quick, device)
    times = interleaved(ours, reference, 3 if quick else 5)
    samples = s["steps"] * s["batch"]
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"{family} train throughput (samples per {clock} s)",
            samples / t_ours,
            samples / t_ref,
            unit="samples/s",
            target=0.9,
            higher_is_better=True,
            note=f"2D {s['train_shape']}, patch {s['patch']}, batch {s['batch']}, "
            f"{s['steps']} steps, {device}; ours {t_ours:.2f} s, reference {t_ref:.2f} s",
        )


# -------------------------------------------------------------- prediction
def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window start positions along one axis, as MONAI's ``dense_patch_slices`` places them."""
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    count = -(-(size - roi) // interval) + 1
    return sorted({min(i * interval, size - roi) for i in range(count)})


def prediction_jobs(family: str, quick: bool, device):
    """``(ours, reference, outputs)``: predict a stack with ``family``'s 2D model both ways."""
    import torch
    from monai.data.utils import compute_importance_map

    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.unet import SegmentationModel, predict
    from napari_seglab.unet.architectures import build_network, network_kwargs

    s = sizes(quick, family)
    stack = np.random.default_rng(0).integers(90, 400, size=s["stack"], dtype=np.uint16)
    window, wbatch, overlap = s["window"], s["window_batch"], s["overlap"]
    kwargs = network_kwargs(family, 2)
    torch.manual_seed(0)
    net = build_network(family, 2, 1, 2, kwargs).eval().to(device)
    lo, hi = 100.0, 400.0
    model = SegmentationModel(
        network=net,
        architecture=family,
        network_kwargs=kwargs,
        spatial_dims=2,
        in_channels=1,
        classes=(0, 1),
        patch_size=tuple(window),
        intensity=IntensityRecipe("percentile", stats={"lo": lo, "hi": hi}),
        slicewise=True,
    )
    weight = compute_importance_map(window, mode="gaussian", sigma_scale=0.125, device=device)
    outputs: dict[str, np.ndarray] = {}

    def ours() -> None:
        outputs["ours"] = predict(
            model, stack, overlap=overlap, device=device, batch_size=wbatch, mixed_precision=False
        )

    def reference() -> None:
        _, ny, nx = stack.shape
        corners = [
            (y, x)
            for y in window_starts(ny, window[0], overlap)
            for x in window_starts(nx, window[1], overlap)
        ]
        out = np.empty((2, *stack.shape), dtype=np.float32)
        with torch.inference_mode():
            for z in range(stack.shape[0]):
                plane = (stack[z].astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
                x = torch.from_numpy(plane)
                acc = torch.zeros((2, ny, nx), device=device)
                norm = torch.zeros((ny, nx), device=device)
                for i in range(0, len(corners), wbatch):
                    group = corners[i : i + wbatch]
                    xb = torch.stack([x[y : y + window[0], c : c + window[1]] for y, c in group])[
                        :, None
                    ].to(device)
                    probs = torch.softmax(net(xb), 1) * weight
                    for k, (y, c) in enumerate(group):
                        acc[:, y : y + window[0], c : c + window[1]] += probs[k]
                        norm[y : y + window[0], c : c + window[1]] += weight
                out[:, z] = (acc / norm).cpu().numpy()
        outputs["reference"] = out

    return ours, reference, outputs


def prediction_speed(family: str, quick: bool, device) -> None:
    s = sizes(quick, family)
    ours, reference, outputs = prediction_jobs(family, quick, device)
    times = interleaved(ours, reference, 3 if quick else 2)
    diff = float(np.abs(outputs["ours"] - outputs["reference"]).max())
    agree = float(np.mean(outputs["ours"].argmax(0) == outputs["reference"].argmax(0)))
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"{family} predict speed (1 / {clock} s)",
            1.0 / t_ours,
            1.0 / t_ref,
            unit="1/s",
            target=0.9,
            higher_is_better=True,
            note=f"stack {s['stack']} plane by plane, window {s['window']}, batch "
            f"{s['window_batch']}, overlap {s['overlap']}, {device}; "
            f"ours {t_ours:.2f} s, reference {t_ref:.2f} s",
        )
    print(
        f"{family} predict ours vs reference: max |p diff| {diff:.2e}, "
        f"argmax agreement {100 * agree:.4f} %",
        flush=True,
    )
    if diff > 1e-3:
        raise AssertionError(f"{family}: ours and the plain loop disagree (max diff {diff:g})")


# ------------------------------------------------------------------ memory
def _status_mib(key: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key} field")


def memory_child(family: str, task: str, who: str, quick: bool, device) -> dict:
    """Build one job's inputs, run it once, return its peak-RSS increase (see module doc)."""
    if task == "train":
        jobs = dict(zip(("ours", "reference"), training_jobs(family, quick, device)))
    else:
        jobs = dict(zip(("ours", "reference"), prediction_jobs(family, quick, device)[:2]))
    return status_peak(jobs[who])


def status_peak(job) -> dict:
    """Run ``job()`` once; its peak-RSS increase in MiB (``VmHWM``, see the module doc)."""
    import gc
    import resource

    gc.collect()  # touches (copies) the inherited objects before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := current RSS
        method = "VmHWM"
    except OSError:
        method = "ru_maxrss"
    before = _status_mib("VmRSS")
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    job()
    if method == "VmHWM":
        peak = _status_mib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "delta_mib": peak - before,
        "method": method,
        "valid": method == "VmHWM" or peak > max_before,
    }


def peak_memory_report(family: str, quick: bool, device) -> None:
    s = sizes(quick, family)
    for task in ("train", "predict"):
        result = {
            who: in_child(memory_child, family, task, who, quick, device)
            for who in ("ours", "reference")
        }
        what = (
            f"train {s['steps']} steps, batch {s['batch']}, patch {s['patch']}"
            if task == "train"
            else f"predict stack {s['stack']}, window {s['window']}"
        )
        method = result["ours"]["method"]
        flags = "" if all(r["valid"] for r in result.values()) else "; UNRELIABLE: peak not raised"
        report(
            f"{family} {task} peak RSS added ({method} delta, forked child)",
            result["ours"]["delta_mib"],
            result["reference"]["delta_mib"],
            unit="MiB",
            note=f"{what}; peak during the run minus RSS before{flags}",
        )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args()
    import torch

    from napari_seglab.device import resolve_device

    device = resolve_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)  # steadier timings on shared CPUs
    for family in args.families:
        if family == "maskrcnn":
            from bench_maskrcnn import run

            run(args.quick, device)
            continue
        training_throughput(family, args.quick, device)
        prediction_speed(family, args.quick, device)
        if device.type == "cpu":
            peak_memory_report(family, args.quick, device)
        else:  # CUDA cannot be used in a child forked after its initialisation
            print(f"{family} peak memory: skipped on {device} (host RSS is measured on CPU only)")


if __name__ == "__main__":
    main()
