"""Turning image-layer data into the arrays the models need, in one place.

Axis conventions (see ``docs/index.md``, "Conventions"): 2D images are ``(Y, X)`` or
``(Y, X, 3)`` RGB(A); 3D stacks are ``(Z, Y, X)``, optionally with a trailing RGB
axis or a named channel axis. Models take channels-first arrays
``(C, *spatial)``.

Intensity recipes are small JSON-serialisable objects (:class:`IntensityRecipe`)
so that a trained model can store exactly how its inputs were scaled.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: CT windows as ``(level, width)`` in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (80.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (300.0, 1500.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}

#: Largest number of voxels used to estimate percentiles; bigger arrays are
#: sampled on a regular stride (deterministic), which keeps normalisation of a
#: multi-GB stack to one pass over a small subset.
PERCENTILE_SAMPLE = 2_000_000


def channels_first(
    image: np.ndarray, *, rgb: bool = False, channel_axis: int | None = None
) -> np.ndarray:
    """Return ``image`` as ``(C, *spatial)`` without copying when possible.

    Parameters
    ----------
    image : array, shape ``(*spatial)``, ``(*spatial, 3|4)`` or with a channel axis
        Image-layer data.
    rgb : bool
        The last axis holds RGB(A) colour (napari's ``layer.rgb``). An alpha
        channel is dropped.
    channel_axis : int, optional
        Axis holding channels (for multi-channel data that napari shows as
        separate layers). Ignored when ``rgb`` is True.

    Returns
    -------
    array, shape ``(C, *spatial)``
        ``C == 1`` for greyscale data.
    """
    arr = np.asarray(image)
    if rgb:
        if arr.ndim < 3 or arr.shape[-1] not in (3, 4):
            raise ValueError(
                f"Expected an RGB(A) image with a last axis of size 3 or 4, got shape {arr.shape}."
            )
        return np.moveaxis(arr[..., :3], -1, 0)
    if channel_axis is not None:
        if not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {arr.shape}."
            )
        return np.moveaxis(arr, channel_axis, 0)
    return arr[np.newaxis]


def spatial_ndim(image: np.ndarray, *, rgb: bool = False, channel_axis: int | None = None) -> int:
    """Number of spatial axes (2 or 3) of layer data; raises for anything else."""
    ndim = np.ndim(image) - (1 if rgb or channel_axis is not None else 0)
    if ndim not in (2, 3):
        raise ValueError(
            f"Expected a 2D (Y, X) image or a 3D (Z, Y, X) stack, got {ndim} spatial axes "
            f"(shape {np.shape(image)}, rgb={rgb}, channel_axis={channel_axis})."
        )
    return ndim


def non_finite(image: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    """Count the NaN/±Inf values of ``image`` and find the first one.

    Scans plane by plane along the first axis, so a large stack needs no
    full-size boolean mask. Integer and boolean arrays are finite by type.

    Parameters
    ----------
    image : array, any shape and real dtype
        Layer data in napari's axis order.

    Returns
    -------
    count : int
        Number of non-finite values.
    first : tuple of int or None
        Index of the first one in C order (napari's axis order), None when
        there is none.
    """
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.inexact) or arr.size == 0:
        return 0, None
    if arr.ndim == 0:
        bad = not np.isfinite(arr)
        return int(bad), (() if bad else None)
    count, first = 0, None
    for i in range(arr.shape[0]):
        mask = ~np.isfinite(arr[i])
        n = int(np.count_nonzero(mask))
        if n and first is None:
            rest = np.unravel_index(int(np.argmax(mask)), mask.shape)
            first = (i, *(int(r) for r in rest))
        count += n
    return count, first


def check_finite(image: np.ndarray, *, what: str = "image") -> None:
    """Refuse an image that holds NaN or ±Inf values.

    One non-finite pixel turns every network output it reaches into NaN (and
    every predicted label into background), and a NaN loss ruins training, so
    the models refuse such input rather than guess a replacement value.

    Parameters
    ----------
    image : array
        Layer data in napari's axis order.
    what : str
        How the error message names the array (``"image"``, ``"image 2 of 3"``).

    Raises
    ------
    ValueError
        Naming how many values are not finite, the index of the first one (napari
        axis order) and the array's shape.
    """
    count, first = non_finite(image)
    if count:
        shape = tuple(np.shape(image))
        size = int(np.prod(shape))
        raise ValueError(
            f"The {what} holds {count} non-finite value(s) (NaN or ±Inf) of {size}; "
            f"the first at index {first} (napari axis order, shape {shape}). Replace or mask "
            "them first, for example with numpy.nan_to_num."
        )


def sample_step(size: int, limit: int = PERCENTILE_SAMPLE) -> int:
    """Stride of the sample :func:`percentile_range` takes of ``size`` values (1: all)."""
    return int(np.ceil(size / limit)) if size > limit else 1


def _sample(values: np.ndarray, limit: int = PERCENTILE_SAMPLE) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    flat = flat[:: sample_step(flat.size, limit)]
    flat = flat.astype(np.float64, copy=False)
    return flat[np.isfinite(flat)]


def _range_of(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"Expected 0 <= low < high <= 100, got low={low}, high={high}.")
    if values.size == 0:
        raise ValueError("Cannot normalise an image that holds no finite values.")
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def percentile_range(
    image: np.ndarray, low: float = 1.0, high: float = 99.8
) -> tuple[float, float]:
    """Intensity values at the ``low`` and ``high`` percentiles (sampled for big arrays)."""
    return _range_of(_sample(image), low, high)


def percentile_range_by_slabs(
    image: Any, low: float = 1.0, high: float = 99.8, *, slab_elements: int = 2**24
) -> tuple[float, float]:
    """:func:`percentile_range` of an array read a slab of axis 0 at a time.

    For arrays too large to load (zarr, dask, memmaps): the same strided
    sample of the values in C order, hence the same result, with at most about
    ``slab_elements`` values in memory.

    Parameters
    ----------
    image : array-like
        Anything with ``shape`` that numpy slicing along axis 0 reads.
    """
    shape = tuple(int(n) for n in image.shape)
    size = int(np.prod(shape, dtype=np.int64))
    step = sample_step(size)
    row = max(1, size // max(shape[0], 1)) if shape else 1
    rows = max(1, slab_elements // row)
    parts = []
    for start in range(0, shape[0] if shape else 1, rows):
        slab = np.asarray(image[start : start + rows] if shape else image).reshape(-1)
        offset = (-start * row) % step
        part = slab[offset::step].astype(np.float64, copy=False)
        parts.append(part[np.isfinite(part)])
    return _range_of(np.concatenate(parts) if parts else np.zeros(0), low, high)


def rescale(image: np.ndarray, lo: float, hi: float, *, clip: bool = True) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to ``[0, 1]`` as float32 (a flat image maps to 0)."""
    out = np.asarray(image, dtype=np.float32) - np.float32(lo)
    scale = float(hi) - float(lo)
    if scale > 0:
        out /= np.float32(scale)
    else:
        out[...] = 0.0
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def normalize_percentile(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, *, clip: bool = True
) -> np.ndarray:
    """Percentile normalisation to float32 ``[0, 1]`` (the default for microscopy)."""
    return rescale(image, *percentile_range(image, low, high), clip=clip)


def window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """CT windowing: map ``[level - width/2, level + width/2]`` to float32 ``[0, 1]``."""
    if width <= 0:
        raise ValueError(f"Expected a positive window width, got {width}.")
    return rescale(image, level - width / 2.0, level + width / 2.0, clip=True)


@dataclass
class IntensityRecipe:
    """How raw intensities become network input; stored with trained models.

    Attributes
    ----------
    kind : {"percentile", "window", "zscore", "none"}
        ``percentile``: rescale ``[p_low, p_high]`` to ``[0, 1]``;
        ``window``: CT window ``(level, width)`` (``preset`` names one of
        :data:`CT_WINDOWS`); ``zscore``: subtract mean, divide by std;
        ``none``: cast to float32.
    params : dict
        Recipe parameters (``low``/``high`` percentiles, ``level``/``width``).
    stats : dict
        Values fitted on the training image (``lo``/``hi`` or ``mean``/``std``);
        empty until :meth:`fit` is called. ``apply`` reuses them, so training and
        prediction see identical scaling.
    """

    kind: str = "percentile"
    params: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    KINDS = ("percentile", "window", "zscore", "none")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(
                f"Unknown intensity recipe {self.kind!r}: expected one of {self.KINDS}."
            )
        if self.kind == "window":
            preset = self.params.get("preset")
            if preset is not None:
                if preset not in CT_WINDOWS:
                    raise ValueError(
                        f"Unknown CT window {preset!r}: expected one of {sorted(CT_WINDOWS)}."
                    )
                level, width = CT_WINDOWS[preset]
                self.params = {"preset": preset, "level": level, "width": width}
            elif not {"level", "width"} <= set(self.params):
                raise ValueError("A 'window' recipe needs a 'preset' or both 'level' and 'width'.")

    def fit(self, image: np.ndarray) -> IntensityRecipe:
        """Fit the statistics on ``image`` (channels share one set) and return self."""
        if self.kind == "percentile":
            lo, hi = percentile_range(
                image, self.params.get("low", 1.0), self.params.get("high", 99.8)
            )
            self.stats = {"lo": lo, "hi": hi}
        elif self.kind == "zscore":
            values = _sample(image)
            self.stats = {"mean": float(values.mean()), "std": float(values.std() or 1.0)}
        return self

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Scale ``image`` to float32 with the fitted statistics (fitting first if needed)."""
        if self.kind == "window":
            return window(image, self.params["level"], self.params["width"])
        if self.kind == "none":
            return np.asarray(image, dtype=np.float32)
        if not self.stats:
            self.fit(image)
        if self.kind == "percentile":
            return rescale(image, self.stats["lo"], self.stats["hi"], clip=False)
        out = np.asarray(image, dtype=np.float32) - np.float32(self.stats["mean"])
        out /= np.float32(self.stats["std"])
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IntensityRecipe:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=data["kind"],
            params=dict(data.get("params", {})),
            stats=dict(data.get("stats", {})),
        )


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Convert a 2D image to the ``(Y, X, 3)`` uint8 RGB that SAM expects.

    The one documented rule: uint8 RGB(A) passes through (alpha dropped); any
    other input is percentile-normalised (1 %–99.8 %, jointly over all channels)
    to ``[0, 255]``; greyscale is replicated to three channels.

    Parameters
    ----------
    image : array, shape ``(Y, X)`` or ``(Y, X, 3|4)``, any real dtype

    Returns
    -------
    array, shape ``(Y, X, 3)``, uint8
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(
            f"Expected a 2D image (Y, X) or (Y, X, 3), got shape {arr.shape}; "
            "pass one plane of a stack at a time."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"Expected a numeric image, got dtype {arr.dtype}.")
    if arr.dtype != np.uint8:
        count, first = non_finite(arr)
        scaled = normalize_percentile(arr) * np.float32(255.0)
        if count:
            warnings.warn(
                f"The image has {count} NaN/infinite pixels (first at {first}): they are shown "
                "as black (NaN, -Inf) or white (+Inf).",
                UserWarning,
                stacklevel=2,
            )
            np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        arr = (scaled + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., np.newaxis], 3, axis=-1)
    return np.ascontiguousarray(arr)
