"""Image I/O: NIfTI and DICOM series on napari's layer axes, and one reader for every format.

:func:`read_array` reads any input the plugin takes (NIfTI, DICOM folders and
files, TIFF, ``.npy``, zarr/OME-Zarr, PNG/JPEG) into an :class:`ArrayFile`:
the array plus spacing, origin and affine where the format stores them.
:func:`write_array` writes a result in the format its suffix names.

Every reader returns a :class:`Volume` whose array axes are ``(Z, Y, X)`` =
(Inferior, Posterior, patient Left), i.e. DICOM's LPS frame with S pointing
down and the slice axis first, with ``spacing`` (napari ``scale``) in mm and
``origin`` (napari ``translate``) as the ``(I, P, L)`` position of voxel 0.
:func:`write_nifti` saves a label layer back with the source file's geometry.
See ``docs/readers.md``.

Examples
--------
>>> from napari_seglab.io import read_nifti, write_nifti
>>> vol = read_nifti("ct.nii.gz")                      # doctest: +SKIP
>>> labels = (vol.data > 300).astype("uint8")          # doctest: +SKIP
>>> write_nifti("bone.nii.gz", labels, spacing=vol.spacing, origin=vol.origin,
...             metadata=vol.metadata)                 # doctest: +SKIP
"""

from .dicom import (
    DamagedDicomError,
    DicomSeriesInfo,
    list_dicom_series,
    read_dicom_folder,
    read_dicom_series,
)
from .nifti import read_nifti, write_nifti
from .orientation import LAYER_AXCODES
from .reader import SUFFIXES, ArrayFile, read_array, supported_formats
from .volume import Volume
from .writer import WRITE_SUFFIXES, check_output, write_array

__all__ = [
    "LAYER_AXCODES",
    "SUFFIXES",
    "WRITE_SUFFIXES",
    "ArrayFile",
    "DamagedDicomError",
    "DicomSeriesInfo",
    "Volume",
    "check_output",
    "list_dicom_series",
    "read_array",
    "read_dicom_folder",
    "read_dicom_series",
    "read_nifti",
    "supported_formats",
    "write_array",
    "write_nifti",
]
