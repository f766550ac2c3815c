"""``seglab batch predict`` with a Mask R-CNN model (an instance family), in process.

The pipeline's items run as the engine's workers run them
(:meth:`PredictPipeline.load` then :meth:`PredictPipeline.run_item`),
without a dask cluster. The model is a tiny Mask R-CNN trained two steps:
the test checks the mechanics (what is written, equal to
:func:`predict_and_split`, ids linked through a stack), not its quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_seglab import unet
from napari_seglab.batch.pipeline import BatchItem
from napari_seglab.batch.predict import PredictPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "backbone": "small",
    "widths": [8, 16, 32, 32],
    "fpn_channels": 16,
    "box_head": 32,
    "mask_head": 16,
    "rpn_proposals": 50,
    "box_samples": 16,
}


def _discs(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    ids = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate([(16, 16), (16, 28), (44, 40)], start=1):
        ids[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = i
    rng = np.random.default_rng(0)
    image = (ids > 0).astype(np.float32) + rng.normal(0, 0.1, ids.shape).astype(np.float32)
    return image, ids


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, one_torch_thread):
    """A Mask R-CNN after two training steps, its class score raised so that it finds objects."""
    image, ids = _discs()
    model = unet.train(
        image,
        ids,
        family="maskrcnn",
        network_kwargs=SMALL,
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=1,
        validation_fraction=0.0,
        device="cpu",
    )
    with torch.no_grad():  # two steps leave every score under 0.5: detections on purpose
        model.network.roi_heads.box_predictor.cls_score.bias[1] += 4.0
        model.network.roi_heads.mask_predictor.mask_fcn_logits.bias[1] += 2.0
    return model.save(tmp_path_factory.mktemp("maskrcnn_batch") / "maskrcnn.pt")


def test_instance_family_writes_instances_equal_to_predict_and_split(model_file, tmp_path):
    image, _ = _discs()
    stack = np.stack([image, image, image])
    tifffile.imwrite(tmp_path / "plane.tif", image)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    out.mkdir()
    pipeline = PredictPipeline(model_file, outputs=("labels", "probabilities"), device="cpu")
    loaded = pipeline.load()
    model = unet.SegmentationModel.load(model_file)
    for name, data in (("plane", image), ("stack", stack)):
        item = BatchItem(name, tmp_path / f"{name}.tif")
        names = [f"{name}_labels.tif", f"{name}_probabilities.tif", f"{name}_instances.tif"]
        assert pipeline.output_names(item) == names
        outcome = pipeline.run_item(item, out, loaded)
        assert outcome.outputs == names
        expected = unet.predict_and_split(model, data, device="cpu")
        written = tifffile.imread(out / names[2])
        np.testing.assert_array_equal(written, expected.instances)
        np.testing.assert_array_equal(tifffile.imread(out / names[0]), expected.labels)
        assert tifffile.imread(out / names[1]).shape == (2, *data.shape)
        assert written.max() >= 2
        assert outcome.row["objects"] == len(np.unique(written)) - 1
    # identical planes: every object keeps its id through the stack (linked, not renumbered)
    objects = tifffile.imread(out / "stack_instances.tif")
    assert np.array_equal(objects[0], objects[1])
    assert np.array_equal(objects[0], objects[2])
    assert objects.max() == objects[0].max()
    assert np.array_equal(tifffile.imread(tmp_path / "stack.tif"), stack)  # input untouched


@pytest.mark.parametrize(
    ("setting", "option"),
    [
        ({"memory_budget": "1GB"}, "--memory-budget"),
        ({"crf": True}, "--crf"),
        ({"instances": "connected"}, "--instances connected"),
        ({"tta": True}, "--tta"),
    ],
)
def test_instance_family_refuses_what_does_not_apply(model_file, setting, option):
    with pytest.raises(ValueError, match="'maskrcnn' family") as refused:
        PredictPipeline(model_file, **setting)
    assert option in str(refused.value)


def test_cli_refusal_is_an_error_before_any_work(model_file, tmp_path, capsys):
    from napari_seglab.cli import main

    tifffile.imwrite(tmp_path / "a.tif", _discs()[0])
    args = ["batch", "predict", str(model_file), str(tmp_path / "a.tif"), "-o", str(tmp_path)]
    assert main([*args, "--crf"]) == 2
    assert "'maskrcnn' family" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
