"""The batch ``sam`` pipeline with a SAM 2 model: spec of a file, and items prompted with SAM 2.

Workers load a SAM 2 model from a ``.pt`` file and a SAM 2 architecture (a
registered name or ``sam2`` config); the 2D and stack results are those of the
prompting core (:class:`PromptSegmenter` and :func:`propagate`, which tracks with
SAM 2's memory). The pipeline is run in-process with a small-input network so the
test stays fast; loading the file is checked separately.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from test_batch_sam import CELLS, reference, scene_2d, scene_3d, write_inputs  # noqa: E402

from napari_seglab.batch.pipeline import BatchItem  # noqa: E402
from napari_seglab.batch.sam_model import SamModelSpec  # noqa: E402


@pytest.fixture(scope="module")
def sam2_file(tmp_path_factory, tiny_sam2_models):
    path = tmp_path_factory.mktemp("sam2") / "tuned_sam2.pt"
    torch.save({"model": tiny_sam2_models().net.state_dict()}, path)
    return path


def test_spec_of_a_sam2_file_and_of_a_registered_name(sam2_file):
    spec = SamModelSpec.resolve(sam2_file, architecture="sam2.1_hiera_tiny", device="cpu")
    assert spec.architecture == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert spec.model_hash.startswith("sha256:")
    assert pickle.loads(pickle.dumps(spec)) == spec
    named = SamModelSpec.resolve("sam2.1_hiera_tiny", device="cpu", download=False)
    assert named.architecture == spec.architecture
    assert named.model_hash.startswith("size:")
    with pytest.raises(ValueError, match="decoder"):
        SamModelSpec.resolve("sam2.1_hiera_tiny", decoder=sam2_file)
    with pytest.raises(FileNotFoundError, match=r"sam2\.1_hiera_tiny\.pt"):
        named.load()  # offline, not cached: the error names the file to place


def test_sam2_pipeline_items_equal_the_prompting_core(
    tmp_path, sam2_file, one_torch_thread, tiny_sam2_models
):
    from napari_seglab.batch.sam import SamPipeline, SamWorker
    from napari_seglab.io import read_array
    from napari_seglab.sam import EmbeddingCache, Sam2Model

    model = tiny_sam2_models()
    inputs = write_inputs(tmp_path / "in")
    spec = SamModelSpec.resolve(sam2_file, architecture="sam2.1_hiera_tiny", device="cpu")
    pipeline = SamPipeline(spec, inputs / "prompts.csv", propagate=True, device="cpu")
    worker = SamWorker(model, EmbeddingCache(max_items=8))
    assert isinstance(worker.model, Sam2Model)
    out = tmp_path / "out"
    out.mkdir()

    pipeline.run_item(BatchItem("cells", inputs / "cells.tif"), out, worker)
    written = read_array(out / "cells_sam.tif").data
    np.testing.assert_array_equal(written, reference(model, scene_2d(), CELLS))
    assert set(np.unique(written)) - {0} <= {9, 10, 11}

    outcome = pipeline.run_item(BatchItem("stack", inputs / "stack.nii.gz"), out, worker)
    result = np.asarray(read_array(out / "stack_sam.nii.gz").data)
    source = np.asarray(read_array(inputs / "stack.nii.gz").data)
    objects = [(2, [[28, 40]], [1], [16, 24, 42, 58], None, True)]
    np.testing.assert_array_equal(result, reference(model, source, objects))
    assert outcome.row["planes"] == int(result.any(axis=(1, 2)).sum())
    assert scene_3d().shape == result.shape
