"""Mask R-CNN family benchmarks: ours against plain PyTorch / torchvision in one run.

1. Training throughput (crops/s): :func:`napari_seglab.unet.train` with
   ``family="maskrcnn"`` against a plain PyTorch loop around the same network
   (same settings, same seed), the same image and instance labels, crop size,
   batch and number of steps: numpy random crops, per-object masks and boxes
   computed inline, the network's summed losses, AdamW. Both without
   augmentation and validation, so the ratio measures our overhead (intensity
   fit, crop sampler and targets, the shared loop's events and best-epoch
   snapshot). Wall and CPU clocks, interleaved runs, medians. Target >= 0.9.
2. Prediction speed (1/s): :func:`napari_seglab.unet.predict_and_split` of a
   ``(Z, Y, X)`` stack plane by plane against a plain loop: torchvision's own
   forward (which pastes every mask on a full-size plane), masks painted by
   decreasing score, planes linked with the same linker. The outputs are
   checked to be identical. Target >= 0.9.
3. Peak RSS added by each of the four runs in a forked child (as
   ``bench_families.py``). CPU only.

The network has random weights (its untrained classifier scores many boxes
near 0.5, so prediction pastes and paints many masks per plane).

Run: ``python benchmarks/bench_maskrcnn.py [--quick]`` or
``python benchmarks/bench_families.py --families maskrcnn``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report
from bench_families import in_child, interleaved, status_peak

SMALL = {"backbone": "small"}


def sizes(quick: bool) -> dict:
    return {
        "train_shape": (128, 128) if quick else (256, 256),
        "crop": (64, 64) if quick else (128, 128),
        "batch": 2,
        "steps": 6 if quick else 8,
        "stack": (4, 128, 128) if quick else (8, 512, 512),
        "network": SMALL if quick else {},
    }


def _sample(shape):
    from napari_seglab.data import nuclei_2d

    sample = nuclei_2d(shape=shape)
    return sample.image, sample.labels


def training_jobs(quick: bool, device):
    """``(ours, reference)`` callables training the same steps of the same network."""
    import torch

    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.models.maskrcnn_net import build_maskrcnn, maskrcnn_settings
    from napari_seglab.unet import train

    s = sizes(quick)
    image, ids = _sample(s["train_shape"])
    crop, batch, steps = s["crop"], s["batch"], s["steps"]
    settings = maskrcnn_settings(s["network"])

    def ours() -> None:
        train(
            image,
            ids,
            family="maskrcnn",
            network_kwargs=settings,
            patch_size=crop,
            batch_size=batch,
            max_epochs=1,
            steps_per_epoch=steps,
            validation_fraction=0.0,
            augment=False,
            device=device,
        )

    def targets(part: np.ndarray) -> dict:
        values = [v for v in np.unique(part) if v and (part == v).sum() >= 8]
        masks = np.stack([part == v for v in values]).astype(np.uint8) if values else None
        boxes = []
        for v in values:
            rows, cols = np.nonzero(part == v)
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(device),
            "labels": torch.ones(len(values), dtype=torch.int64, device=device),
            "masks": torch.from_numpy(
                masks if masks is not None else np.zeros((0, *part.shape), np.uint8)
            ).to(device),
        }

    def reference() -> None:
        rng = np.random.default_rng(0)
        recipe = IntensityRecipe("percentile")
        recipe.fit(image[None])
        x_all = recipe.apply(image[None]).astype(np.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = build_maskrcnn(1, 2, settings).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
        net.train()
        hi = np.array(ids.shape) - np.array(crop) + 1
        for _ in range(steps):
            corners = rng.integers(0, hi, size=(batch, 2))
            xs = [
                torch.from_numpy(np.ascontiguousarray(x_all[:, y : y + crop[0], c : c + crop[1]]))
                for y, c in corners
            ]
            ts = [targets(ids[y : y + crop[0], c : c + crop[1]]) for y, c in corners]
            opt.zero_grad()
            loss = sum(net([x.to(device) for x in xs], ts).values())
            loss.backward()
            opt.step()
        float(loss.item())

    return ours, reference


def training_throughput(quick: bool, device) -> None:
    s = sizes(quick)
    ours, reference = training_jobs(quick, device)
    times = interleaved(ours, reference, 3)
    crops = s["steps"] * s["batch"]
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"maskrcnn train throughput (crops per {clock} s)",
            crops / t_ours,
            crops / t_ref,
            unit="crops/s",
            target=0.9,
            higher_is_better=True,
            note=f"2D {s['train_shape']}, crop {s['crop']}, batch {s['batch']}, "
            f"{s['steps']} steps, backbone {s['network'].get('backbone', 'resnet18')}, "
            f"{device}; ours {t_ours:.2f} s, reference {t_ref:.2f} s",
        )


def prediction_jobs(quick: bool, device):
    """``(ours, reference, outputs)`` predicting a stack with one random Mask R-CNN."""
    import torch

    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.models.maskrcnn_net import build_maskrcnn, maskrcnn_settings
    from napari_seglab.sam.everything_labels import link_planes
    from napari_seglab.unet import SegmentationModel, predict_and_split

    s = sizes(quick)
    settings = maskrcnn_settings(s["network"])
    stack = np.random.default_rng(0).integers(90, 400, size=s["stack"], dtype=np.uint16)
    torch.manual_seed(0)
    net = build_maskrcnn(1, 2, settings).eval().to(device)
    lo, hi = 100.0, 400.0
    model = SegmentationModel(
        network=net,
        architecture="maskrcnn",
        network_kwargs=settings,
        spatial_dims=2,
        in_channels=1,
        classes=(0, 1),
        patch_size=(128, 128),
        intensity=IntensityRecipe("percentile", stats={"lo": lo, "hi": hi}),
        slicewise=True,
    )
    outputs: dict[str, np.ndarray] = {}

    def ours() -> None:
        result = predict_and_split(model, stack, device=device, mixed_precision=False)
        outputs["ours"] = result.instances

    def reference() -> None:
        planes = []
        with torch.inference_mode():
            for z in range(stack.shape[0]):
                plane = (stack[z].astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
                found = net([torch.from_numpy(plane)[None].to(device)])[0]
                ids = np.zeros(plane.shape, np.int32)
                order = torch.argsort(found["scores"], descending=True, stable=True)
                n = 0
                for k in order.tolist():
                    if float(found["scores"][k]) < 0.5:
                        break
                    claim = (found["masks"][k, 0] > 0.5).cpu().numpy() & (ids == 0)
                    if claim.any():
                        n += 1
                        ids[claim] = n
                planes.append(ids)
        records = [[{"id": i} for i in range(1, int(p.max()) + 1)] for p in planes]
        outputs["reference"] = link_planes(planes, records, min_iou=0.5)[0]

    return ours, reference, outputs


def prediction_speed(quick: bool, device) -> None:
    s = sizes(quick)
    ours, reference, outputs = prediction_jobs(quick, device)
    times = interleaved(ours, reference, 3 if quick else 2)
    same = np.array_equal(outputs["ours"], outputs["reference"])
    objects = int(outputs["ours"].max())
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"maskrcnn predict speed (1 / {clock} s)",
            1.0 / t_ours,
            1.0 / t_ref,
            unit="1/s",
            target=0.9,
            higher_is_better=True,
            note=f"stack {s['stack']} plane by plane, {objects} linked objects, {device}; "
            f"ours {t_ours:.2f} s, reference {t_ref:.2f} s",
        )
    print(f"maskrcnn predict ours vs reference: identical instance labels: {same}", flush=True)
    if not same:
        raise AssertionError("maskrcnn: ours and the plain torchvision loop disagree")


def memory_child(task: str, who: str, quick: bool, device) -> dict:
    """One job's peak-RSS increase in this (forked) process."""
    if task == "train":
        jobs = dict(zip(("ours", "reference"), training_jobs(quick, device)))
    else:
        jobs = dict(zip(("ours", "reference"), prediction_jobs(quick, device)[:2]))
    return status_peak(jobs[who])


