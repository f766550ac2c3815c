"""SAM sessions on disk: autosave after commits, plain files, reopened only on their image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("segment_anything")

from napari_seglab.sam import EmbeddingCache
from napari_seglab.sessions import (
    SamPromptSession,
    SessionMismatch,
    SessionStore,
    find_session,
    image_fingerprint,
    load_session,
    restore_session,
)


@pytest.fixture(scope="module")
def model(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    data = rng.normal(50, 5, (48, 64)).astype(np.float32)
    data[10:30, 20:40] += 100
    return data


def _session(model, data):
    session = SamPromptSession(EmbeddingCache(max_items=8))
    session.set_model(model)
    session.set_image(data)
    return session


def test_commit_autosaves_and_a_new_session_resumes_it(model, image, tmp_path):
    path = tmp_path / "cells.tif"
    path.write_bytes(b"stand-in for the image file")
    session = _session(model, image)
    session.store = SessionStore.for_session(session, path, name="cells")
    assert session.store.folder == tmp_path / "cells.tif.seglab-session"  # beside the image
    session.settings["overwrite"] = False
    nucleus = session.add_class("nucleus")
    session.set_object_class(nucleus)
    session.add_point((20, 30))
    session.predict()
    session.add_object(class_id=0)
    session.add_point((40, 10))
    session.predict()
    labels = np.zeros((48, 64), np.int32)
    ids = session.commit_all(labels)
    assert ids == [1, 2]
    # pending prompts of the next objects: saved by save() (the widget calls it after changes)
    session.add_point((5, 55))
    session.add_point((8, 50), positive=False)
    session.add_object(class_id=nucleus)
    session.add_point((30, 45))
    session.predict()
    chosen = session.next_proposal()
    session.select_object(session.objects[0].uid)
    session.save()

    assert find_session(path) == session.store.folder
    saved = load_session(session.store.folder)  # plain data, as a script reads it
    np.testing.assert_array_equal(saved.labels, labels)
    assert saved.classes == {1: "nucleus"}
    assert [c["id"] for c in saved.committed] == [1, 2]
    assert [c["class_id"] for c in saved.committed] == [nucleus, 0]
    assert saved.pending[0]["prompts"][0]["points"] == [[5.0, 55.0], [8.0, 50.0]]
    assert saved.pending[0]["prompts"][0]["positive"] == [True, False]
    assert saved.active == 0
    assert saved.model["name"] == model.name
    assert saved.settings["overwrite"] is False
    raw = json.loads((saved.folder / "session.json").read_text())
    assert raw["labels"] == {"path": "labels.zarr", "commit": 1}

    again = _session(model, image.copy())
    assert restore_session(again, saved) == []
    assert again.object_classes == {1: nucleus, 2: 0}
    assert again.classes == {1: "nucleus"}
    assert [o.uid for o in again.objects] == [o.uid for o in session.objects]
    assert again.active_object.uid == session.objects[0].uid
    assert again.prompts().points.tolist() == [[5, 55], [8, 50]]
    assert again.predict_pending() == 2  # proposals recomputed from the saved prompts
    second = again.objects[1]
    assert second.class_id == nucleus
    assert second.proposal == chosen  # the proposal the user had chosen
    np.testing.assert_array_equal(second.mask(), session.objects[1].mask())
    again.add_object()
    assert again.active_object.uid > max(o.uid for o in session.objects)  # uids not reused


def test_session_of_another_image_is_refused(model, image, tmp_path):
    session = _session(model, image)
    session.store = SessionStore.for_session(session, folder=tmp_path / "s")
    session.add_class("a")
    session.add_point((20, 30))
    session.save()
    saved = load_session(tmp_path / "s" / "session.json")
    for other in (image[:40], image + 1):  # another shape; same shape, other pixels
        target = _session(model, other)
        with pytest.raises(SessionMismatch, match="not resumed"):
            restore_session(target, saved)
        assert target.classes == {}  # left as it was
        assert not target.has_prompts


def test_without_a_writable_image_folder_the_cache_folder_is_used(model, image):
    session = _session(model, image)
    store = SessionStore.for_session(session, None)
    fingerprint = image_fingerprint(image, stack=False)
    assert store.folder.name == fingerprint.split(":")[1]
    assert os.environ["SEGLAB_CACHE_DIR"] in str(store.folder)
    assert find_session(None, fingerprint) is None
    session.store = store
    session.save()
    assert find_session(None, fingerprint) == store.folder
    assert image_fingerprint(image.copy(), stack=False) == fingerprint
    assert image_fingerprint(image[::-1].copy(), stack=False) != fingerprint


def test_load_refuses_what_is_not_a_session(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved SAM session"):
        load_session(tmp_path)
    (tmp_path / "session.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="Expected format"):
        load_session(tmp_path)


WRITER = """
import sys, numpy as np
from napari_seglab.sessions import SamPromptSession, SessionStore
session = SamPromptSession(cache=object())
session.set_image(np.zeros((8, 256, 256), np.uint8))
store = SessionStore.for_session(session, folder=sys.argv[1])
value = 0
while True:
    value = value % 250 + 1
    session.settings["value"] = value
    store.save(session, np.full((8, 256, 256), value, np.int32))
    print(value, flush=True)
"""


def test_a_writer_killed_mid_save_leaves_the_last_complete_session(tmp_path):
    folder = tmp_path / "s"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "1"  # one complete save
        for _ in range(3):
            process.stdout.readline()
        time.sleep(0.05)  # somewhere inside a later save
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = load_session(folder)
    values = np.unique(saved.labels)
    assert len(values) == 1  # never a mix of two saves
    assert values[0] in (saved.settings["value"], saved.settings["value"] % 250 + 1)
    assert saved.settings["value"] >= 1
    leftovers = [p.name for p in folder.iterdir() if p.name not in ("session.json", "labels.zarr")]
    assert all(name.startswith(".seglab-tmp-") for name in leftovers)
