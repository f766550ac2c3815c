"""Sliding-window prediction.

:func:`predict` returns class probabilities ``(C, *spatial)`` float32 for a
2D image or 3D stack. Windows run on the chosen device (autocast on CUDA);
the blended result is accumulated on the CPU, so a large stack only needs the
GPU memory of one batch of windows. Each window's softmax is blended with a
Gaussian weight by MONAI's ``sliding_window_inference``; flip test-time
augmentation averages the flipped predictions of each window.

:func:`predict_events` is the same computation as a job (see
:mod:`napari_seglab.jobs`): a generator yielding :class:`PredictionProgress`
that raises :class:`~napari_seglab.jobs.JobCancelled` when cancelled.
Post-processing (labels, instances) lives in :mod:`.postprocess`.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..device import autocast, resolve_device
from ..imaging import check_finite
from ..jobs import CancelCheck, JobCancelled, ProgressEvent, Stopwatch, run_to_end
from .families import family_module
from .model import SegmentationModel

#: Former name of :class:`~napari_seglab.jobs.JobCancelled` (the same class).
PredictionCancelled = JobCancelled


@dataclass(frozen=True)
class PredictionProgress(ProgressEvent):
    """Progress of a prediction: ``done`` of ``total`` windows (``stage == "predicting"``)."""


def relay_progress(
    events: Generator[PredictionProgress, None, np.ndarray], index: int, count: int, stage: str
) -> Generator[PredictionProgress, None, np.ndarray]:
    """Re-yield the events of prediction ``index`` of ``count`` as progress of all of them.

    For jobs that predict several times (Monte-Carlo dropout passes): window
    counts are offset so that ``done``/``total`` run over every pass.
    """
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        total = count * event.total
        yield replace(event, stage=stage, done=index * event.total + event.done, total=total)


def dropout_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """Dropout layers of ``network`` with a non-zero drop probability."""
    kinds = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)
    return [m for m in network.modules() if isinstance(m, kinds) and m.p > 0]


def count_windows(spatial_shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows ``sliding_window_inference`` visits for one image."""
    total = 1
    for size, roi in zip(spatial_shape, roi_size):
        size = max(int(size), int(roi))
        if size == roi:
            continue
        interval = max(int(roi * (1.0 - overlap)), 1)
        total *= math.ceil((size - roi) / interval) + 1
    return total