def peak_memory_report(quick: bool, device) -> None:
    s = sizes(quick)
    for task in ("train", "predict"):
        result = {
            who: in_child(memory_child, task, who, quick, device) for who in ("ours", "reference")
        }
        what = (
            f"train {s['steps']} steps, batch {s['batch']}, crop {s['crop']}"
            if task == "train"
            else f"predict stack {s['stack']}"
        )
        flags = "" if all(r["valid"] for r in result.values()) else "; UNRELIABLE: peak not raised"
        report(
            f"maskrcnn {task} peak RSS added ({result['ours']['method']} delta, forked child)",
            result["ours"]["delta_mib"],
            result["reference"]["delta_mib"],
            unit="MiB",
            note=f"{what}; peak during the run minus RSS before{flags}",
        )


def run(quick: bool, device) -> None:
    """Every Mask R-CNN benchmark (memory on CPU only)."""
    training_throughput(quick, device)
    prediction_speed(quick, device)
    if device.type == "cpu":
        peak_memory_report(quick, device)
    else:
        print(f"maskrcnn peak memory: skipped on {device} (host RSS is measured on CPU only)")


def main() -> None:
    import argparse

    import torch

    from napari_seglab.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    device = resolve_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)
    run(args.quick, device)


if __name__ == "__main__":
    main()
