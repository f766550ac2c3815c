"""Images and stacks as SAM sees them: uint8 RGB planes, normalised one way.

The one rule (shared with :func:`napari_seglab.imaging.to_uint8_rgb`): uint8
data passes through; any other dtype is rescaled from its 1 %–99.8 %
percentiles to ``[0, 255]``. For a stack the percentiles are taken over the
whole stack once, so every plane gets the same scaling (a plane's embedding
does not depend on which other plane was shown first). Greyscale is repeated
to three channels.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from ..imaging import percentile_range

__all__ = ["SamInput", "content_hash", "plane_hash"]


def plane_hash(rgb: np.ndarray) -> str:
    """Content hash of a ``(Y, X, 3)`` uint8 plane (BLAKE2b, 128 bit, includes the shape)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def content_hash(raw: np.ndarray) -> str:
    """Content hash of any array (BLAKE2b, 128 bit, includes shape and dtype)."""
    raw = np.ascontiguousarray(raw)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{raw.shape}{raw.dtype.str}".encode())
    digest.update(raw.view(np.uint8).reshape(-1).data if raw.size else b"")
    return digest.hexdigest()


class SamInput:
    """A 2D image or a stack of planes, prepared for SAM.

    Parameters
    ----------
    data : array
        ``(Y, X)``, ``(Y, X, 3|4)`` (RGB(A)), ``(Z, Y, X)`` or ``(Z, Y, X, 3|4)``.
        Lazy arrays (dask, zarr) are read one plane at a time. Never modified.
    rgb : bool, optional
        Whether the last axis is colour. None guesses: a last axis of 3 or 4
        on a 3-axis array is RGB (napari's rule), and on 4 axes always.
    value_range : (float, float), optional
        Intensity range mapped to ``[0, 255]`` for non-uint8 data; default the
        1 %–99.8 % percentiles of the whole array.

    Attributes
    ----------
    is_stack : bool
    n_planes : int
        1 for a 2D image.
    plane_shape : (int, int)
        ``(Y, X)``.
    """

    def __init__(
        self,
        data: np.ndarray,
        *,
        rgb: bool | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        shape = tuple(np.shape(data))
        if rgb is None:
            rgb = (len(shape) == 3 and shape[-1] in (3, 4)) or (
                len(shape) == 4 and shape[-1] in (3, 4)
            )
        spatial = len(shape) - (1 if rgb else 0)
        if rgb and shape[-1] not in (3, 4):
            raise ValueError(f"Expected an RGB(A) last axis of size 3 or 4, got shape {shape}.")
        if spatial not in (2, 3):
            raise ValueError(
                "Expected a 2D image (Y, X) / (Y, X, 3) or a stack (Z, Y, X) / (Z, Y, X, 3), "
                f"got shape {shape} (rgb={rgb})."
            )
        # (not getattr(data, "dtype", np.asarray(data).dtype): that loads a lazy stack whole)
        dtype = np.dtype(data.dtype if hasattr(data, "dtype") else np.asarray(data).dtype)
        if not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
            raise ValueError(f"Expected a numeric image, got dtype {dtype}.")
        self.data = data
        self.rgb = bool(rgb)
        self.is_stack = spatial == 3
        self.n_planes = shape[0] if self.is_stack else 1
        self.plane_shape = tuple(shape[1:3] if self.is_stack else shape[:2])
        self.dtype = dtype
        self._range = value_range

    @property
    def value_range(self) -> tuple[float, float] | None:
        """Intensity range mapped to ``[0, 255]`` (None for uint8 data)."""
        if self.dtype == np.uint8:
            return None
        if self._range is None:
            self._range = percentile_range(self._range_sample(), 1.0, 99.8)
        return self._range

    def _range_sample(self) -> np.ndarray:
        """The pixels the intensity range is taken from.

        In-memory data: all of it. Lazy data (dask, zarr, a memory map) of a
        stack: up to :data:`RANGE_PLANES` evenly spaced planes, so that opening a
        large OME-Zarr stack reads a few planes, never the whole stack.
        """
        if isinstance(self.data, np.ndarray) and not isinstance(self.data, np.memmap):
            return self.data
        if not self.is_stack:
            return np.asarray(self.data)
        count = min(self.n_planes, RANGE_PLANES)
        planes = np.unique(np.linspace(0, self.n_planes - 1, count).round().astype(int))
        return np.stack([np.asarray(self.data[int(i)]) for i in planes])

    def raw_plane(self, index: int | None = None) -> np.ndarray:
        """Plane ``index`` of the data as stored, ``(Y, X)`` or ``(Y, X, C)``."""
        if not self.is_stack:
            return np.asarray(self.data)
        if index is None:
            raise ValueError(f"A stack of {self.n_planes} planes needs a plane index.")
        if not -self.n_planes <= index < self.n_planes:
            raise ValueError(
                f"Plane {index} is out of range for a stack of {self.n_planes} planes."
            )
        return np.asarray(self.data[index])

    def plane(self, index: int | None = None) -> np.ndarray:
        """Plane ``index`` as ``(Y, X, 3)`` uint8 RGB (a new array)."""
        raw = self.raw_plane(index)
        if self.rgb:
            raw = raw[..., :3]
        if raw.dtype != np.uint8:
            lo, hi = self.value_range
            scaled = raw.astype(np.float32) - np.float32(lo)
            if hi > lo:
                scaled *= np.float32(255.0 / (hi - lo))
            else:
                scaled[...] = 0.0
            _replace_non_finite(scaled, index)
            np.clip(scaled, 0.0, 255.0, out=scaled)
            scaled += 0.5
            raw = scaled.astype(np.uint8)
        if raw.ndim == 2:
            raw = np.repeat(raw[..., np.newaxis], 3, axis=-1)
        return np.ascontiguousarray(raw)


#: Planes of a lazy stack sampled for its intensity range (see ``SamInput.value_range``).
RANGE_PLANES = 16


def _replace_non_finite(scaled: np.ndarray, index: int | None) -> None:
    """NaN and -Inf pixels become black, +Inf white, in place, with a warning saying how many.

    SAM needs a value for every pixel; masked-out (NaN) regions of float images
    are common in microscopy, so they are shown as background rather than refused.
    """
    bad = ~np.isfinite(scaled)
    count = int(np.count_nonzero(bad))
    if not count:
        return
    where = "" if index is None else f" on plane {index}"
    warnings.warn(
        f"The image has {count} NaN/infinite pixels{where}: SAM sees NaN and -Inf as black, "
        "+Inf as white.",
        UserWarning,
        stacklevel=3,
    )
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
