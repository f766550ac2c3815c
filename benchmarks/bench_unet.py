"""U-Net benchmarks: ours against plain MONAI in the same run.

1. Training throughput (patches/s): :func:`napari_seglab.unet.train` against a
   hand-written MONAI loop (``RandCropByPosNegLabeld`` + ``DataLoader`` +
   ``DiceCELoss`` + Adam) with the same network, patch and batch size. Both
   without augmentation and without validation, so the ratio measures our
   overhead (label encoding, class-balanced sampling, ignore-aware loss,
   events, best-model tracking). Target: ratio >= 0.9.
2. Prediction time: :func:`napari_seglab.unet.predict` (normalisation, checks,
   softmax blending) against a bare ``sliding_window_inference`` call with the
   same network, window, overlap, batch and Gaussian blending on an already
   normalised tensor. Reported as speed ratio reference_time / our_time.
   Target: >= 0.9.
3. Peak memory predicting a ``(256, 512, 512)`` stack (``--quick``:
   ``(64, 256, 256)``) with a 2-class model, against the size of the float32
   probability output. Target: < 3x.
4. CUDA only: autocast against fp32 prediction (labels agree on >= 99.9 % of
   voxels; time ratio < 1).

Run: ``python benchmarks/bench_unet.py [--quick]``. Uses the GPU when one is
available (``SEGLAB_DEVICE`` overrides), else the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import arguments, median_time, peak_memory, report


def interleaved_medians(ours, reference, repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall-clock and CPU seconds of ``ours`` and ``reference``, alternating runs.

    Alternating keeps both under the same machine load (on shared CPUs a block
    of runs is unfair to whichever runs in the busier minute). CPU time
    (``time.process_time``, one torch thread) is the steadier figure when
    other processes compete for the cores.

    Returns
    -------
    dict
        ``{"wall": (ours, reference), "cpu": (ours, reference)}`` in seconds.
    """
    import statistics
    import time

    def timed(fn) -> tuple[float, float]:
        cpu0 = time.process_time()
        wall = median_time(fn, repeats=1, warmup=0)
        return wall, time.process_time() - cpu0

    ours(), reference()  # warm-up
    runs = {"ours": [], "reference": []}
    for _ in range(repeats):
        runs["ours"].append(timed(ours))
        runs["reference"].append(timed(reference))
    med = {k: [statistics.median(v[i] for v in runs[k]) for i in (0, 1)] for k in runs}
    return {
        "wall": (med["ours"][0], med["reference"][0]),
        "cpu": (med["ours"][1], med["reference"][1]),
    }


def training_throughput(quick: bool, device) -> None:
    import torch
    from monai.data import DataLoader, Dataset, list_data_collate
    from monai.losses import DiceCELoss
    from monai.transforms import RandCropByPosNegLabeld

    from napari_seglab.data import nuclei_2d
    from napari_seglab.imaging import normalize_percentile
    from napari_seglab.unet import train
    from napari_seglab.unet.architectures import build_network, network_kwargs

    sample = nuclei_2d(shape=(256, 256) if quick else (512, 512))
    image, labels = sample.image, sample.semantic
    patch, batch, steps = (64, 64), 8, 8 if quick else 24
    kwargs = network_kwargs("unet", 2, overrides={"channels": [8, 16, 32, 64]})

    def ours() -> None:
        train(
            image,
            labels,
            network_kwargs=kwargs,
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
        data = {
            "image": torch.from_numpy(normalize_percentile(image)[None]),
            "label": torch.from_numpy(labels[None].astype(np.float32)),
        }
        crop = RandCropByPosNegLabeld(
            keys=["image", "label"],
            label_key="label",
            spatial_size=patch,
            pos=1,
            neg=1,
            num_samples=batch,
        )
        loader = DataLoader(
            Dataset([data] * steps, crop), batch_size=1, collate_fn=list_data_collate
        )
        net = build_network("unet", 2, 1, 2, kwargs).to(device)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for batch_data in loader:
            x = batch_data["image"].to(device)
            y = batch_data["label"].to(device)
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        float(loss.item())

    times = interleaved_medians(ours, reference, 3 if quick else 5)
    patches = steps * batch
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"unet train throughput (patches per {clock} s)",
            patches / t_ours,
            patches / t_ref,
            unit="patches/s",
            target=0.9,
            higher_is_better=True,
            note=f"2D {image.shape}, patch {patch}, batch {batch}, {steps} steps, {device}",
        )


