"""The ``"maskrcnn"`` family (torchvision Mask R-CNN) in the shared train/predict/save/load API.

One small Mask R-CNN (the "small" backbone, 32 FPN channels, random weights)
is trained once for the module on a 96x96 image of touching disc pairs;
the tests reuse it. Everything runs on one CPU thread.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_seglab import models, unet
from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.metrics import instances
from napari_seglab.models.instance_paste import paint_instances, paste_mask
from napari_seglab.models.maskrcnn_data import MIN_VISIBLE_PIXELS, CropSampler, crop_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "backbone": "small",
    "widths": [16, 32, 64, 64],
    "fpn_channels": 32,
    "box_head": 128,
    "mask_head": 32,
    "rpn_proposals": 200,
    "box_samples": 64,
}


def touching_pairs(seed: int, pairs: int = 6, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """An image of ``pairs`` pairs of touching discs (radius 6) and its instance labels."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(pairs):
        cy, cx = rng.integers(12, size - 12, 2)
        for k, dx in enumerate((-6, 6)):
            disc = (yy - cy) ** 2 + (xx - cx - dx) ** 2 < 36
            ids[disc & (ids == 0)] = 2 * i + k + 1
    image = (ids > 0).astype(np.float32)
    image[(ndi.morphological_gradient(ids, size=2) > 0) & (ids > 0)] = 0.3
    image += rng.normal(0.0, 0.1, image.shape).astype(np.float32)
    return image, ids


@pytest.fixture(scope="module")
def trained():
    """The module's model, trained 60 steps on one image (loss per epoch recorded)."""
    image, ids = touching_pairs(0)
    before = image.copy(), ids.copy()
    events = []
    model = unet.train(
        image,
        ids,
        family="maskrcnn",
        network_kwargs=SMALL,
        max_epochs=6,
        steps_per_epoch=10,
        validation_fraction=0.0,
        device="cpu",
        callback=events.append,
    )
    assert np.array_equal(image, before[0])
    assert np.array_equal(ids, before[1])
    return model, events


def test_targets_clip_cut_objects_drop_slivers_and_keep_empty_crops():
    ids = np.zeros((20, 20), np.int32)
    ids[0:6, 0:3] = 4  # 18 px visible: kept, clipped at the border
    ids[10:12, 18:20] = 7  # 4 px visible: a sliver, dropped
    target = crop_targets(ids)
    assert target["boxes"].tolist() == [[0.0, 0.0, 3.0, 6.0]]
    assert target["masks"].shape == (1, 20, 20)
    assert target["masks"][0].sum() == 18
    assert target["labels"].tolist() == [1]
    assert 4 < MIN_VISIBLE_PIXELS <= 18
    empty = crop_targets(np.zeros((16, 16), np.int32))
    assert empty["boxes"].shape == (0, 4)
    assert empty["masks"].shape == (0, 16, 16)
    # a crop of a plane keeps the cut objects' visible parts
    from napari_seglab.models.maskrcnn_data import InstancePlane

    plane_ids = np.zeros((40, 40), np.int32)
    plane_ids[10:30, 10:30] = 1
    sampler = CropSampler(
        [InstancePlane(np.zeros((1, 40, 40), np.float32), plane_ids)], (16, 16), False, 0
    )
    for _ in range(5):
        image, target = sampler.sample()
        assert image.shape == (1, 16, 16)
        for mask, box in zip(target["masks"], target["boxes"]):
            rows, cols = np.nonzero(mask)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_pasting_matches_torchvision_and_higher_score_wins():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 1, 28, 28, generator=gen)
    boxes = torch.tensor(
        [[3.2, 4.7, 20.1, 30.9], [-5, -3, 10, 12], [40, 50, 90, 66], [1, 1, 2, 2]]
    )
    full = paste_masks_in_image(masks, boxes, (64, 72))
    for k in range(4):
        window, values = paste_mask(masks[k, 0], boxes[k], 64, 72)
        mine = torch.zeros(64, 72)
        mine[window] = values
        assert torch.equal(mine, full[k, 0])
    ones = torch.ones(2, 1, 28, 28)
    overlapping = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])
    ids, fg = paint_instances(torch.tensor([0.6, 0.9]), overlapping, ones, (12, 20))
    assert ids[5, 7] == 1  # the 0.9 detection (numbered first) takes the overlap
    assert set(np.unique(ids)) == {0, 1, 2}
    assert fg.max() == 1.0
    none, _ = paint_instances(
        torch.tensor([0.6, 0.9]), overlapping, ones, (12, 20), score_threshold=0.95
    )
    assert not none.any()


