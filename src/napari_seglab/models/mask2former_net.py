"""Mask2Former network pieces: building it, its training task and one plane's panoptic output.

See :mod:`.mask2former` for the family (training and prediction jobs).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import mask2former_data as m2d

#: What prediction gives (see :mod:`napari_seglab.unet.families`).
KIND = "panoptic"
#: Patch sides are multiples of this (Swin patch 4, three 2x merges).
MULTIPLE = 32
#: How to install the optional dependency.
INSTALL_HINT = 'pip install "napari-seglab[mask2former]"'


def require_transformers():
    """Import ``transformers`` or raise ImportError naming the extra to install."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            "The 'mask2former' model family needs the optional package 'transformers', which "
            f"is not installed: {INSTALL_HINT}"
        ) from exc
    return transformers


def mask2former_defaults() -> dict:
    """Network settings: a small Swin backbone and Mask2Former heads (random weights).

    ``things`` lists the thing classes (label values); every other class is stuff.
    """
    return {
        "things": [],
        "backbone": {
            "embed_dim": 48,
            "depths": [2, 2, 2, 2],
            "num_heads": [2, 4, 8, 16],
            "window_size": 8,
            "patch_size": 4,
        },
        "feature_size": 128,
        "mask_feature_size": 128,
        "hidden_dim": 128,
        "encoder_feedforward_dim": 512,
        "encoder_layers": 3,
        "decoder_layers": 4,
        "num_attention_heads": 4,
        "dim_feedforward": 512,
        "num_queries": 50,
        "train_num_points": 4096,
    }


def network_settings(overrides: dict | None) -> dict:
    """:func:`mask2former_defaults` with ``overrides`` (``backbone`` merged key by key)."""
    settings = mask2former_defaults()
    for key, value in (overrides or {}).items():
        if key == "backbone":
            settings["backbone"] = {**settings["backbone"], **dict(value)}
        else:
            settings[key] = value
    settings["things"] = sorted(int(t) for t in settings["things"])
    return settings


def build_network(spatial_dims: int, in_channels: int, out_channels: int, kwargs: dict):
    """A randomly initialised ``Mask2FormerForUniversalSegmentation`` (no download).

    Parameters
    ----------
    spatial_dims : int
        Must be 2.
    in_channels : int
        Image channels.
    out_channels : int
        Number of classes (background included); the network adds "no object".
    kwargs : dict
        :func:`network_settings` (``things`` is not a network argument).

    Raises
    ------
    ValueError
        For 3D, or arguments ``transformers`` refuses.
    ImportError
        Without ``transformers`` (naming :data:`INSTALL_HINT`).
    """
    if int(spatial_dims) != 2:
        raise ValueError(
            f"The 'mask2former' family is 2D, got spatial_dims={spatial_dims}: 3D stacks train "
            "on their planes and predict plane by plane."
        )
    require_transformers()
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    args = network_settings(kwargs)
    args.pop("things")
    backbone = args.pop("backbone")
    try:
        backbone_config = SwinConfig(
            num_channels=int(in_channels),
            out_features=["stage1", "stage2", "stage3", "stage4"],
            **backbone,
        )
        config = Mask2FormerConfig(
            backbone_config=backbone_config, num_labels=int(out_channels), **args
        )
        return Mask2FormerForUniversalSegmentation(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"Invalid arguments for the 'mask2former' family: {exc}") from exc


