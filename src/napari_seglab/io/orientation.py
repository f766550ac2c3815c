"""Voxel-grid orientation: from a scanner affine to napari's layer axes and back.

Every volume the readers return is reoriented, by axis permutations and flips
only (no resampling), so that its array axes are

======  ============  ======================  ===================================
axis    name          index increases toward  napari shows it as
======  ============  ======================  ===================================
0       ``Z`` plane   Inferior (I)            the slider (axial slices); rows of
                                              coronal and sagittal views: head up
1       ``Y`` row     Posterior (P)           top → bottom: anterior at the top;
                                              sagittal columns: anterior left
2       ``X`` column  patient Left (L)        left → right: patient left on the
                                              right (radiological convention)
======  ============  ======================  ===================================

i.e. the slice axis first, nibabel axis codes ``("I", "P", "L")``: DICOM's LPS
patient frame with its S axis pointing down. napari draws increasing rows
downwards, so this is what makes all three views radiological when the axes
are rolled (axial: anterior up, patient left on the right; coronal and
sagittal: head up). The world coordinate along axis 0 is therefore
``I = -S`` (an axial slice at DICOM ``S = -85.5`` mm sits at ``I = 85.5``);
the other two are DICOM's ``P`` and ``L`` unchanged. The *layer affine* used
below maps a voxel index ``(z, y, x, 1)`` of the reoriented array to world
``(I, P, L, 1)`` in millimetres; for a scan whose grid is aligned with the
patient axes it is ``diag(spacing)`` plus the origin, which is exactly
napari's ``scale`` and ``translate``.

NIfTI affines map ``(i, j, k, 1)`` to RAS+ ``(x, y, z, 1)`` (x to patient Right
is negative Left). :data:`RAS_TO_LAYER_WORLD` converts between the two world
frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt2axcodes,
    ornt_transform,
)

#: nibabel axis codes of the layer arrays: slice axis first (toward Inferior), then P, L.
LAYER_AXCODES: tuple[str, str, str] = ("I", "P", "L")

#: nibabel axis codes of the arrays the NIfTI writer builds from scale/translate.
RAS_AXCODES: tuple[str, str, str] = ("R", "A", "S")

#: Maps RAS+ world ``(x, y, z)`` to layer world ``(I, P, L)``: ``I = -z``,
#: ``P = -y``, ``L = -x``.
RAS_TO_LAYER_WORLD = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])

#: Residual rotations whose largest element deviates from the identity by less
#: than this count as axis aligned (about 0.006 degrees).
OBLIQUE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Reoriented:
    """A 3D (or 3D + trailing extra axes) array reoriented to the layer axes.

    Attributes
    ----------
    data : ndarray, shape ``(Z, Y, X, *extra)``
        The reoriented array: axes ``(I, P, L)`` then any extra (time) axes.
    layer_affine : ndarray, shape ``(4, 4)``
        Maps ``(z, y, x, 1)`` of ``data`` to world ``(I, P, L, 1)`` in mm.
    transform : ndarray, shape ``(3, 2)``
        nibabel orientation transform from the source axes to the layer axes;
        :func:`from_layer_axes` applies its inverse.
    source_axcodes : tuple of str
        Axis codes of the source array (e.g. ``("L", "A", "S")``).
    """

    data: np.ndarray
    layer_affine: np.ndarray
    transform: np.ndarray
    source_axcodes: tuple[str, str, str]


def layer_affine_from_ras(ras_affine: np.ndarray) -> np.ndarray:
    """Express a voxel→RAS affine as a voxel→``(I, P, L)`` affine (same voxel axes)."""
    ras_affine = np.asarray(ras_affine, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = RAS_TO_LAYER_WORLD @ ras_affine[:3, :3]
    out[:3, 3] = RAS_TO_LAYER_WORLD @ ras_affine[:3, 3]
    return out


def ras_affine_from_layer(layer_affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`layer_affine_from_ras`."""
    layer_affine = np.asarray(layer_affine, dtype=np.float64)
    back = RAS_TO_LAYER_WORLD.T  # orthogonal: inverse is the transpose
    out = np.eye(4)
    out[:3, :3] = back @ layer_affine[:3, :3]
    out[:3, 3] = back @ layer_affine[:3, 3]
    return out


