"""annotated_box: the part of a large stack that training reads."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_seglab.unet.annotated import annotated_box


def test_box_of_annotated_voxels_grown_and_clipped_read_by_slabs():
    labels = np.full((40, 30, 50), 9, np.uint8)  # 9: unannotated
    labels[12, 5:9, 20:30] = 0  # background strokes count as annotated
    labels[17, 10:12, 44:46] = 2
    for source in (labels, zarr.array(labels, chunks=(4, 30, 50)), da.from_array(labels)):
        box = annotated_box(source, 9, (2, 3, 8), slab_elements=30 * 50 * 3)
        assert box == (slice(10, 20), slice(2, 15), slice(12, 50))


def test_nothing_annotated_and_bad_margin_are_named():
    labels = np.full((4, 5, 6), 7, np.uint8)
    with pytest.raises(ValueError, match="no annotated voxels: every voxel is the ignore label 7"):
        annotated_box(labels, 7, (0, 0, 0))
    with pytest.raises(ValueError, match="margin per axis"):
        annotated_box(labels, 7, (1, 1))
