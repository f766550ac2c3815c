"""The batch manifest: content hashes, the stat shortcut, skip decisions, atomic saves."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from napari_seglab.batch.manifest import (
    MANIFEST_NAME,
    Manifest,
    content_hash,
    input_signature,
    item_hash,
)
from napari_seglab.batch.pipeline import BatchItem, ItemOutcome


class Copy:
    """A minimal pipeline: copies the input's bytes to NAME.out."""

    name = "copy"

    def __init__(self, tag: str = "a"):
        self.tag = tag

    def settings(self):
        return {"tag": self.tag}

    def fingerprint(self):
        return hashlib.sha256(self.tag.encode()).hexdigest()[:16]

    def output_names(self, item):
        return [f"{item.name}.out"]

    def load(self):
        return None

    def run_item(self, item, output_dir, loaded):
        (output_dir / f"{item.name}.out").write_bytes(item.path.read_bytes())
        return ItemOutcome([f"{item.name}.out"], {})


def test_content_hash_of_files_and_folders(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    assert content_hash(f) == hashlib.sha256(b"hello").hexdigest()
    store = tmp_path / "s.zarr"
    (store / "0").mkdir(parents=True)
    (store / "0" / "c").write_bytes(b"1")
    (store / "zarr.json").write_bytes(b"{}")
    first = content_hash(store)
    (store / "0" / "c").write_bytes(b"2")
    assert content_hash(store) != first
    (store / "0" / "c").write_bytes(b"1")
    assert content_hash(store) == first
    (store / "0" / "c").rename(store / "0" / "d")  # same bytes, another name
    assert content_hash(store) != first
    with pytest.raises(FileNotFoundError):
        content_hash(tmp_path / "missing")


def test_item_hash_covers_extra_files(tmp_path):
    a, t = tmp_path / "a.tif", tmp_path / "t.tif"
    a.write_bytes(b"a")
    t.write_bytes(b"t")
    plain = BatchItem("a", a)
    with_truth = BatchItem("a", a, {"truth": t})
    assert item_hash(plain) == content_hash(a)
    before = item_hash(with_truth)
    t.write_bytes(b"T")
    assert item_hash(with_truth) != before


def _done(manifest, item, pipeline, tmp_path):
    outputs = pipeline.output_names(item)
    manifest.mark_pending(item, pipeline, outputs)
    pipeline.run_item(item, tmp_path / "out", None)
    manifest.record(
        item,
        status="done",
        input_hash=content_hash(item.path),
        input_stat=input_signature(item.path),
    )


def test_is_done_needs_same_content_settings_and_outputs(tmp_path):
    (tmp_path / "out").mkdir()
    src = tmp_path / "x.npy"
    src.write_bytes(b"data")
    item, pipeline = BatchItem("x", src), Copy()
    manifest = Manifest(tmp_path / "out")
    assert not manifest.is_done(item, pipeline, ["x.out"])
    _done(manifest, item, pipeline, tmp_path)
    manifest.save()
    again = Manifest.load(tmp_path / "out")
    assert again.is_done(item, pipeline, ["x.out"])
    assert not again.is_done(item, Copy("b"), ["x.out"])  # other settings
    (tmp_path / "out" / "x.out").unlink()
    assert not again.is_done(item, pipeline, ["x.out"])  # output gone
    pipeline.run_item(item, tmp_path / "out", None)
    src.write_bytes(b"DATA")  # new content
    assert not again.is_done(item, pipeline, ["x.out"])


def test_unchanged_signature_reuses_the_hash_and_a_touch_rehashes(tmp_path):
    (tmp_path / "out").mkdir()
    src = tmp_path / "x.npy"
    src.write_bytes(b"data")
    item, pipeline = BatchItem("x", src), Copy()
    manifest = Manifest(tmp_path / "out")
    _done(manifest, item, pipeline, tmp_path)
    # a forged hash is believed while the file's signature is unchanged: no re-read
    manifest.items["x"]["input_hash"] = "forged"
    assert manifest.known_hash(item) == "forged"
    assert manifest.is_done(item, pipeline, ["x.out"])
    # touching the file (same bytes) changes the signature: hashed again, then mismatch
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert manifest.known_hash(item) is None
    assert not manifest.is_done(item, pipeline, ["x.out"])
    # with the true hash recorded, a touch alone keeps the item done (and refreshes the stat)
    manifest.items["x"]["input_hash"] = content_hash(src)
    assert manifest.is_done(item, pipeline, ["x.out"])
    assert manifest.items["x"]["input_stat"] == input_signature(src)


def test_failed_and_pending_items_are_redone(tmp_path):
    (tmp_path / "out").mkdir()
    src = tmp_path / "x.npy"
    src.write_bytes(b"data")
    item, pipeline = BatchItem("x", src), Copy()
    manifest = Manifest(tmp_path / "out")
    _done(manifest, item, pipeline, tmp_path)
    for status in ("failed", "pending"):
        manifest.items["x"]["status"] = status
        assert not manifest.is_done(item, pipeline, ["x.out"])


def test_save_is_atomic_json_and_foreign_files_are_refused(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.items["a"] = {"status": "done", "row": {"dice": 0.5}}
    path = manifest.save()
    assert path == tmp_path / MANIFEST_NAME
    data = json.loads(path.read_text())
    assert data["format"] == "napari-seglab.batch-manifest"
    assert data["items"]["a"]["row"] == {"dice": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temporary left
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a napari-seglab batch manifest"):
        Manifest.load(tmp_path)
    path.write_text("{truncated")
    with pytest.raises(ValueError, match="remove it"):
        Manifest.load(tmp_path)
    assert Manifest.load(tmp_path / "elsewhere").items == {}


def test_a_resubmitted_item_keeps_its_recorded_hash_for_the_same_input(tmp_path):
    (tmp_path / "out").mkdir()
    src = tmp_path / "x.npy"
    src.write_bytes(b"data")
    item, pipeline = BatchItem("x", src), Copy()
    manifest = Manifest(tmp_path / "out")
    _done(manifest, item, pipeline, tmp_path)
    manifest.mark_pending(item, Copy("other settings"), ["x.out"])
    assert manifest.items["x"]["status"] == "pending"
    assert manifest.known_hash(item) == content_hash(src)  # no need to read it again
    manifest.mark_pending(BatchItem("x", tmp_path / "elsewhere.npy"), pipeline, ["x.out"])
    assert manifest.items["x"]["input_hash"] is None