def layer_transform(ras_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The source orientation of ``ras_affine`` and the transform to the layer axes.

    Parameters
    ----------
    ras_affine : ndarray, shape ``(4, 4)``
        Maps ``(i, j, k, 1)`` to RAS+ millimetres.

    Returns
    -------
    source, transform : ndarray, shape ``(3, 2)``
        nibabel orientations: the source axes, and the flips and permutation
        that take them to :data:`LAYER_AXCODES`.

    Raises
    ------
    ValueError
        Two voxel axes map to the same world axis (a degenerate affine).
    """
    ras_affine = np.asarray(ras_affine, dtype=np.float64)
    source = io_orientation(ras_affine)
    if np.isnan(source).any():
        raise ValueError(
            "The affine maps two voxel axes to the same world axis (degenerate), got\n"
            f"{ras_affine}"
        )
    return source, ornt_transform(source, axcodes2ornt(LAYER_AXCODES))


def to_layer_axes(data: np.ndarray, ras_affine: np.ndarray) -> Reoriented:
    """Flip and permute the first three axes of ``data`` to ``(I, P, L)``.

    Parameters
    ----------
    data : ndarray, shape ``(I, J, K, *extra)``
        Voxel array in the source axis order (NIfTI ``i, j, k`` first).
    ras_affine : ndarray, shape ``(4, 4)``
        Maps ``(i, j, k, 1)`` to RAS+ millimetres.

    Returns
    -------
    Reoriented
        A view of ``data`` where possible (flips and transposes only).
    """
    if data.ndim < 3:
        raise ValueError(f"Expected an array with at least 3 axes, got shape {data.shape}.")
    ras_affine = np.asarray(ras_affine, dtype=np.float64)
    source, transform = layer_transform(ras_affine)
    shape3 = data.shape[:3]
    reoriented = apply_orientation(data, transform)
    new_ras = ras_affine @ inv_ornt_aff(transform, shape3)
    return Reoriented(
        data=reoriented,
        layer_affine=layer_affine_from_ras(new_ras),
        transform=transform,
        source_axcodes=tuple(ornt2axcodes(source)),
    )


def from_layer_axes(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Undo :func:`to_layer_axes`: bring ``(I, P, L, *extra)`` data back to the source axes."""
    transform = np.asarray(transform, dtype=np.float64)
    inverse = ornt_transform(axcodes2ornt(LAYER_AXCODES), _source_ornt(transform))
    return apply_orientation(data, inverse)


def _source_ornt(transform: np.ndarray) -> np.ndarray:
    """Source orientation from a source→layer transform (layer orientation is fixed)."""
    layer = axcodes2ornt(LAYER_AXCODES)
    source = np.empty_like(layer)
    for src_axis, (out_axis, flip) in enumerate(transform):
        world_axis, world_dir = layer[int(out_axis)]
        source[src_axis] = (world_axis, world_dir * flip)
    return source


def reorient_to_ras(data: np.ndarray, layer_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip ``(I, P, L, *extra)`` data to the closest RAS+ axes for writing.

    Returns
    -------
    data : ndarray, shape ``(I, J, K, *extra)``
    ras_affine : ndarray, shape ``(4, 4)``
        Maps the returned array's ``(i, j, k, 1)`` to RAS+ mm.
    """
    ras_affine = ras_affine_from_layer(layer_affine)
    transform = ornt_transform(io_orientation(ras_affine), axcodes2ornt(RAS_AXCODES))
    out = apply_orientation(data, transform)
    return out, ras_affine @ inv_ornt_aff(transform, data.shape[:3])


def split_layer_affine(
    layer_affine: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a layer affine into napari ``scale``, ``translate`` and a residual rotation.

    Returns
    -------
    spacing : ndarray, shape ``(3,)``
        Voxel size along ``(z, y, x)`` in mm (column norms).
    origin : ndarray, shape ``(3,)``
        World ``(I, P, L)`` position of voxel ``(0, 0, 0)`` in mm.
    rotation : ndarray, shape ``(3, 3)``
        ``layer_affine[:3, :3] == rotation @ diag(spacing)``; the identity for
        axis-aligned scans (up to shear, which NIfTI allows but scanners do not
        produce).
    """
    linear = np.asarray(layer_affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0):
        raise ValueError(f"The affine has a zero voxel size: column norms {spacing.tolist()}.")
    rotation = linear / spacing
    return spacing, np.asarray(layer_affine, dtype=np.float64)[:3, 3].copy(), rotation


def is_oblique(rotation: np.ndarray) -> bool:
    """Whether a residual rotation (from :func:`split_layer_affine`) is not the identity."""
    return bool(np.max(np.abs(np.asarray(rotation) - np.eye(3))) > OBLIQUE_TOLERANCE)


def obliquity_degrees(rotation: np.ndarray) -> float:
    """Largest angle in degrees between a voxel axis and its patient axis."""
    cosines = np.clip(np.abs(np.diag(np.asarray(rotation))), 0.0, 1.0)
    return float(np.degrees(np.arccos(cosines.min())))


def rotation_about_origin(rotation: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """napari ``affine`` (4×4) that rotates the scaled/translated layer about voxel 0.

    With ``scale=spacing`` and ``translate=origin``, napari maps a voxel to
    ``p = origin + spacing * index`` and then applies this matrix, giving
    ``origin + rotation @ (spacing * index)``: the exact scanner position.
    """
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(origin) - rotation @ np.asarray(origin)
    return out