class Mask2FormerTask:
    """Mask2Former as a :class:`~napari_seglab.training_loop.TrainingTask`."""

    def __init__(self, network, planes, val_planes, patch, batch, steps, thing_index, **options):
        self.network = network
        self.planes = planes
        self.val_planes = val_planes
        self.patch = tuple(patch)
        self.batch = int(batch)
        self.steps = int(steps)
        self.thing_index = set(thing_index)
        self.stuff_index = [int(i) for i in options["stuff_index"]]
        self.device = options["device"]
        self.augment = bool(options["augment"])
        self.rng = np.random.default_rng(options["seed"])
        self.step = 0

    def parameters(self):
        return self.network.parameters()

    def batches(self, epoch: int):
        weights = np.array([p.classes.size for p in self.planes], dtype=np.float64)
        weights /= weights.sum()
        for _ in range(self.steps):
            picks = self.rng.choice(len(self.planes), size=self.batch, p=weights)
            yield [
                m2d.random_crop(self.planes[i], self.patch, self.rng, self.augment) for i in picks
            ]

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(np.stack([crop.image for crop in batch])).to(self.device)
        masks, labels = [], []
        for crop in batch:
            m, c = m2d.segment_targets(crop, self.thing_index)
            masks.append(torch.from_numpy(m).to(self.device))
            labels.append(torch.from_numpy(c).to(self.device))
        output = self.network(pixel_values=pixels, mask_labels=masks, class_labels=labels)
        self.step += 1
        value = output.loss.detach()
        if not bool(torch.isfinite(value)):
            raise RuntimeError(
                f"Training stopped at step {self.step}: the loss became {float(value):g}. Try a "
                "lower learning rate."
            )
        return output.loss, len(batch)

    def validate(self) -> dict[str, float]:
        """``{"mean": panoptic quality}`` on the held-out strips (non-background classes)."""
        from ..metrics import panoptic

        scores = []
        for plane in self.val_planes:
            index, instances, _ = predict_plane(
                self.network, plane.image, self.thing_index, self.stuff_index, self.device
            )
            gt_instances = np.where(
                np.isin(plane.classes, list(self.thing_index)), plane.instances, 0
            )
            result = panoptic(
                np.where(index < 0, -2, index),
                instances,
                plane.classes,
                gt_instances,
                things=self.thing_index,
                stuff=[i for i in self.stuff_index if i != 0],
                ignore_label=m2d.UNLABELLED,
            )
            if not math.isnan(result["pq"]):
                scores.append(result["pq"])
        return {"mean": float(np.mean(scores))} if scores else {}

    def train_mode(self, training: bool) -> None:
        self.network.train(training)

    def snapshot(self):
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def restore(self, snapshot) -> None:
        self.network.load_state_dict(snapshot)


@torch.no_grad()
def predict_plane(
    network,
    image_cf: np.ndarray,
    thing_index,
    stuff_index,
    device,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panoptic output of one plane ``(C, Y, X)`` (normalised).

    Returns
    -------
    class_index : int64 ``(Y, X)``
        Class index of each pixel's segment, -1 where no segment lies.
    instances : int32 ``(Y, X)``
        Object ids from 1 for segments of thing classes, 0 elsewhere.
    probabilities : float32 ``(K, Y, X)``
        Semantic class probabilities (query classes weighted by their masks).
    """
    from transformers.models.mask2former.image_processing_mask2former import compute_segments

    _, height, width = image_cf.shape
    pad_y, pad_x = (-height) % MULTIPLE, (-width) % MULTIPLE
    mode = "reflect" if height > pad_y and width > pad_x else "edge"
    padded = np.pad(image_cf, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)
    was_training = network.training
    network.eval()
    output = network(pixel_values=torch.from_numpy(np.ascontiguousarray(padded))[None].to(device))
    network.train(was_training)
    size = padded.shape[1:]
    class_probs = output.class_queries_logits[0].float().softmax(-1)  # (Q, K + 1)
    masks = torch.nn.functional.interpolate(
        output.masks_queries_logits.float(), size=size, mode="bilinear", align_corners=False
    )[0].sigmoid()  # (Q, Y, X)
    semantic = torch.einsum("qk,qyx->kyx", class_probs[:, :-1], masks)
    semantic = semantic / semantic.sum(0, keepdim=True).clamp_min(1e-6)
    scores, labels = class_probs.max(-1)
    keep = (labels != class_probs.shape[-1] - 1) & (scores > score_threshold)
    index = np.full(size, -1, dtype=np.int64)
    instances = np.zeros(size, dtype=np.int32)
    if bool(keep.any()):
        segmentation, segments = compute_segments(
            mask_probs=masks[keep].clone(),
            pred_scores=scores[keep],
            pred_labels=labels[keep],
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_threshold,
            label_ids_to_fuse=set(stuff_index),
        )
        segmentation = segmentation.cpu().numpy()
        next_id = 1
        for segment in segments:
            region = segmentation == segment["id"]
            index[region] = segment["label_id"]
            if segment["label_id"] in thing_index:
                instances[region] = next_id
                next_id += 1
    crop = (slice(0, height), slice(0, width))
    return index[crop], instances[crop], semantic[:, :height, :width].cpu().numpy()
