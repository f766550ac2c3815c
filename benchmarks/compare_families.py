"""Compare the model families under one time budget; print a markdown table.

Every family of :data:`napari_seglab.unet.families.FAMILY_NAMES` is trained
with :func:`napari_seglab.unet.train` for the same wall-clock budget
(``--budget``, default 60 s; ``--quick`` 15 s) on the same synthetic image
(:func:`napari_seglab.data.nuclei_2d`, seed 0), with the defaults of ``train``
otherwise (patch, batch, augmentation, 20 % validation, best epoch kept), then
predicts a held-out image (same generator, seed 1) and is scored with
:func:`napari_seglab.metrics.semantic` (Dice and IoU of the foreground class)
and :func:`napari_seglab.metrics.instances` (F1 and PQ at IoU 0.5 against the
true objects). Per-pixel families train on the semantic labels and their
objects are the watershed split of the prediction
(:func:`napari_seglab.unet.predict_and_split`, ``instances="watershed"``);
instance families (``"maskrcnn"``) train on the instance labels and predict
the objects themselves. Families whose optional packages are missing get a
row saying so.

Torch uses one thread (``--threads``) so that the families see the same CPU
on a shared machine; the load average before and after is printed with the
table. Run: ``python benchmarks/compare_families.py [--quick] [--budget S]``.
Not a ``bench_*`` script: ``benchmarks/run.py`` does not run it (it takes
minutes and has no ours-vs-reference ratio).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def machine() -> str:
    """CPU model and count, as one line."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def parameters(network) -> int:
    return sum(p.numel() for p in network.parameters())


def compare(budget: float, shape: tuple[int, int], families, device) -> list[dict]:
    """Train each family for ``budget`` seconds and score it on the held-out image."""
    from napari_seglab import metrics
    from napari_seglab.data import nuclei_2d
    from napari_seglab.unet import predict_and_split, train
    from napari_seglab.unet.families import family_module

    train_sample, test_sample = nuclei_2d(shape=shape, seed=0), nuclei_2d(shape=shape, seed=1)
    rows = []
    for name in families:
        family, _, encoder = name.partition(":")  # "maskrcnn:small": encoder/backbone "small"
        print(f"training {name} for {budget:g} s ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        module = family_module(family)
        instance_kind = getattr(module, "KIND", "semantic") == "instance"
        try:
            model = train(
                train_sample.image,
                train_sample.labels if instance_kind else train_sample.semantic,
                family=family,
                encoder=encoder or None,
                time_budget_s=budget,
                device=device,
                seed=0,
            )
        except (ImportError, RuntimeError, ValueError) as exc:
            rows.append({"family": name, "error": f"{type(exc).__name__}: {exc}"[:120]})
            continue
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        result = predict_and_split(model, test_sample.image, instances="watershed", device=device)
        predict_s = time.perf_counter() - start
        pred = (result.labels > 0).astype("uint8")
        scores = metrics.semantic(pred, test_sample.semantic, surface=False)[1]
        objects = metrics.instances(result.instances, test_sample.labels, thresholds=())
        last = model.history[-1] if model.history else {}
        rows.append(
            {
                "family": name,
                "params": parameters(model.network),
                "patch": "x".join(str(p) for p in model.patch_size),
                "epochs": len(model.history),
                "samples": int(last.get("samples", 0)),
                "train_s": train_s,
                "predict_s": predict_s,
                "dice": scores["dice"],
                "iou": scores["iou"],
                "f1": objects["f1"],
                "pq": objects["pq"],
                "objects": "own" if instance_kind else "watershed",
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = (
        "| family | parameters | patch | epochs | patches trained | train s | predict s "
        "| Dice (held-out) | IoU | objects | F1 @ 0.5 | PQ @ 0.5 |\n"
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['family']}` | not run: {r['error']} | | | | | | | | | | |")
            continue
        lines.append(
            f"| `{r['family']}` | {r['params'] / 1e6:.2f} M | {r['patch']} | {r['epochs']} "
            f"| {r['samples']} | {r['train_s']:.1f} | {r['predict_s']:.2f} "
            f"| {r['dice']:.3f} | {r['iou']:.3f} | {r['objects']} | {r['f1']:.3f} "
            f"| {r['pq']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from napari_seglab.unet.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s per family")
    parser.add_argument("--budget", type=float, help="seconds of training per family")
    parser.add_argument("--size", type=int, default=256, help="side of the square images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILY_NAMES),
        help="families, optionally with an encoder/backbone: deeplabv3plus:resnet18, "
        "maskrcnn:small",
    )
    args = parser.parse_args()
    budget = args.budget or (15.0 if args.quick else 60.0)

    import torch

    from napari_seglab.device import resolve_device

    device = resolve_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = compare(budget, (args.size, args.size), args.families, device)
    load_after = os.getloadavg()
    print(table(rows))
    print()
    print(
        f"Time budget {budget:g} s per family; training image nuclei_2d({args.size}x{args.size}, "
        f"seed 0), held-out nuclei_2d(seed 1); device {device}"
        + (f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else "")
        + f"; machine: {machine()}; load average (1/5/15 min) before "
        + "/".join(f"{v:.2f}" for v in load_before)
        + ", after "
        + "/".join(f"{v:.2f}" for v in load_after)
        + f"; torch {torch.__version__}; command: python benchmarks/compare_families.py "
        + " ".join(sys.argv[1:])
    )


if __name__ == "__main__":
    main()
