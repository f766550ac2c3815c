"""The :class:`Volume` every reader returns, and its conversion to napari layer data.

A volume's array is already reoriented to the layer axes of
:mod:`napari_seglab.io.orientation` (``(Z, Y, X)`` = Inferior, Posterior,
Left), so ``spacing`` and ``origin`` go straight into napari's ``scale`` and
``translate`` and napari world coordinates are ``(I, P, L)`` millimetres
(DICOM's LPS with ``I = -S``: every view radiological, see the orientation module).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .orientation import (
    LAYER_AXCODES,
    is_oblique,
    obliquity_degrees,
    rotation_about_origin,
    split_layer_affine,
    to_layer_axes,
)

#: Key under which readers store what the writer needs to restore the source grid.
GEOMETRY_KEY = "geometry"


@dataclass
class Volume:
    """A medical image or label volume on napari's layer axes.

    Attributes
    ----------
    data : ndarray
        ``(Z, Y, X)`` for a volume, ``(Y, X)`` for a single slice, ``(T, Z, Y, X)``
        (or ``(T, Y, X)``) when the file has a fourth (time / channel) axis.
        Spatial axes increase toward Inferior, Posterior, patient Left.
    spacing : tuple of float
        One entry per axis of ``data`` (napari ``scale``): voxel size in mm for
        spatial axes, 1.0 for a leading time/channel axis.
    origin : tuple of float
        One entry per axis of ``data`` (napari ``translate``): ``(I, P, L)`` world
        position in mm of voxel 0 along each spatial axis, 0.0 for a time/channel axis.
    affine : ndarray, shape ``(4, 4)``
        Maps a 3D voxel index ``(z, y, x, 1)`` to world ``(I, P, L, 1)`` in mm,
        rotation included (for a single slice the dropped axis has index 0).
    is_label : bool
        Open as a napari Labels layer (integer data) rather than an Image.
    metadata : dict
        Source header fields, orientation notes and the ``"geometry"`` entry the
        NIfTI writer uses to restore the source voxel grid exactly.
    name : str
        Suggested layer name.
    contrast_limits : tuple of float, optional
        Display window from the file (DICOM window, NIfTI ``cal_min/cal_max``).
    colormap : str, optional
        napari colormap for an image; ``"gray_r"`` for DICOM ``MONOCHROME1``
        (low values shown bright), whose values are kept as stored.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    affine: np.ndarray
    is_label: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "volume"
    contrast_limits: tuple[float, float] | None = None
    colormap: str | None = None

    @property
    def is_oblique(self) -> bool:
        """The voxel grid is rotated against the patient axes."""
        return bool(self.metadata.get("orientation", {}).get("oblique", False))

    def axis_names(self) -> dict[str, tuple[str, ...]]:
        """napari ``axis_labels`` and ``units`` for :attr:`data`'s axes.

        Spatial axes are labelled by the direction they increase in (``"S→I"``,
        ``"A→P"``, ``"R→L"``) and measured in ``"mm"``; a leading time/channel
        axis is ``"t"`` in ``"pixel"`` units. A single slice keeps the labels of
        its two in-plane axes.
        """
        spatial = ["S→I", "A→P", "R→L"]  # toward LAYER_AXCODES (I, P, L)
        dropped = self.metadata.get(GEOMETRY_KEY, {}).get("dropped_axis")
        if dropped is not None:
            del spatial[dropped]
        n_spatial = min(len(spatial), self.data.ndim)
        labels = spatial[len(spatial) - n_spatial :]
        extra = self.data.ndim - n_spatial
        return {
            "axis_labels": tuple(["t"] * extra + labels),
            "units": tuple(["pixel"] * extra + ["mm"] * n_spatial),
        }

    def layer_data(self, *, rotate_oblique: bool = False) -> tuple[np.ndarray, dict, str]:
        """napari ``LayerData`` tuple ``(data, kwargs, layer_type)``.

        Parameters
        ----------
        rotate_oblique : bool
            For an oblique (or sheared) scan, also pass napari an ``affine`` that
            turns the layer about voxel 0, so that napari's world position of
            every voxel, ``affine @ (scale * index + translate)``, is exactly
            :attr:`affine`'s. Off by default: napari shows such a layer's slices
            without the out-of-slice rotation but paints through it, so paint
            would land on other planes than the one shown; oblique scans are
            shown on their voxel grid (``docs/readers.md``; the napari readers
            take ``SEGLAB_OBLIQUE=affine``).
        """
        kwargs: dict[str, Any] = {
            "name": self.name,
            "scale": tuple(float(s) for s in self.spacing),
            "translate": tuple(float(t) for t in self.origin),
            "metadata": self.metadata,
            **self.axis_names(),
        }
        volumetric = self.metadata.get(GEOMETRY_KEY, {}).get("dropped_axis") is None
        if rotate_oblique and self.is_oblique and volumetric and self.data.ndim >= 3:
            rotation = np.asarray(self.metadata["orientation"]["residual_rotation"])
            spatial = rotation_about_origin(rotation, np.asarray(self.origin[-3:]))
            full = np.eye(self.data.ndim + 1)
            full[-4:, -4:] = spatial
            kwargs["affine"] = full
        if self.is_label:
            return self.data, kwargs, "labels"
        if self.contrast_limits is not None:
            kwargs["contrast_limits"] = tuple(float(c) for c in self.contrast_limits)
        if self.colormap is not None:
            kwargs["colormap"] = self.colormap
        return self.data, kwargs, "image"


