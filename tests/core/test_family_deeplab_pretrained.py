"""DeepLabV3+ ``pretrained=True``: ImageNet ResNet encoder weights through the plugin cache.

A loopback HTTP server stands in for download.pytorch.org: it serves a
random-weight torchvision ResNet-18 state dict (float16, to keep it small)
under a file name carrying its real SHA-256 prefix, and the registry entry
for ``resnet18`` points at it for the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import threading

import numpy as np
import pytest
import torch

from napari_seglab.models import maskrcnn_weights
from napari_seglab.unet import SegmentationModel, predict, train
from napari_seglab.unet.families import PRETRAINED_KEY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"encoder": "resnet18", "network_kwargs": {"decoder_channels": 16}}


def _image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint8)
    labels[4:14, 4:14] = 1
    labels[18:28, 16:30] = 2
    return rng.normal(0.0, 0.3, labels.shape).astype(np.float32) + labels, labels


@pytest.fixture
def served_resnet18(monkeypatch):
    """(state dict served, request counter); the registry points at the loopback server."""
    from torchvision.models import resnet18

    torch.manual_seed(5)
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in resnet18().state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = buffer.getvalue()
    name = f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    monkeypatch.setitem(maskrcnn_weights.BACKBONE_WEIGHTS, "resnet18", url)
    try:
        yield state, requests, url
    finally:
        server.shutdown()
        server.server_close()


def test_pretrained_encoder_loaded_once_recorded_and_saved(served_resnet18, tmp_path):
    from napari_seglab.unet import architectures as arch
    from napari_seglab.unet.families import family_overrides, load_pretrained

    state, requests, url = served_resnet18
    image, labels = _image()
    kwargs = family_overrides("deeplabv3plus", {"decoder_channels": 16}, "resnet18", True)
    assert kwargs[PRETRAINED_KEY] == url.rsplit("/", 1)[-1]
    network = arch.build_network("deeplabv3plus", 2, 1, 3, kwargs)
    load_pretrained(network, kwargs)
    encoder = network.encoder.state_dict()
    for key in ("layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.bn1.running_var"):
        assert torch.equal(encoder[key], state[key].float())
    gray = state["conv1.weight"].float().sum(1, keepdim=True)  # one channel: the sum over RGB
    assert torch.equal(encoder["conv1.weight"], gray)
    assert len(requests) == 1

    model = train(image, labels, family="deeplabv3plus", pretrained=True, max_epochs=1,
                  steps_per_epoch=2, validation_fraction=0, **SMALL)  # fmt: skip
    assert len(requests) == 1  # the cached file, checked, not downloaded again
    assert model.network_kwargs[PRETRAINED_KEY] == url.rsplit("/", 1)[-1]
    path = model.save(tmp_path / "deeplab.pt")
    maskrcnn_weights.weights_path(url).unlink()  # no cache: loading needs no download
    loaded = SegmentationModel.load(path)
    assert loaded.network_kwargs[PRETRAINED_KEY] == model.network_kwargs[PRETRAINED_KEY]
    np.testing.assert_array_equal(predict(loaded, image), predict(model, image))
    assert len(requests) == 1


def test_pretrained_errors_name_encoders_and_offline_path(monkeypatch):
    image, labels = _image()
    with pytest.raises(ValueError, match=r"'mobilenet_v2'.*resnet18, resnet34, resnet50"):
        train(image, labels, family="deeplabv3plus", encoder="mobilenet_v2", pretrained=True)
    with pytest.raises(ValueError, match="may not set 'pretrained_encoder'"):
        train(image, labels, family="deeplabv3plus", network_kwargs={PRETRAINED_KEY: "x.pth"})
    url = "http://127.0.0.1:9/resnet18-12345678.pth"  # the discard port: connection refused
    monkeypatch.setitem(maskrcnn_weights.BACKBONE_WEIGHTS, "resnet18", url)
    with pytest.raises(FileNotFoundError) as missing:
        train(image, labels, family="deeplabv3plus", pretrained=True, max_epochs=1, **SMALL)
    assert str(maskrcnn_weights.weights_path(url)) in str(missing.value)
    assert url in str(missing.value)
