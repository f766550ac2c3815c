"""CRF parameters: one small object shared by the API, the command line and the widget."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: Default bilateral (appearance) kernel width, in multiples of the finest voxel size.
DEFAULT_SPATIAL_SIGMA_VOXELS = 5.0
#: Default intensity kernel width on the ``[0, 1]`` normalised intensity scale (0.1 before
#: the real-data check in ``docs/crf.md``, where it lost up to 0.04 more Dice).
DEFAULT_INTENSITY_SIGMA = 0.05
#: Default weight (Potts compatibility) of the bilateral kernel.
DEFAULT_BILATERAL_WEIGHT = 20.0
#: Default smoothness (Gaussian) kernel width, in multiples of the finest voxel size.
DEFAULT_SMOOTHNESS_SIGMA_VOXELS = 1.0
#: Default weight (Potts compatibility) of the smoothness kernel.
DEFAULT_SMOOTHNESS_WEIGHT = 3.0
#: Default number of mean-field iterations.
DEFAULT_ITERATIONS = 5
#: Default largest block (voxels, overlap included) given to one dense CRF.
DEFAULT_MAX_BLOCK_VOXELS = 2**21


@dataclass(frozen=True)
class CrfParameters:
    """Parameters of the fully connected CRF (Krähenbühl & Koltun, 2011).

    The energy has two Potts pairwise kernels:

    * **bilateral** (appearance): pixels that are close *and* look alike
      prefer the same label; width ``spatial_sigma`` in space and
      ``intensity_sigma`` in normalised intensity, strength ``bilateral_weight``;
    * **smoothness** (Gaussian): close pixels prefer the same label, width
      ``smoothness_sigma``, strength ``smoothness_weight``.

    Attributes
    ----------
    iterations : int
        Mean-field iterations (5 is the usual choice; results change little after).
    spatial_sigma : float or None
        Bilateral kernel width in physical units (same unit as ``spacing``).
        ``None``: ``DEFAULT_SPATIAL_SIGMA_VOXELS`` times the finest voxel size.
    intensity_sigma : float
        Bilateral intensity width on the normalised ``[0, 1]`` intensity scale.
    bilateral_weight : float
        Strength of the bilateral kernel.
    smoothness_sigma : float or None
        Gaussian kernel width in physical units; ``None``:
        ``DEFAULT_SMOOTHNESS_SIGMA_VOXELS`` times the finest voxel size.
    smoothness_weight : float
        Strength of the Gaussian kernel.
    """

    iterations: int = DEFAULT_ITERATIONS
    spatial_sigma: float | None = None
    intensity_sigma: float = DEFAULT_INTENSITY_SIGMA
    bilateral_weight: float = DEFAULT_BILATERAL_WEIGHT
    smoothness_sigma: float | None = None
    smoothness_weight: float = DEFAULT_SMOOTHNESS_WEIGHT

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, (int, np.integer)) or self.iterations < 1:
            raise ValueError(f"Expected iterations >= 1 (an integer), got {self.iterations!r}.")
        for name in ("spatial_sigma", "intensity_sigma", "smoothness_sigma"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"Expected {name} > 0, got {value!r}.")
        for name in ("bilateral_weight", "smoothness_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Expected {name} >= 0, got {value!r}.")

    def resolved(self, spacing: tuple[float, ...]) -> CrfParameters:
        """A copy with ``None`` sigmas replaced by their defaults for ``spacing``."""
        finest = float(min(spacing))
        values = asdict(self)
        if values["spatial_sigma"] is None:
            values["spatial_sigma"] = DEFAULT_SPATIAL_SIGMA_VOXELS * finest
        if values["smoothness_sigma"] is None:
            values["smoothness_sigma"] = DEFAULT_SMOOTHNESS_SIGMA_VOXELS * finest
        return CrfParameters(**values)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)
