"""SAM 2 checkpoints: registry, size-pinned download from a loopback HTTP server, loading."""

from __future__ import annotations

import hashlib
import http.server
import io
import sys
import threading
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from napari_seglab.sam import load_model  # noqa: E402
from napari_seglab.sam.sam2_download import ensure_sam2_checkpoint  # noqa: E402
from napari_seglab.sam.sam2_model import (  # noqa: E402
    Sam2Model,
    Sam2NotInstalledError,
)
from napari_seglab.sam.sam2_registry import (  # noqa: E402
    SAM2_CHECKPOINTS,
    Sam2CheckpointSpec,
    get_sam2_checkpoint,
)


@pytest.fixture(scope="module")
def source(one_torch_thread, tiny_sam2_models):
    """A random-weight Hiera-tiny network and its checkpoint bytes (``{"model": state}``)."""
    model = tiny_sam2_models()
    buffer = io.BytesIO()
    torch.save({"model": model.net.state_dict()}, buffer)
    return model, buffer.getvalue()


@pytest.fixture
def server(source):
    body, hits = source[1], Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path != "/sam2.pt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def spec_for(url: str, size: int) -> Sam2CheckpointSpec:
    return Sam2CheckpointSpec(
        name="sam2-test",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        url=url,
        filename="sam2-test.pt",
        size=size,
        parameters_m=38.9,
    )


def test_registry_has_the_four_sam21_models_with_package_configs():
    assert sorted(SAM2_CHECKPOINTS) == [
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
        "sam2.1_hiera_small",
        "sam2.1_hiera_tiny",
    ]
    package = resources.files("sam2")
    for spec in SAM2_CHECKPOINTS.values():
        assert spec.url == (
            f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{spec.filename}"
        )
        assert package.joinpath(spec.config).is_file()
        assert spec.hash is None  # none is published: the size is the pin
        assert spec.size > 100_000_000
    assert get_sam2_checkpoint("sam2_tiny").size == 156_008_466


def test_download_checks_the_size_and_loads_the_same_weights(server, source, cache_folder):
    url, hits = server
    model, body = source
    spec = spec_for(f"{url}/sam2.pt", len(body))
    loaded = load_model(spec, device="cpu", progress=False)
    assert isinstance(loaded, Sam2Model)
    assert loaded.checkpoint == cache_folder / "sam" / "sam2-test.pt"
    assert loaded.encoder_hash == "sha256:" + hashlib.sha256(body).hexdigest()
    assert loaded.img_size == 1024  # the registered config, unchanged
    theirs = model.net.state_dict()
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    assert ensure_sam2_checkpoint(spec, progress=False) == loaded.checkpoint
    assert hits["/sam2.pt"] == 1  # cached: not downloaded again


def test_a_download_of_the_wrong_size_is_deleted(server, source, cache_folder):
    url, _ = server
    size = len(source[1])
    with pytest.raises(RuntimeError, match=rf"has {size} bytes, expected {size + 1}"):
        ensure_sam2_checkpoint(spec_for(f"{url}/sam2.pt", size + 1), progress=False)
    assert not (cache_folder / "sam" / "sam2-test.pt").exists()


def test_a_cached_file_of_the_wrong_size_is_refused(cache_folder):
    target = cache_folder / "sam" / "sam2.1_hiera_tiny.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="has 16 bytes, expected 156008466"):
        load_model("sam2.1_hiera_tiny", device="cpu", download=False)


def test_offline_error_names_the_path_url_and_size(cache_folder):
    with pytest.raises(FileNotFoundError) as info:
        load_model("sam2.1_hiera_small", device="cpu", download=False)
    text = str(info.value)
    assert str(cache_folder / "sam" / "sam2.1_hiera_small.pt") in text
    assert "092824/sam2.1_hiera_small.pt" in text
    assert "184416285 bytes" in text


def test_missing_extra_is_reported_before_any_download(monkeypatch, cache_folder):
    monkeypatch.setitem(sys.modules, "sam2", None)
    with pytest.raises(Sam2NotInstalledError, match="SAM2_BUILD_CUDA=0"):
        load_model("sam2.1_hiera_tiny", device="cpu")
    assert not (cache_folder / "sam").exists()
