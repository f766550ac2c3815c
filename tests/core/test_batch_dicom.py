"""A DICOM series predicted by the batch pipeline comes out as NIfTI on the series' geometry."""

from __future__ import annotations

import numpy as np
import pytest
from test_batch_blockwise import tiny_model
from test_io_dicom import write_series

from napari_seglab.batch.inputs import collect_items
from napari_seglab.batch.predict import PredictPipeline
from napari_seglab.io import read_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dicom_series_labels_keep_the_series_geometry(tmp_path):
    series = tmp_path / "ct_001"
    series.mkdir()
    write_series(series, n_slices=6, shape=(32, 32))
    model = tiny_model(2, (16, 16), classes=(0, 1))
    model.slicewise = True
    pipeline = PredictPipeline(model, device="cpu")
    [item] = collect_items([series])
    assert pipeline.output_names(item) == ["ct_001_labels.nii.gz"]
    out = tmp_path / "out"
    out.mkdir()
    outcome = pipeline.run_item(item, out, pipeline.load())
    assert outcome.outputs == ["ct_001_labels.nii.gz"]
    source = read_array(series)
    written = read_array(out / "ct_001_labels.nii.gz", layer_type="labels")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    np.testing.assert_allclose(written.spacing, source.spacing, atol=1e-5)
