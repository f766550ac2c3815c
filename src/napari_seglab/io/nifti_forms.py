"""Set a NIfTI header's sform and qform from one affine without a wrong qform.

The sform is a general affine; the qform is a rotation, voxel sizes and an
offset (no shear). A sheared grid (e.g. a DICOM series with gantry tilt) has
no exact qform: nibabel would store the nearest rotation, which puts the far
voxels millimetres away from where the sform puts them. Readers that use the
qform would then place the data wrongly, so such a grid gets ``qform_code = 0``
(qform unused; readers fall back to the sform).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

#: Largest distance (mm) between qform and affine positions at a grid corner.
QFORM_TOLERANCE_MM = 1e-3


def corner_error_mm(first: np.ndarray, second: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance between the world positions two affines give the grid corners.

    Parameters
    ----------
    first, second : array, shape ``(4, 4)``
        Voxel ``(i, j, k)`` → world ``(x, y, z)`` affines.
    shape : tuple of int
        The voxel grid ``(i, j, k, ...)``; axes after the third are ignored,
        missing ones count as length 1.

    Returns
    -------
    float
        Maximum over the 8 corner voxels of the Euclidean distance (world units).
    """
    sizes = [*(int(n) for n in tuple(shape)[:3]), 1, 1, 1][:3]
    corners = np.array(
        [[*c, 1.0] for c in itertools.product(*[(0, max(n - 1, 0)) for n in sizes])]
    )
    diff = (corners @ np.asarray(first, float).T) - (corners @ np.asarray(second, float).T)
    return float(np.max(np.linalg.norm(diff[:, :3], axis=1)))


def set_exact_forms(header: Any, affine: np.ndarray, shape: tuple[int, ...], code: str) -> bool:
    """Set the sform to ``affine`` and the qform to it only where the qform is exact.

    Parameters
    ----------
    header : nibabel.Nifti1Header
        Changed in place.
    affine : array, shape ``(4, 4)``
        Voxel → world affine of the grid (may have shear).
    shape : tuple of int
        The voxel grid ``(i, j, k, ...)`` the affine applies to.
    code : str
        NIfTI form code for both forms (e.g. ``"scanner"``, ``"aligned"``).

    Returns
    -------
    bool
        True when the qform reproduces ``affine`` within :data:`QFORM_TOLERANCE_MM`
        at every corner of the grid and is set with ``code``; False when it
        cannot (shear) and ``qform_code`` is 0 (the voxel sizes in ``pixdim``
        are still set).
    """
    affine = np.asarray(affine, dtype=np.float64)
    header.set_sform(affine, code=code)
    header.set_qform(affine, code=code)
    if corner_error_mm(header.get_qform(), affine, shape) <= QFORM_TOLERANCE_MM:
        return True
    header.set_qform(affine, code=0)
    return False
