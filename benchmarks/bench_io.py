"""Reader overhead: napari_seglab.io against the plain library read of the same file.

ours: read_nifti / read_dicom_series (load, label rule, rescale, reorientation to
contiguous (Z, Y, X)); reference: nibabel ``np.asarray(img.dataobj).copy()``
(data in memory) / pydicom
``dcmread`` of every file + ``np.stack`` (no sorting, no rescale, no reorientation).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import arguments, median_time, peak_memory, report
from napari_seglab.io import read_dicom_series, read_nifti


def main() -> None:
    args = arguments(__doc__)
    shape = (128, 128, 40) if args.quick else (512, 512, 160)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        affine = np.diag([-0.8, 0.8, 3.0, 1.0])
        ct = rng.integers(-1024, 2000, shape, dtype=np.int16)
        nib.save(nib.Nifti1Image(ct, affine), tmp / "ct.nii")
        labels = np.zeros(shape, np.uint8)
        labels[10:60, 20:90, 5:30] = 3
        nib.save(nib.Nifti1Image(labels, affine), tmp / "labels.nii")
        nib.save(nib.Nifti1Image(labels, affine), tmp / "labels.nii.gz")
        for name in ("ct.nii", "labels.nii", "labels.nii.gz"):
            path = tmp / name
            ours = median_time(lambda p=path: read_nifti(p), repeats=3)
            ref = median_time(
                lambda p=path: np.asarray(nib.load(p).dataobj).copy(order="K"), repeats=3
            )
            report(f"read_nifti {name} {shape}", ours, ref)
            ours_mem = peak_memory(lambda p=path: read_nifti(p))
            ref_mem = peak_memory(lambda p=path: np.asarray(nib.load(p).dataobj).copy(order="K"))
            report(f"read_nifti {name} peak memory", ours_mem, ref_mem, unit="MiB")

        folder = tmp / "dicom"
        folder.mkdir()
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))
        from test_io_dicom import write_series

        n_slices = 20 if args.quick else 120
        write_series(folder, n_slices=n_slices, shape=(256, 256))
        files = sorted(folder.iterdir())

        def reference():
            return np.stack([pydicom.dcmread(f).pixel_array for f in files])

        ours = median_time(lambda: read_dicom_series(folder), repeats=3)
        ref = median_time(reference, repeats=3)
        report(f"read_dicom_series {n_slices}x256x256", ours, ref)


if __name__ == "__main__":
    main()