def _tiny_model(spatial_dims: int, patch, channels):
    from napari_seglab.imaging import IntensityRecipe
    from napari_seglab.unet import SegmentationModel
    from napari_seglab.unet.architectures import build_network, network_kwargs

    kwargs = network_kwargs("unet", spatial_dims, overrides={"channels": channels})
    net = build_network("unet", spatial_dims, 1, 2, kwargs)
    return SegmentationModel(
        network=net.eval(),
        architecture="unet",
        network_kwargs=kwargs,
        spatial_dims=spatial_dims,
        in_channels=1,
        classes=(0, 1),
        patch_size=tuple(patch),
        intensity=IntensityRecipe("percentile", stats={"lo": 100.0, "hi": 400.0}),
    )


def prediction_speed(quick: bool, device) -> None:
    import torch
    from monai.inferers import sliding_window_inference

    from napari_seglab.data import nuclei_3d
    from napari_seglab.unet import predict

    shape = (32, 128, 128) if quick else (64, 256, 256)
    image = nuclei_3d(shape=shape).image
    patch, batch = (16, 64, 64), 4
    model = _tiny_model(3, patch, [8, 16, 32, 64])
    model.network.to(device)
    x = torch.from_numpy(model.prepare_input(image))[None]

    def ours() -> None:
        predict(model, image, overlap=0.5, device=device, batch_size=batch)

    def reference() -> None:
        with torch.no_grad():
            out = sliding_window_inference(
                x,
                patch,
                batch,
                lambda w: torch.softmax(model.network(w), 1),
                overlap=0.5,
                mode="gaussian",
                sw_device=device,
                device="cpu",
            )
        out.numpy()

    times = interleaved_medians(ours, reference, 3 if quick else 5)
    for clock, (t_ours, t_ref) in times.items():
        report(
            f"unet predict speed (1 / {clock} s)",
            1.0 / t_ours,
            1.0 / t_ref,
            unit="1/s",
            target=0.9,
            higher_is_better=True,
            note=f"3D {shape}, window {patch}, batch {batch}, overlap 0.5, {device}; "
            f"ours {t_ours:.3f} s, reference {t_ref:.3f} s",
        )


def prediction_memory(quick: bool, device) -> None:
    import gc

    from napari_seglab.unet import predict

    shape = (64, 256, 256) if quick else (256, 512, 512)
    rng = np.random.default_rng(0)
    image = rng.integers(90, 400, size=shape, dtype=np.uint16)
    window = (16, 64, 64) if quick else (32, 128, 128)  # activations stay small next to the output
    model = _tiny_model(3, window, [2, 4])
    output_mib = 2 * int(np.prod(shape)) * 4 / 2**20
    result = {}

    def ours() -> None:
        result["p"] = predict(model, image, overlap=0.25, device=device, batch_size=2)

    predict(model, image[:16, :64, :64], device=device)  # imports and allocator warm-up
    peak = peak_memory(ours)
    assert result["p"].shape == (2, *shape)
    del result["p"]
    gc.collect()
    report(
        "unet predict peak memory / float32 output",
        peak,
        output_mib,
        unit="MiB",
        target=3.0,
        note=f"stack {shape} uint16, 2 classes, {device}",
    )


def gpu_autocast(quick: bool, device) -> None:
    """CUDA only: autocast prediction against fp32 (label agreement and time)."""
    from napari_seglab.data import nuclei_3d
    from napari_seglab.unet import predict, probabilities_to_labels, train

    sample = nuclei_3d(shape=(32, 128, 128) if quick else (64, 256, 256))
    model = train(
        sample.image, sample.semantic, spacing=sample.spacing, max_epochs=3, device=device
    )
    image = sample.image

    def amp() -> None:
        result["amp"] = predict(model, image, device=device)

    def fp32() -> None:
        result["fp32"] = predict(model, image, device=device, mixed_precision=False)

    result: dict = {}
    times = interleaved_medians(amp, fp32, 3 if quick else 5)
    agree = np.mean(
        probabilities_to_labels(result["amp"]) == probabilities_to_labels(result["fp32"])
    )
    t_amp, t_fp32 = times["wall"]
    report(
        "unet predict autocast vs fp32 (time)",
        t_amp,
        t_fp32,
        target=1.0,
        note=f"3D {image.shape}, {device}",
    )
    print(f"unet predict autocast vs fp32 label agreement: {100 * agree:.4f} % (target >= 99.9)")


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    from napari_seglab.device import resolve_device

    device = resolve_device("auto")
    if device.type == "cpu":
        import torch

        torch.set_num_threads(1)  # steadier timings on shared CPUs (see interleaved_medians)
    training_throughput(args.quick, device)
    prediction_speed(args.quick, device)
    prediction_memory(args.quick, device)
    if device.type == "cuda":
        gpu_autocast(args.quick, device)


if __name__ == "__main__":
    main()
