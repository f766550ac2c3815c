"""Checkpoints: download (pooch) from a real HTTP server on loopback, hashes, loading errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from napari_seglab.jobs import JobCancelled  # noqa: E402
from napari_seglab.sam import (  # noqa: E402
    CHECKPOINTS,
    CheckpointSpec,
    PromptSegmenter,
    build_tiny_sam,
    ensure_checkpoint,
    load_model,
    save_decoder_checkpoint,
)
from napari_seglab.sam.download import checkpoint_path, download_file  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(build_tiny_sam(seed=7).sam.state_dict(), buffer)
    return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[Counter] = Counter()

    def do_GET(self) -> None:
        self.requests[self.path] += 1
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        if self.path.endswith("?drip"):  # one byte every 0.2 s, at most 15 s
            self._drip(body)
            return
        truncate = self.path.endswith("?truncate")
        unsized = self.path.endswith("?unsized")  # no Content-Length: ends at close
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if not unsized:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate or unsized:
            self.close_connection = True

    def _drip(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(75):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client gave up
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def hits() -> Counter:
    """Requests the test server received, by path (with query)."""
    return Counter()


@pytest.fixture
def served(checkpoint_bytes) -> dict[str, bytes]:
    """What the test server serves, by path; tests may add files."""
    return {"/tiny.pth": checkpoint_bytes}


@pytest.fixture
def server(served, hits):
    handler = type("Handler", (_Handler,), {"files": served, "requests": hits})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def spec_for(url: str, digest: str) -> CheckpointSpec:
    return CheckpointSpec(
        name="tiny-test", architecture="tiny", url=url, filename="tiny.pth", hash=digest
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_registry_has_official_checkpoints():
    for name in ("vit_b", "vit_l", "vit_h", "medsam"):
        spec = CHECKPOINTS[name]
        assert spec.url.startswith("https://")
        assert spec.hash_algorithm in ("sha256", "md5")
        assert len(spec.hash_value) == {"sha256": 64, "md5": 32}[spec.hash_algorithm]
    assert CHECKPOINTS["medsam"].architecture == "vit_b"


def test_download_verifies_and_loads(server, checkpoint_bytes, cache_folder):
    digest = "sha256:" + hashlib.sha256(checkpoint_bytes).hexdigest()
    spec = spec_for(f"{server}/tiny.pth", digest)
    seen = []
    path = ensure_checkpoint(spec, progress=lambda done, total: seen.append((done, total)))
    assert path == cache_folder / "sam" / "tiny.pth"
    assert path.read_bytes() == checkpoint_bytes
    assert seen[-1] == (len(checkpoint_bytes), len(checkpoint_bytes))
    model = load_model(spec, device="cpu", progress=False)
    reference = build_tiny_sam(seed=7)
    for (name, ours), (_, theirs) in zip(
        model.sam.state_dict().items(), reference.sam.state_dict().items()
    ):
        torch.testing.assert_close(ours, theirs, msg=name)
    assert model.encoder_hash == digest


def test_hash_mismatch_leaves_no_file(server, cache_folder):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(RuntimeError, match=r"expected 0{64}, got [0-9a-f]{64}"):
        ensure_checkpoint(spec_for(f"{server}/tiny.pth", wrong), progress=False)
    assert leftovers(cache_folder) == []


def test_truncated_download_leaves_no_file(server, checkpoint_bytes, cache_folder):
    digest = "sha256:" + hashlib.sha256(checkpoint_bytes).hexdigest()
    target = cache_folder / "sam" / "tiny.pth"
    with pytest.raises(RuntimeError, match=r"(truncated|interrupted).*of \d+"):
        download_file(f"{server}/tiny.pth?truncate", target, digest, progress=False)
    assert leftovers(cache_folder) == []


def test_offline_error_names_path_and_url(cache_folder):
    spec = spec_for("http://127.0.0.1:9/tiny.pth", "sha256:" + "1" * 64)
    with pytest.raises(FileNotFoundError) as info:
        ensure_checkpoint(spec, progress=False)
    message = str(info.value)
    assert str(cache_folder / "sam" / "tiny.pth") in message
    assert "http://127.0.0.1:9/tiny.pth" in message
    with pytest.raises(FileNotFoundError, match=r"sam_vit_b_01ec64\.pth"):
        load_model("vit_b", device="cpu", download=False)
    assert leftovers(cache_folder) == []


def test_cached_file_with_wrong_hash_is_refused(cache_folder):
    target = checkpoint_path("vit_b")
    target.write_bytes(b"not the real checkpoint")
    with pytest.raises(RuntimeError, match=r"sam_vit_b_01ec64\.pth.*expected ec2df627"):
        load_model("vit_b", device="cpu", download=False)


def test_corrupt_and_mismatched_checkpoints(tmp_path, checkpoint_bytes):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 3])
    with pytest.raises(RuntimeError, match=r"corrupt\.pth.*weights_only"):
        load_model("tiny", checkpoint=corrupt, device="cpu")
    good = tmp_path / "tiny.pth"
    good.write_bytes(checkpoint_bytes)
    with pytest.raises(RuntimeError, match=r"does not fit the SAM vit_b.*looks like tiny"):
        load_model("vit_b", checkpoint=good, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_model("tiny", checkpoint=tmp_path / "missing.pth", device="cpu")
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(RuntimeError, match="expected a state dict"):
        load_model("tiny", checkpoint=not_a_dict, device="cpu")
    with pytest.raises(ValueError, match="Unknown SAM"):
        load_model("vit_z", device="cpu")
    with pytest.raises(ValueError, match="no published weights"):
        load_model("tiny", device="cpu")


def test_decoder_checkpoint_is_applied_and_keeps_embeddings(tmp_path, checkpoint_bytes):
    full = tmp_path / "tiny.pth"
    full.write_bytes(checkpoint_bytes)
    tuned = build_tiny_sam(seed=8)  # stands in for a fine-tuned decoder
    decoder = save_decoder_checkpoint(tmp_path / "decoder.pth", tuned)
    base = load_model("tiny", checkpoint=full, device="cpu")
    with pytest.warns(UserWarning, match="no provenance"):  # a plain decoder file
        model = load_model("tiny", checkpoint=full, device="cpu", decoder_checkpoint=decoder)
    for key, value in tuned.sam.mask_decoder.state_dict().items():
        torch.testing.assert_close(model.sam.mask_decoder.state_dict()[key], value)
    assert model.encoder_hash == base.encoder_hash  # embeddings stay valid
    assert model.model_hash != base.model_hash
    image = np.random.default_rng(0).integers(0, 255, (40, 40)).astype(np.uint8)
    a, b = PromptSegmenter(base), PromptSegmenter(model)
    a.set_image(image)
    b.set_image(image)
    assert not np.allclose(
        a.predict(points=[[20, 20]]).logits, b.predict(points=[[20, 20]]).logits
    )
    with pytest.raises(RuntimeError, match=r"full\.pth|mask_decoder"):
        load_model("tiny", checkpoint=full, device="cpu", decoder_checkpoint=full)


def test_cached_file_is_not_downloaded_again(server, checkpoint_bytes, cache_folder, hits):
    digest = "sha256:" + hashlib.sha256(checkpoint_bytes).hexdigest()
    spec = spec_for(f"{server}/tiny.pth", digest)
    first = ensure_checkpoint(spec, progress=False)
    assert ensure_checkpoint(spec, progress=False) == first
    assert download_file(spec.url, first, digest, progress=False) == first
    assert hits == Counter({"/tiny.pth": 1})
    assert leftovers(cache_folder) == ["tiny.pth", "tiny.pth.verified.json"]


def test_md5_pinned_checkpoint(server, checkpoint_bytes, cache_folder, capsys):
    md5 = hashlib.md5(checkpoint_bytes).hexdigest()
    with pytest.raises(RuntimeError, match=r"registered MD5: expected 0{32}, got " + md5):
        ensure_checkpoint(spec_for(f"{server}/tiny.pth", "md5:" + "0" * 32), progress=False)
    assert leftovers(cache_folder) == []
    path = ensure_checkpoint(spec_for(f"{server}/tiny.pth", "md5:" + md5), progress=True)
    assert path.read_bytes() == checkpoint_bytes
    assert "tiny.pth" in capsys.readouterr().err  # the tqdm bar


def test_missing_on_server_gives_offline_guidance(server, cache_folder):
    spec = spec_for(f"{server}/gone.pth", "sha256:" + "1" * 64)
    with pytest.raises(FileNotFoundError) as info:
        ensure_checkpoint(spec, progress=False)
    message = str(info.value)
    assert "404" in message
    assert f"place it at {cache_folder / 'sam' / 'tiny.pth'}" in message
    assert leftovers(cache_folder) == []


def test_cancelled_download_leaves_no_file(server, served, cache_folder, hits):
    payload = np.random.default_rng(0).bytes(3 << 20)  # three 1 MiB blocks
    url = f"{server}/big.bin"
    served["/big.bin"] = payload
    seen = []
    flag = threading.Event()

    def progress(done, total):
        seen.append((done, total))
        flag.set()

    target = cache_folder / "sam" / "big.bin"
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    with pytest.raises(JobCancelled, match=r"big\.bin was cancelled"):
        download_file(url, target, digest, progress=progress, cancel=flag)
    assert seen == [(1 << 20, 3 << 20)]
    assert leftovers(cache_folder) == []
    with pytest.raises(JobCancelled):  # set before the start: no request at all
        download_file(url, target, digest, progress=False, cancel=flag)
    assert hits == Counter({"/big.bin": 1})


def test_download_without_content_length(server, checkpoint_bytes, cache_folder):
    digest = "sha256:" + hashlib.sha256(checkpoint_bytes).hexdigest()
    seen = []
    target = cache_folder / "sam" / "tiny.pth"
    path = download_file(
        f"{server}/tiny.pth?unsized", target, digest, progress=lambda *a: seen.append(a)
    )
    assert path.read_bytes() == checkpoint_bytes
    assert seen[-1] == (len(checkpoint_bytes), None)


# -- a server that drips bytes cannot hold a download (issue 12) ----------------------------


def _drip(server, cache_folder, **options):
    target = cache_folder / "sam" / "tiny.pth"
    start = time.monotonic()
    with pytest.raises((RuntimeError, JobCancelled)) as info:
        download_file(f"{server}/tiny.pth?drip", target, None, progress=False, **options)
    return info.value, time.monotonic() - start


def test_dripping_server_meets_the_overall_deadline(server, cache_folder):
    error, elapsed = _drip(server, cache_folder, timeout=10, deadline=3, min_rate=0)
    assert isinstance(error, RuntimeError)
    assert "did not finish within its 3 s deadline" in str(error)
    assert "tiny.pth" in str(error)
    assert 3 <= elapsed < 5
    assert leftovers(cache_folder) == []


def test_cancel_is_checked_between_reads(server, cache_folder):
    flag = threading.Event()
    timer = threading.Timer(1.0, flag.set)
    timer.start()
    error, elapsed = _drip(
        server, cache_folder, timeout=10, deadline=None, min_rate=0, cancel=flag
    )
    timer.cancel()
    assert isinstance(error, JobCancelled)
    assert 1 <= elapsed < 2.5
    assert leftovers(cache_folder) == []


def test_too_slow_transfer_is_given_up(server, cache_folder):
    error, elapsed = _drip(server, cache_folder, timeout=1, deadline=None, min_rate=1024)
    assert isinstance(error, RuntimeError)
    assert "too slow" in str(error)
    assert elapsed < 3
    assert leftovers(cache_folder) == []
