"""Settings, point grids and crop boxes of segment everything (:mod:`.everything`).

The settings carry the names and defaults of ``segment_anything``'s
``SamAutomaticMaskGenerator``; the grids and crops are laid out with the same
arithmetic, so that the same settings prompt the same points (a test compares
them). Geometry here is in SAM's ``(x, y)`` order: points ``(x, y)``, boxes
``(x0, y0, x1, y1)``, as in the official generator's records.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EverythingSettings", "crop_boxes", "point_grid"]


@dataclass(frozen=True)
class EverythingSettings:
    """How segment everything prompts and filters (official names and defaults).

    Attributes
    ----------
    points_per_side : int or None
        Points along each side of the grid (``points_per_side**2`` prompts per
        crop of layer 0); None when :attr:`point_grids` is given.
    points_per_batch : int
        Prompts decoded together (memory, not results).
    pred_iou_thresh : float
        Keep proposals whose predicted IoU is above this (0 disables the filter).
    stability_score_thresh : float
        Keep proposals whose stability score is at least this (0 disables the filter).
    stability_score_offset : float
        Logit offset of the stability score (IoU of the masks thresholded at
        ``±offset``).
    box_nms_thresh : float
        Box IoU above which a proposal duplicates a better-scoring one (within a crop).
    crop_n_layers : int
        Extra layers of overlapping crops (layer ``i`` has ``(2**i)**2`` crops).
    crop_nms_thresh : float
        Box IoU of the duplicate removal between crops (smaller crops win).
    crop_overlap_ratio : float
        Overlap of the first crop layer as a fraction of the short image side.
    crop_n_points_downscale_factor : int
        Points per side in crop layer ``i`` is ``points_per_side / factor**i``.
    point_grids : tuple of arrays ``(n, 2)``, optional
        Explicit ``(x, y)`` points in ``[0, 1]`` per crop layer, instead of
        :attr:`points_per_side`.
    min_mask_region_area : int
        When > 0, holes and islands smaller than this (pixels, 8-connected) are
        removed from each mask, then duplicates are removed again.
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: tuple | None = None
    min_mask_region_area: int = 0

    @classmethod
    def names(cls) -> list[str]:
        """The setting names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, settings: dict[str, Any]) -> EverythingSettings:
        """Settings from keyword arguments, checked; unknown names raise TypeError."""
        unknown = sorted(set(settings) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"Unknown segment-everything setting(s) {unknown}; expected some of {cls.names()}."
            )
        settings = dict(settings)
        if settings.get("point_grids") is not None:
            settings.setdefault("points_per_side", None)
            settings["point_grids"] = tuple(
                np.asarray(g, dtype=np.float64) for g in settings["point_grids"]
            )
        made = cls(**settings)
        made.check()
        return made

    def check(self) -> None:
        """Raise ValueError naming the setting, what it must be and what it is."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"Expected {name} {what}, got {getattr(self, name)!r}.")

        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError(
                "Expected exactly one of points_per_side and point_grids, got "
                f"points_per_side={self.points_per_side!r} and point_grids="
                f"{'None' if self.point_grids is None else f'{len(self.point_grids)} grid(s)'}."
            )
        if self.points_per_side is not None:
            need(_is_int(self.points_per_side) and self.points_per_side >= 1,
                 "points_per_side", "to be an integer >= 1")  # fmt: skip
        need(_is_int(self.points_per_batch) and self.points_per_batch >= 1,
             "points_per_batch", "to be an integer >= 1")  # fmt: skip
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            need(_is_real(getattr(self, name)) and getattr(self, name) <= 1.0, name,
                 "to be a finite number <= 1 (0 or less disables the filter)")  # fmt: skip
        need(_is_real(self.stability_score_offset) and self.stability_score_offset >= 0,
             "stability_score_offset", "to be a finite number >= 0")  # fmt: skip
        for name in ("box_nms_thresh", "crop_nms_thresh"):
            need(_is_real(getattr(self, name)) and 0.0 <= getattr(self, name) <= 1.0, name,
                 "to be a number in [0, 1]")  # fmt: skip
        need(_is_int(self.crop_n_layers) and 0 <= self.crop_n_layers <= 6, "crop_n_layers",
             "to be an integer in [0, 6]")  # fmt: skip
        need(_is_real(self.crop_overlap_ratio) and 0.0 <= self.crop_overlap_ratio < 1.0,
             "crop_overlap_ratio", "to be a number in [0, 1)")  # fmt: skip
        need(_is_int(self.crop_n_points_downscale_factor)
             and self.crop_n_points_downscale_factor >= 1,
             "crop_n_points_downscale_factor", "to be an integer >= 1")  # fmt: skip
        need(_is_int(self.min_mask_region_area) and self.min_mask_region_area >= 0,
             "min_mask_region_area", "to be an integer >= 0 (pixels)")  # fmt: skip
        if self.point_grids is not None:
            if len(self.point_grids) != self.crop_n_layers + 1:
                raise ValueError(
                    f"Expected one point grid per crop layer ({self.crop_n_layers + 1}), "
                    f"got {len(self.point_grids)}."
                )
            for grid in self.point_grids:
                if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
                    raise ValueError(f"Expected point grids of shape (n, 2), got {grid.shape}.")
                if not (np.isfinite(grid).all() and grid.min() >= 0 and grid.max() <= 1):
                    raise ValueError("Expected point grid coordinates (x, y) in [0, 1].")
        if self.points_per_side is not None:
            factor = self.crop_n_points_downscale_factor
            coarsest = self.points_per_side // factor**self.crop_n_layers
            if coarsest < 1:
                raise ValueError(
                    f"points_per_side={self.points_per_side} with crop_n_layers="
                    f"{self.crop_n_layers} and crop_n_points_downscale_factor="
                    f"{self.crop_n_points_downscale_factor} leaves no point in the last layer."
                )

    def grids(self) -> list[np.ndarray]:
        """``(x, y)`` points in ``[0, 1]`` for each crop layer, ``(n_i, 2)`` float64."""
        if self.point_grids is not None:
            return list(self.point_grids)
        factor = self.crop_n_points_downscale_factor
        return [
            point_grid(int(self.points_per_side / factor**layer))
            for layer in range(self.crop_n_layers + 1)
        ]

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (point grids as lists)."""
        out = dataclasses.asdict(self)
        if self.point_grids is not None:
            out["point_grids"] = [g.tolist() for g in self.point_grids]
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def point_grid(per_side: int) -> np.ndarray:
    """``per_side**2`` points ``(x, y)`` at the centres of a regular grid on ``[0, 1]²``.

    Row-major: ``x`` varies fastest. Returns ``(per_side**2, 2)`` float64.
    """
    half = 1.0 / (2 * per_side)
    side = np.linspace(half, 1.0 - half, per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def crop_boxes(
    shape: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """The whole image, then ``(2**i)**2`` overlapping crops in layer ``i = 1..n_layers``.

    Parameters
    ----------
    shape : (int, int)
        ``(Y, X)`` of the image.

    Returns
    -------
    boxes : list of ``(x0, y0, x1, y1)``
        Pixel boxes, end exclusive.
    layers : list of int
        The crop layer of each box.
    """
    height, width = int(shape[0]), int(shape[1])
    boxes, layers = [(0, 0, width, height)], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in starts_x:
            for y0 in starts_y:
                boxes.append((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)))
                layers.append(layer)
    return boxes, layers
