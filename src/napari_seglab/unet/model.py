"""A trained segmentation network with everything needed to use it again.

:class:`SegmentationModel` bundles the MONAI network with JSON-serialisable
metadata: architecture and constructor arguments, input layout (channels,
RGB, channel axis), class values, patch size, voxel spacing and the fitted
:class:`~napari_seglab.imaging.IntensityRecipe`. ``save`` writes one file
(``torch.save`` of the weights and a JSON string); ``load`` reads it back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..imaging import IntensityRecipe, channels_first
from . import architectures
from .families import family_module, resolve_family

#: Version of the on-disk layout written by :meth:`SegmentationModel.save`.
FORMAT_VERSION = 1
_FORMAT_NAME = "napari-seglab.unet"


@dataclass
class SegmentationModel:
    """A network plus the metadata that makes its predictions reproducible.

    Attributes
    ----------
    network : torch.nn.Module
        Maps ``(B, in_channels, *patch)`` to logits ``(B, len(classes), *patch)``.
    architecture : str
        Key of :data:`~napari_seglab.unet.architectures.ARCHITECTURES`: the model
        family (a MONAI network name or ``"deeplabv3plus"``); also :attr:`family`.
    network_kwargs : dict
        Constructor arguments (JSON-serialisable), besides dims and channels.
    spatial_dims : {2, 3}
        Spatial axes the network convolves over.
    in_channels : int
        Input channels (1 for greyscale, 3 for RGB, ...).
    classes : tuple of int
        Label value of each output channel; channel ``i`` predicts ``classes[i]``.
        Channel 0 is treated as background.
    patch_size : tuple of int
        Window size used in training and sliding-window prediction, spatial order.
    intensity : IntensityRecipe
        Fitted normalisation, applied to every input.
    rgb : bool
        Inputs are ``(*spatial, 3|4)`` RGB(A) images.
    channel_axis : int or None
        Axis of the channels for multi-channel (non-RGB) inputs.
    spacing : tuple of float or None
        Voxel size of the training data (informative; not used to resample).
    slicewise : bool
        The 2D network was trained on the planes of 3D stacks; prediction on a
        3D stack then runs plane by plane.
    history : list of dict
        Per-epoch training record, one
        :meth:`~napari_seglab.training_loop.EpochEvent.as_dict` row per epoch
        (epoch, step, samples, loss, validation, elapsed).
    """

    network: torch.nn.Module
    architecture: str
    network_kwargs: dict
    spatial_dims: int
    in_channels: int
    classes: tuple[int, ...]
    patch_size: tuple[int, ...]
    intensity: IntensityRecipe
    rgb: bool = False
    channel_axis: int | None = None
    spacing: tuple[float, ...] | None = None
    slicewise: bool = False
    history: list[dict] = field(default_factory=list)

    @property
    def family(self) -> str:
        """The model family (:data:`~napari_seglab.unet.families.FAMILY_NAMES`)."""
        return self.architecture

    @property
    def num_classes(self) -> int:
        """Number of output channels."""
        return len(self.classes)

    @property
    def best_dice(self) -> float | None:
        """Best validation Dice in :attr:`history`, None without validation.

        Reads ``validation["mean"]`` rows, and the ``val_dice`` of models saved
        before the shared training loop.
        """
        scores = []
        for row in self.history:
            value = (row.get("validation") or {}).get("mean", row.get("val_dice"))
            if value is not None and value == value:  # not NaN
                scores.append(float(value))
        return max(scores) if scores else None

    # ------------------------------------------------------------------ input
    def describe_input(self) -> str:
        """Human-readable expected input, e.g. ``"2D (Y, X) greyscale"``."""
        axes = "(Y, X)" if self.spatial_dims == 2 else "(Z, Y, X)"
        if self.rgb:
            return f"{self.spatial_dims}D RGB {axes[:-1]}, 3)"
        if self.channel_axis is not None:
            return (
                f"{self.spatial_dims}D {axes} with {self.in_channels} channels on axis "
                f"{self.channel_axis}"
            )
        return f"{self.spatial_dims}D {axes} greyscale"

    def check_input(
        self, image: np.ndarray, *, channel_axis: int | None = None, slicewise: bool | None = None
    ) -> bool:
        """Validate that ``image`` fits this model; return whether to predict plane by plane.

        Raises
        ------
        ValueError
            Naming the expected layout and the received shape when the number of
            axes, the dimensionality or the channel count does not fit.
        """
        shape = tuple(np.shape(image))
        axis = self.channel_axis if channel_axis is None else channel_axis
        has_channels = self.rgb or axis is not None
        ndim = len(shape) - (1 if has_channels else 0)
        slicewise = self.slicewise if slicewise is None else bool(slicewise)
        expected = self.describe_input()
        if ndim == self.spatial_dims + 1 and self.spatial_dims == 2 and slicewise:
            plane_by_plane = True
        elif ndim == self.spatial_dims:
            plane_by_plane = False
        elif ndim == 3 and self.spatial_dims == 2:
            hint = ""
            if not has_channels and shape[-1] in (3, 4):
                hint = " If this is an RGB image, the model was trained on greyscale data."
            raise ValueError(
                f"This model is 2D and expects {expected} images, but got an array of shape "
                f"{shape} (3D). Pass slicewise=True to predict plane by plane, or train a 3D "
                f"model.{hint}"
            )
        elif ndim == 2 and self.spatial_dims == 3:
            raise ValueError(
                f"This model is 3D and expects {expected} stacks, but got a 2D array of shape "
                f"{shape}."
            )
        else:
            raise ValueError(f"This model expects {expected} data, got an array of shape {shape}.")
        if self.rgb:
            if shape[-1] not in (3, 4):
                raise ValueError(
                    f"This model expects {expected} data (last axis of size 3), got shape {shape}."
                )
            channels = 3
        elif axis is not None:
            if not -len(shape) <= axis < len(shape):
                raise ValueError(
                    f"channel_axis={axis} is out of range for an image of shape {shape}."
                )
            channels = shape[axis]
        else:
            channels = 1
        if channels != self.in_channels:
            raise ValueError(
                f"This model expects {self.in_channels} input channel(s) ({expected}), got "
                f"{channels} channel(s) in an image of shape {shape}."
            )
        return plane_by_plane

    def prepare_input(self, image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
        """Channels-first, normalised float32 copy of ``image``: ``(C, *spatial)``.

        Call :meth:`check_input` first. The input array is never modified.
        """
        axis = self.channel_axis if channel_axis is None else channel_axis
        arr = channels_first(np.asarray(image), rgb=self.rgb, channel_axis=axis)
        recipe = IntensityRecipe.from_dict(self.intensity.to_dict())
        return np.ascontiguousarray(recipe.apply(arr), dtype=np.float32)

    # -------------------------------------------------------------- metadata
    def metadata(self) -> dict:
        """JSON-serialisable description of the model (everything but the weights)."""
        return {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "family": self.architecture,
            "architecture": self.architecture,
            "network_kwargs": self.network_kwargs,
            "spatial_dims": int(self.spatial_dims),
            "in_channels": int(self.in_channels),
            "classes": [int(c) for c in self.classes],
            "patch_size": [int(p) for p in self.patch_size],
            "intensity": self.intensity.to_dict(),
            "rgb": bool(self.rgb),
            "channel_axis": None if self.channel_axis is None else int(self.channel_axis),
            "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
            "slicewise": bool(self.slicewise),
            "history": self.history,
        }

    @classmethod
    def from_metadata(cls, meta: dict) -> SegmentationModel:
        """Build a model with freshly initialised weights from :meth:`metadata`."""
        resolve_family(meta["architecture"], None)
        network = build_network(
            meta["architecture"],
            int(meta["spatial_dims"]),
            int(meta["in_channels"]),
            len(meta["classes"]),
            meta["network_kwargs"],
        )
        return cls(
            network=network,
            architecture=meta["architecture"],
            network_kwargs=meta["network_kwargs"],
            spatial_dims=int(meta["spatial_dims"]),
            in_channels=int(meta["in_channels"]),
            classes=tuple(int(c) for c in meta["classes"]),
            patch_size=tuple(int(p) for p in meta["patch_size"]),
            intensity=IntensityRecipe.from_dict(meta["intensity"]),
            rgb=bool(meta.get("rgb", False)),
            channel_axis=meta.get("channel_axis"),
            spacing=None if meta.get("spacing") is None else tuple(meta["spacing"]),
            slicewise=bool(meta.get("slicewise", False)),
            history=list(meta.get("history", [])),
        )

    # ------------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write weights and metadata to ``path`` (atomically: temp file + rename).

        Returns
        -------
        pathlib.Path

        Raises
        ------
        ValueError
            If any weight is NaN or ±Inf (nothing is written).
        """
        from ..checkpoints import atomic_torch_save

        state = {k: v.detach().to("cpu").clone() for k, v in self.network.state_dict().items()}
        bad = [
            k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())
        ]
        if bad:
            raise ValueError(
                f"Refusing to save {path}: {len(bad)} weight tensor(s) hold NaN or ±Inf values "
                f"(first {bad[0]!r}); the model would predict nothing. Retrain it."
            )
        payload = {"metadata_json": json.dumps(self.metadata()), "state_dict": state}
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> SegmentationModel:
        """Read a model written by :meth:`save` (``torch.load(weights_only=True)``).

        The metadata is checked against the stored weights before the network
        is allocated: the network it describes is first built without memory
        (on PyTorch's ``meta`` device) and its parameter names and shapes must
        match the file's state dict.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            One line naming the file: it is not a napari-seglab U-Net model, is
            damaged, was written by a newer format version, or its metadata does
            not match its weights.
        """
        path = Path(path)
        if not path.is_file():
            found = "is a folder" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"Model file {str(path)!r} {found}.")
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:
            from ..checkpoints import load_error_text

            raise ValueError(
                f"{str(path)!r} is not a readable napari-seglab U-Net model: "
                f"{load_error_text(exc)}"
            ) from exc
        if not isinstance(payload, dict) or not {"metadata_json", "state_dict"} <= set(payload):
            found = sorted(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(
                f"{str(path)!r} is not a napari-seglab U-Net model: expected keys "
                f"'metadata_json' and 'state_dict', got {found}."
            )
        try:
            meta = json.loads(payload["metadata_json"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{str(path)!r} has unreadable metadata: {_first_line(exc)}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(
                f"{str(path)!r} is not a napari-seglab U-Net model (format {found!r})."
            )
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} uses model format {meta['format_version']}; this version of "
                f"napari-seglab reads format {FORMAT_VERSION} and older. Please upgrade."
            )
        state = payload["state_dict"]
        try:
            _check_weights_fit(meta, state)
            model = cls.from_metadata(meta)
            model.network.load_state_dict(state)
        except Exception as exc:
            raise ValueError(
                f"{str(path)!r} is a damaged napari-seglab U-Net model: {_first_line(exc)}"
            ) from exc
        model.network.eval()
        return model


def build_network(name: str, spatial_dims: int, in_channels: int, out_channels: int, kwargs):
    """The randomly initialised network of any family (see :mod:`.families`).

    A family module's ``build_network``, else
    :func:`.architectures.build_network` (MONAI, DeepLabV3+).
    """
    module = family_module(name)
    if module is not None:
        return module.build_network(spatial_dims, in_channels, out_channels, kwargs)
    return architectures.build_network(name, spatial_dims, in_channels, out_channels, kwargs)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's are multi-line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_weights_fit(meta: dict, state: object) -> None:
    """Check that ``meta`` describes a network whose parameters are ``state``'s.

    The network is built on the ``meta`` device (no memory), so metadata asking
    for huge layers cannot allocate anything.

    Raises
    ------
    ValueError
        Invalid metadata fields, or parameter names or shapes that differ.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("its 'state_dict' is not a dict of tensors")
    for key in ("architecture", "network_kwargs", "spatial_dims", "in_channels", "classes"):
        if key not in meta:
            raise ValueError(f"its metadata lacks {key!r}")
    dims, channels, classes = meta["spatial_dims"], meta["in_channels"], meta["classes"]
    if dims not in (2, 3):
        raise ValueError(f"its metadata has spatial_dims={dims!r} (expected 2 or 3)")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"its metadata has in_channels={channels!r}")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError(f"its metadata has classes={classes!r} (expected 2 or more)")
    if not isinstance(meta["network_kwargs"], dict):
        raise ValueError("its metadata has no network_kwargs dict")
    with torch.device("meta"):
        network = build_network(
            meta["architecture"], dims, channels, len(classes), meta["network_kwargs"]
        )
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise ValueError(
            f"its metadata describes another network than its weights ({len(missing)} "
            f"parameter(s) missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )
    for key, shape in expected.items():
        if stored[key] != shape:
            raise ValueError(
                f"its metadata describes another network than its weights: {key!r} is "
                f"{list(stored[key])} in the file but {list(shape)} by the metadata"
            )