def test_loss_falls_and_touching_objects_get_separate_ids(trained):
    model, events = trained
    losses = [e.loss for e in events]
    assert len(losses) >= 3
    assert losses[-1] < 0.7 * losses[0]
    assert model.family == "maskrcnn"
    assert model.classes == (0, 1)
    image, ids = touching_pairs(0)
    result = models.predict_and_split(model, image, device="cpu")
    assert result.instances.dtype == np.int32
    assert result.probabilities.shape == (2, 96, 96)
    score = instances(result.instances, ids, thresholds=())
    # most touching discs come out as their own objects (one id each, IoU >= 0.5)
    assert score["tp"] >= 9, score
    assert score["f1"] >= 0.75, score
    # each true pair is split: its two discs' pixels mostly carry two different ids
    split = 0
    for i in range(6):
        a = result.instances[ids == 2 * i + 1]
        b = result.instances[ids == 2 * i + 2]
        ma, mb = np.bincount(a).argmax(), np.bincount(b).argmax()
        split += bool(ma and mb and ma != mb)
    assert split >= 4


def test_save_load_round_trip_predicts_the_same(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "maskrcnn.pt")
    loaded = models.load_model(path)
    assert loaded.family == "maskrcnn"
    assert loaded.network_kwargs == model.network_kwargs
    image, _ = touching_pairs(3)
    first = unet.predict_and_split(model, image, device="cpu")
    second = unet.predict_and_split(loaded, image, device="cpu")
    assert np.array_equal(first.instances, second.instances)
    assert np.array_equal(first.probabilities, second.probabilities)
    assert np.array_equal(unet.predict(loaded, image, device="cpu"), second.probabilities)
    with pytest.raises(ValueError, match="not available for the 'maskrcnn' family"):
        unet.predict(loaded, image, tta=True)


def test_stack_plane_by_plane_links_ids(trained):
    model, _ = trained
    image, _ids = touching_pairs(0)
    stack = np.stack([image, np.roll(image, 1, axis=1), np.roll(image, 2, axis=1)])
    before = stack.copy()
    result = unet.predict_and_split(model, stack, device="cpu")
    assert np.array_equal(stack, before)
    objects = result.instances
    assert objects.shape == (3, 96, 96)
    plane = objects[0]
    assert plane.max() >= 8
    for z in (1, 2):
        shifted = np.roll(plane, z, axis=1)
        both = (shifted > 0) & (objects[z] > 0)
        # the same object keeps its id from plane to plane
        assert np.mean(shifted[both] == objects[z][both]) > 0.95


def test_stack_training_and_cancel():
    image, ids = touching_pairs(1, pairs=2, size=64)
    stack, stack_ids = np.stack([image, image]), np.stack([ids, np.zeros_like(ids)])
    cancel = threading.Event()
    job = unet.train_events(
        stack,
        stack_ids,
        family="maskrcnn",
        network_kwargs=SMALL,
        max_epochs=5,
        steps_per_epoch=2,
        validation_fraction=0.0,
        device="cpu",
        cancel=cancel,
    )
    event = next(job)
    assert event.epoch == 1
    cancel.set()
    with pytest.raises(JobCancelled) as stop:
        next(job)
    partial = stop.value.partial
    assert partial is not None
    assert partial.family == "maskrcnn"
    assert partial.slicewise
    cancel_now = threading.Event()
    cancel_now.set()
    with pytest.raises(JobCancelled, match="before the first epoch"):
        run_to_end(
            unet.train_events(
                image,
                ids,
                family="maskrcnn",
                network_kwargs=SMALL,
                max_epochs=1,
                cancel=cancel_now,
            )
        )