def orientation_record(
    name: str, source_axcodes, rotation: np.ndarray, *, stacklevel: int = 3
) -> dict[str, Any]:
    """The ``metadata["orientation"]`` of a volume; warns when its grid is oblique.

    Parameters
    ----------
    name : str
        The volume's name, for the warning.
    source_axcodes : sequence of str
        The source voxel axes' directions (nibabel axis codes).
    rotation : ndarray, shape ``(3, 3)``
        The layer affine's residual rotation (see ``split_layer_affine``).
    stacklevel : int
        Of the warning, counted from this function.
    """
    oblique = is_oblique(rotation)
    orientation: dict[str, Any] = {
        "source_axcodes": list(source_axcodes),
        "layer_axcodes": list(LAYER_AXCODES),
        "convention": "slice axis first: (Z, Y, X) = (Inferior, Posterior, Left), world I = -S",
        "oblique": oblique,
        "obliquity_degrees": obliquity_degrees(rotation),
        "residual_rotation": np.asarray(rotation).tolist(),
    }
    if oblique:
        orientation["warning"] = (
            f"{name}: the voxel grid is tilted {orientation['obliquity_degrees']:.2f} degrees "
            "against the patient axes (oblique or sheared); napari shows it on its voxel grid, "
            "so world positions away from voxel 0 are approximate. The full affine is kept "
            "(Volume.affine, metadata) and the NIfTI writer restores it; for exact positions "
            "(3D views, overlays with other series) set SEGLAB_OBLIQUE=affine before starting "
            "napari, or use layer_data(rotate_oblique=True)."
        )
        warnings.warn(orientation["warning"], UserWarning, stacklevel=stacklevel)
    return orientation


def volume_from_source(
    data: np.ndarray,
    ras_affine: np.ndarray,
    *,
    is_label: bool,
    name: str,
    metadata: dict[str, Any],
    extra_spacing: float = 1.0,
    contrast_limits: tuple[float, float] | None = None,
    colormap: str | None = None,
    detach: bool = False,
) -> Volume:
    """Reorient a source array and build its :class:`Volume`.

    Parameters
    ----------
    data : ndarray, shape ``(I, J)``, ``(I, J, K)`` or ``(I, J, K, T, ...)``
        Source voxels, NIfTI axis order (``i`` first). Axes after the third are
        flattened into one leading time/channel axis of the volume.
    ras_affine : ndarray, shape ``(4, 4)``
        Maps ``(i, j, k, 1)`` to RAS+ mm.
    is_label, name, contrast_limits, colormap
        Copied to the volume.
    metadata : dict
        Format-specific metadata; ``"orientation"`` and ``"geometry"`` are added
        (the dict is copied, not modified).
    extra_spacing : float
        napari scale of the time/channel axis (e.g. the repetition time).
    detach : bool
        Always copy, so the volume never shares memory with ``data`` (e.g. a
        memory-mapped file); otherwise copy only when the reoriented array is
        not C-contiguous.
    """
    source_shape = tuple(int(n) for n in data.shape)
    padded = max(0, 3 - data.ndim)
    arr = data.reshape(source_shape + (1,) * padded)
    extra_shape = arr.shape[3:]
    if len(extra_shape) > 1:
        arr = arr.reshape((*arr.shape[:3], int(np.prod(extra_shape))))
    reoriented = to_layer_axes(arr, ras_affine)
    spacing, origin, rotation = split_layer_affine(reoriented.layer_affine)
    out = reoriented.data
    has_extra = out.ndim == 4
    if has_extra:
        out = np.moveaxis(out, 3, 0)

    spatial_shape = out.shape[-3:]
    singletons = [axis for axis, n in enumerate(spatial_shape) if n == 1]
    dropped_axis = singletons[0] if len(singletons) == 1 else None
    spatial_spacing = [float(s) for s in spacing]
    spatial_origin = [float(o) for o in origin]
    if dropped_axis is not None:
        out = np.squeeze(out, axis=out.ndim - 3 + dropped_axis)
        del spatial_spacing[dropped_axis]
        del spatial_origin[dropped_axis]
    layer_spacing = ([float(extra_spacing)] if has_extra else []) + spatial_spacing
    layer_origin = ([0.0] if has_extra else []) + spatial_origin
    out = np.array(out, order="C") if detach else np.ascontiguousarray(out)

    orientation = orientation_record(name, reoriented.source_axcodes, rotation, stacklevel=4)

    geometry = {
        "source_shape": list(source_shape),
        "source_affine": np.asarray(ras_affine, dtype=np.float64).tolist(),
        "transform": reoriented.transform.tolist(),
        "padded_axes": padded,
        "extra_shape": [int(n) for n in extra_shape],
        "dropped_axis": dropped_axis,
        "layer_shape": list(out.shape),
        "layer_scale": layer_spacing,
        "layer_translate": layer_origin,
    }
    meta = dict(metadata)
    meta["orientation"] = orientation
    meta[GEOMETRY_KEY] = {**meta.get(GEOMETRY_KEY, {}), **geometry}
    return Volume(
        data=out,
        spacing=tuple(layer_spacing),
        origin=tuple(layer_origin),
        affine=reoriented.layer_affine,
        is_label=is_label,
        metadata=meta,
        name=name,
        contrast_limits=contrast_limits,
        colormap=colormap,
    )
