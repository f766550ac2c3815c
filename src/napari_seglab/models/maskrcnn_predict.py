"""Mask R-CNN prediction: instance labels of a 2D image or, plane by plane, of a 3D stack.

Each plane ``(C, Y, X)`` goes through the network at its pixel size (no
rescaling, see :mod:`.maskrcnn_net`); the detections' masks are pasted at
full resolution and overlaps resolved by score (:mod:`.instance_paste`). In
a stack the planes are predicted one by one and their ids linked (an object
of plane ``z + 1`` takes the id of the object of plane ``z`` it overlaps
best with IoU at least ``link_iou``, one to one; otherwise a new id), with
the linker of segment everything
(:func:`napari_seglab.sam.everything_labels.link_planes`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from ..jobs import CancelCheck, ProgressEvent, Stopwatch
from .instance_paste import paint_instances

__all__ = ["detect_planes", "predict_events"]


def detect_planes(network, planes: Sequence, device, mixed_precision: bool = True) -> list[dict]:
    """Raw detections of planes ``(C, Y, X)`` float32 (masks *not* pasted).

    The same steps as torchvision's ``GeneralizedRCNN.forward`` in eval mode
    but the last one: masks stay ``(N, 1, 28, 28)`` over their boxes, so
    :func:`~.instance_paste.paste_mask` can paste them box by box.

    Returns
    -------
    list of dict
        Per plane ``boxes`` ``(N, 4)``, ``scores`` ``(N,)``, ``masks``
        ``(N, 1, M, M)``, on the CPU, float32.
    """
    import torch

    from ..device import autocast

    tensors = [torch.from_numpy(np.ascontiguousarray(p, np.float32)).to(device) for p in planes]
    with torch.inference_mode(), autocast(device, enabled=mixed_precision):
        images, _ = network.transform(tensors)
        features = network.backbone(images.tensors)
        proposals, _ = network.rpn(images, features)
        detections, _ = network.roi_heads(features, proposals, images.image_sizes)
    return [
        {key: d[key].float().cpu() for key in ("boxes", "scores", "masks")} for d in detections
    ]


def predict_events(
    model,
    image: np.ndarray,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    min_size: int = 0,
    link_iou: float = 0.5,
    device="auto",
    batch_size: int | None = None,
    channel_axis: int | None = None,
    slicewise: bool | None = None,
    mixed_precision: bool = True,
    overlap: float | None = None,
    tta: bool = False,
    mc_dropout: bool = False,
    spacing: Sequence[float] | None = None,
    cancel=None,
) -> Generator[ProgressEvent, None, object]:
    """Predict instance labels with a Mask R-CNN :class:`~napari_seglab.unet.SegmentationModel`.

    Parameters
    ----------
    model : SegmentationModel
        Of the ``"maskrcnn"`` family.
    image : array
        ``(Y, X)`` or ``(Z, Y, X)`` (plus the model's channel axis or RGB
        axis). Never modified.
    score_threshold : float
        Detections scoring below it are not painted.
    mask_threshold : float
        Mask probability above which a pixel belongs to an object.
    min_size : int
        Objects with fewer pixels (after overlaps are resolved) are dropped.
    link_iou : float
        IoU linking an object to one of the plane before (stacks).
    device : str or torch.device
        ``"auto"`` picks CUDA > MPS > CPU.
    batch_size : int, optional
        Planes per forward pass (default 1).
    channel_axis : int, optional
        Overrides the model's channel axis.
    slicewise, overlap, spacing :
        Accepted for the shared prediction call: a stack is always predicted
        plane by plane, each plane whole (no windows), and the split needs no
        voxel size.
    mixed_precision : bool
        Autocast on CUDA.
    tta, mc_dropout : bool
        Not available for Mask R-CNN (True raises ValueError).
    cancel : threading.Event or callable, optional
        Checked between planes.

    Yields
    ------
    ProgressEvent
        ``"predicting"`` after each batch of planes, ``done`` of ``total`` planes.

    Returns
    -------
    Prediction
        ``probabilities`` ``(2, *spatial)`` float32 (background, and the highest
        object-mask probability), ``labels`` (0 or ``model.classes[1]``) and
        ``instances`` ``(*spatial)`` int32, objects numbered from 1.

    Raises
    ------
    ValueError
        The image does not fit the model, holds NaN/±Inf, or ``tta`` /
        ``mc_dropout`` was asked for.
    JobCancelled
        When ``cancel`` was set; nothing is returned.
    """
    from ..device import resolve_device
    from ..imaging import check_finite
    from ..sam.everything_labels import link_planes
    from ..unet.postprocess import Prediction

    if tta or mc_dropout:
        raise ValueError(
            "Flip test-time augmentation and Monte-Carlo dropout are not available for the "
            f"'maskrcnn' family (got tta={tta}, mc_dropout={mc_dropout})."
        )
    for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"Expected {name} in [0, 1], got {value}.")
    check, clock = CancelCheck(cancel), Stopwatch()
    stack = model.check_input(image, channel_axis=channel_axis, slicewise=True)
    check_finite(image)
    device = resolve_device(device)
    batch = int(batch_size) if batch_size else 1
    if batch < 1:
        raise ValueError(f"Expected a positive batch size, got {batch_size}.")
    x = model.prepare_input(image, channel_axis=channel_axis)
    planes = [x[:, z] for z in range(x.shape[1])] if stack else [x]
    shape = planes[0].shape[1:]
    network = model.network.to(device).eval()
    ids, foreground = [], []
    for start in range(0, len(planes), batch):
        check.raise_if_set("Prediction")
        part = planes[start : start + batch]
        for found in detect_planes(network, part, device, mixed_precision):
            plane_ids, plane_fg = paint_instances(
                found["scores"],
                found["boxes"],
                found["masks"],
                shape,
                score_threshold=score_threshold,
                mask_threshold=mask_threshold,
                min_size=min_size,
            )
            ids.append(plane_ids)
            foreground.append(plane_fg)
        yield ProgressEvent("predicting", start + len(part), len(planes), clock.elapsed)
    check.raise_if_set("Prediction")
    if stack:
        records = [[{"id": i} for i in range(1, int(p.max()) + 1)] for p in ids]
        instances, _ = link_planes(ids, records, min_iou=link_iou)
        fg = np.stack(foreground)
    else:
        instances, fg = ids[0], foreground[0]
    probabilities = np.stack([1.0 - fg, fg]).astype(np.float32)
    value = int(model.classes[1])
    dtype = np.min_scalar_type(value)
    labels = np.where(instances > 0, value, 0).astype(dtype)
    return Prediction(probabilities, labels, instances, None)