def test_refuses_what_it_cannot_do():
    image, ids = touching_pairs(1, pairs=1, size=32)
    with pytest.raises(ValueError, match="ignore_label"):
        unet.train(image, ids, family="maskrcnn", ignore_label=255, max_epochs=1)
    with pytest.raises(ValueError, match="instance labels"):
        unet.train(image, ids.astype(np.float32), family="maskrcnn", max_epochs=1)
    with pytest.raises(ValueError, match="no object"):
        unet.train(image, np.zeros_like(ids), family="maskrcnn", max_epochs=1)
    with pytest.raises(ValueError, match="'small' backbone has no ImageNet weights"):
        unet.train(image, ids, family="maskrcnn", encoder="small", pretrained=True, max_epochs=1)


def test_pretrained_backbone_download_check_and_offline_path(tmp_path):
    """ImageNet weights come through the cache from a loopback server; offline names the path."""
    import hashlib
    import http.server
    import io

    from torchvision.models import resnet18

    from napari_seglab.models.maskrcnn_net import build_maskrcnn
    from napari_seglab.models.maskrcnn_weights import (
        ensure_backbone_weights,
        load_backbone_weights,
        weights_path,
    )

    buffer = io.BytesIO()
    torch.manual_seed(3)
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), buffer)
    body = buffer.getvalue()
    name = f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = body if self.path.endswith(name) else body[:100]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        path = ensure_backbone_weights("resnet18", url=f"{base}/{name}")
        assert path == weights_path(f"{base}/{name}")
        assert path.read_bytes() == body
        with pytest.raises(RuntimeError, match="SHA-256 prefix"):  # a corrupt file: deleted
            ensure_backbone_weights("resnet18", url=f"{base}/resnet18-00000000.pth")
        assert not weights_path(f"{base}/resnet18-00000000.pth").exists()
    finally:
        server.shutdown()
        server.server_close()
    settings = {"norm": "frozen", "fpn_channels": 32, "box_head": 64, "mask_head": 16}
    network = build_maskrcnn(1, 2, settings)
    load_backbone_weights(network, path)
    expected = reference.conv1.weight.mean(dim=1, keepdim=True)
    assert torch.equal(network.backbone.body.conv1.weight, expected)
    assert torch.equal(
        network.backbone.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )
    offline = f"{base}/resnet18-12345678.pth"  # the server is gone: connection refused
    with pytest.raises(FileNotFoundError) as missing:
        ensure_backbone_weights("resnet18", url=offline)
    assert str(weights_path(offline)) in str(missing.value)


def test_cli_trains_maskrcnn_and_predicts_instance_labels(tmp_path, capsys):
    import tifffile

    from napari_seglab.cli import main

    image, ids = touching_pairs(2, pairs=2, size=48)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "ids.tif", ids)
    model_path, out = tmp_path / "m.pt", tmp_path / "objects.tif"
    args = ["train", str(tmp_path / "img.tif"), str(tmp_path / "ids.tif"), "-o", str(model_path)]
    settings = ["--family", "maskrcnn", "--encoder", "small", "--epochs", "1"]
    code = main([*args, *settings, "--steps-per-epoch", "1", "--device", "cpu"])
    assert code == 0
    assert "val F1" in capsys.readouterr().out
    model = models.load_model(model_path)
    assert model.family == "maskrcnn"
    assert model.network_kwargs["backbone"] == "small"
    assert main(["predict", str(model_path), str(tmp_path / "img.tif"), "-o", str(out)]) == 0
    written = tifffile.imread(out)
    expected = unet.predict_and_split(model, image).instances
    np.testing.assert_array_equal(written, expected)