def flip_combinations(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of spatial axes (as tensor dims of a ``(B, C, *spatial)`` batch)."""
    axes = range(2, 2 + spatial_dims)
    return [c for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]


def make_window_predictor(
    network: torch.nn.Module,
    device: torch.device,
    *,
    tta: bool = False,
    on_windows: Callable[[int], None] | None = None,
    mixed_precision: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Window function for ``sliding_window_inference``: logits → softmax probabilities.

    Runs under CUDA autocast (the caller provides ``torch.inference_mode``),
    returns float32.
    With ``tta`` the probabilities of all flip combinations are averaged.
    ``on_windows(n)`` is called after each batch of ``n`` windows.
    """
    spatial_dims = None

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        nonlocal spatial_dims
        spatial_dims = windows.ndim - 2
        flips = flip_combinations(spatial_dims) if tta else [()]
        with autocast(device, enabled=mixed_precision):
            total = None
            for dims in flips:
                x = torch.flip(windows, dims) if dims else windows
                probs = torch.softmax(network(x).float(), dim=1)
                if dims:
                    probs = torch.flip(probs, dims)
                total = probs if total is None else total + probs
            if len(flips) > 1:
                total /= len(flips)
        if on_windows is not None:
            on_windows(int(windows.shape[0]))
        return total

    return predictor


def sliding_window_probabilities(
    network: torch.nn.Module,
    image: np.ndarray,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    tta: bool = False,
    on_windows: Callable[[int], None] | None = None,
    mixed_precision: bool = True,
) -> np.ndarray:
    """Blend windowed softmax probabilities over a whole image.

    Parameters
    ----------
    network : torch.nn.Module
        Already on ``device``; put in eval mode by the caller.
    image : array, ``(C, *spatial)`` float32
        Normalised input (stays on the CPU; windows are copied to ``device``).
    roi_size : sequence of int
        Window size, spatial order.

    Returns
    -------
    array, ``(K, *spatial)`` float32
    """
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    inputs = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    predictor = make_window_predictor(
        network, device, tta=tta, on_windows=on_windows, mixed_precision=mixed_precision
    )
    with torch.inference_mode():
        output = sliding_window_inference(
            inputs,
            roi_size=tuple(int(r) for r in roi_size),
            sw_batch_size=int(batch_size),
            predictor=predictor,
            overlap=float(overlap),
            mode="gaussian",
            sw_device=device,
            device=torch.device("cpu"),
        )
    return output[0].numpy()


def default_batch_size(model: SegmentationModel, device: torch.device) -> int:
    """Windows per forward pass: more on GPUs, few on CPUs."""
    if device.type == "cuda":
        return 8 if model.spatial_dims == 3 else 32
    return 2 if model.spatial_dims == 3 else 8


def predict(
    model: SegmentationModel,
    image: np.ndarray,
    *,
    overlap: float = 0.5,
    tta: bool = False,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    channel_axis: int | None = None,
    slicewise: bool | None = None,
    progress: Callable[[PredictionProgress], None] | None = None,
    cancel=None,
    mc_dropout: bool = False,
    mixed_precision: bool = True,
) -> np.ndarray:
    """Class probabilities for a whole image or stack.

    Parameters
    ----------
    model : SegmentationModel
    image : array
        Layer data in the model's layout: ``(Y, X)``, ``(Z, Y, X)``, RGB
        ``(..., 3)`` or with the model's channel axis. Never modified.
    overlap : float in [0, 1)
        Fraction of window overlap; blended with Gaussian weights.
    tta : bool
        Average over flips of every spatial axis (4x work in 2D, 8x in 3D).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``...; windows run there, the result
        is stitched on the CPU.
    batch_size : int, optional
        Windows per forward pass (default depends on device and dims).
    channel_axis : int, optional
        Overrides the model's channel axis.
    slicewise : bool, optional
        Predict a 3D stack plane by plane with a 2D model (default: as trained).
    progress : callable, optional
        Called with :class:`PredictionProgress` after each batch of windows.
    cancel : threading.Event or callable, optional
        Checked after each batch; when set,
        :class:`~napari_seglab.jobs.JobCancelled` is raised.
    mc_dropout : bool
        Keep dropout layers sampling (one Monte-Carlo dropout pass).
    mixed_precision : bool
        Autocast (bf16/fp16) on CUDA; False runs fp32 everywhere.

    Returns
    -------
    array, ``(C, *spatial)`` float32
        ``C == len(model.classes)``; channel ``i`` is the probability of label
        value ``model.classes[i]``; spatial axes as the input's. For a family
        with its own module (``"maskrcnn"``) the module's prediction gives them
        (Mask R-CNN: the highest object-mask probability as the foreground
        channel); its instance labels come from
        :func:`~.postprocess.predict_and_split`.

    Raises
    ------
    ValueError
        If the image does not fit the model (dimensionality, channels), or holds
        NaN/±Inf values (the message gives their count and the index of the
        first one, napari axis order): one such pixel would make every window
        it touches NaN and every label background.
    JobCancelled
        When ``cancel`` was set.
    """
    module = family_module(model.architecture)
    if module is not None:  # a family with its own prediction (Mask R-CNN ...)
        job = module.predict_events(
            model,
            image,
            overlap=overlap,
            tta=tta,
            device=device,
            batch_size=batch_size,
            channel_axis=channel_axis,
            slicewise=slicewise,
            mc_dropout=mc_dropout,
            mixed_precision=mixed_precision,
            cancel=cancel,
        )
        return run_to_end(job, progress).probabilities
    check = CancelCheck(cancel)
    clock = Stopwatch()
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"Expected 0 <= overlap < 1, got {overlap}.")
    plane_by_plane = model.check_input(image, channel_axis=channel_axis, slicewise=slicewise)
    check_finite(image)
    device = resolve_device(device)
    batch = int(batch_size) if batch_size else default_batch_size(model, device)
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")
    x = model.prepare_input(image, channel_axis=channel_axis)
    planes = [x[:, z] for z in range(x.shape[1])] if plane_by_plane else [x]
    per_plane = count_windows(planes[0].shape[1:], model.patch_size, overlap)
    total = per_plane * len(planes)
    done = 0

    def on_windows(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(PredictionProgress("predicting", done, total, clock.elapsed))
        check.raise_if_set("Prediction")

    network = model.network.to(device)
    network.eval()
    if mc_dropout:
        for layer in dropout_layers(network):
            layer.train()
    try:
        window_kwargs = {
            "overlap": overlap,
            "batch_size": batch,
            "device": device,
            "tta": tta,
            "on_windows": on_windows,
            "mixed_precision": mixed_precision,
        }
        if len(planes) == 1:
            return sliding_window_probabilities(network, x, model.patch_size, **window_kwargs)
        out = np.empty((model.num_classes, *x.shape[1:]), dtype=np.float32)
        for z, plane in enumerate(planes):
            out[:, z] = sliding_window_probabilities(
                network, plane, model.patch_size, **window_kwargs
            )
        return out
    finally:
        network.eval()


def predict_events(
    model: SegmentationModel, image: np.ndarray, *, cancel=None, **kwargs
) -> Generator[PredictionProgress, None, np.ndarray]:
    """:func:`predict` as a job yielding :class:`PredictionProgress` events.

    The computation runs in a helper thread; this generator relays its
    progress. Setting ``cancel`` (a ``threading.Event`` or callable) or
    closing the generator stops it after the current batch of windows.

    Returns
    -------
    array ``(C, *spatial)`` float32
        The generator's return value (``StopIteration.value``; napari's
        ``thread_worker`` emits it as ``returned``).

    Raises
    ------
    JobCancelled
        When ``cancel`` was set (no partial result).
    """
    module = family_module(model.architecture)
    if module is not None:  # a family with its own prediction job (Mask R-CNN ...)
        result = yield from module.predict_events(model, image, cancel=cancel, **kwargs)
        return result.probabilities
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    check = CancelCheck(cancel)
    result: dict = {}

    def should_stop() -> bool:
        return stop.is_set() or check.is_set()

    def run() -> None:
        try:
            result["value"] = predict(
                model, image, progress=events.put, cancel=should_stop, **kwargs
            )
        except JobCancelled:
            pass
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            events.put(None)

    worker = threading.Thread(target=run, name="seglab-unet-predict", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            if event is None or should_stop():
                break
            yield event
    finally:
        stop.set()
        worker.join()
    if "error" in result:
        raise result["error"]
    check.raise_if_set("Prediction")
    if "value" not in result:
        raise JobCancelled("Prediction was cancelled.")
    return result["value"]
