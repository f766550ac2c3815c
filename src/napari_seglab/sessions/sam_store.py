"""SAM prompting sessions on disk: saved after each commit, reopened with their image.

A session folder holds two plain files:

``session.json``
    Format name and version, the image it belongs to (path, name, shape,
    dtype and a content fingerprint), the model (name, source, decoder file),
    settings, the class table, the pending objects (class, prompts per plane,
    chosen proposal) with the active one, and the committed objects
    (label id, class, plane, the prompts that made them).
``labels.zarr``
    The committed label array (zarr), written to a temporary folder and moved
    into place (:func:`napari_seglab.batch.atomic.atomic_dir`); its attribute
    ``commit`` matches ``labels.commit`` of the JSON.

The folder is ``<image file name>.seglab-session`` beside the image when the
image has a file path and its folder is writable, else
``<cache>/sam-sessions/<fingerprint>`` (:func:`napari_seglab.cache.cache_dir`).
The JSON is replaced in one step (written to a temporary file, then moved),
after the labels; a reader never sees half a file.

Examples
--------
>>> saved = load_session("cells.tif.seglab-session")   # doctest: +SKIP
>>> saved.labels.max(), saved.classes, len(saved.pending)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .sam_records import PendingObject, prompts_from_json, prompts_to_json

__all__ = [
    "FORMAT",
    "SESSION_SUFFIX",
    "SavedSession",
    "SessionMismatch",
    "SessionStore",
    "find_session",
    "image_fingerprint",
    "load_session",
    "restore_session",
    "session_folder",
]

FORMAT = "napari-seglab SAM session"
VERSION = 1
SESSION_SUFFIX = ".seglab-session"
#: Planes of a stack that go into its fingerprint (evenly spaced, first and last included).
FINGERPRINT_PLANES = 16


class SessionMismatch(ValueError):
    """A saved session belongs to another image; it is never applied."""


def image_fingerprint(data, stack: bool) -> str:
    """A content fingerprint of an image: shape, dtype and pixels.

    Parameters
    ----------
    data : array
        ``(Y, X[, C])`` or a stack ``(Z, Y, X[, C])`` (numpy, dask, zarr; never loaded whole:
        a stack contributes :data:`FINGERPRINT_PLANES` evenly spaced planes).
    stack : bool
        Whether axis 0 indexes planes.

    Returns
    -------
    str
        ``"blake2b:<hex>"``.
    """
    shape = tuple(int(n) for n in np.shape(data))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([shape, str(data.dtype)]).encode())
    if not stack or not shape[0]:
        digest.update(np.ascontiguousarray(np.asarray(data)).tobytes())
    else:
        count = min(shape[0], FINGERPRINT_PLANES)
        for z in np.unique(np.linspace(0, shape[0] - 1, count).round().astype(int)):
            digest.update(np.ascontiguousarray(np.asarray(data[int(z)])).tobytes())
    return "blake2b:" + digest.hexdigest()


def session_folder(image_path=None, fingerprint: str = "") -> Path:
    """Where the session of an image is saved.

    Beside the image (``<name>.seglab-session``) when ``image_path`` is given and
    its folder is writable; else in the cache folder, keyed by ``fingerprint``.
    """
    if image_path:
        path = Path(image_path).expanduser()
        if path.parent.is_dir() and os.access(path.parent, os.W_OK | os.X_OK):
            return path.parent / (path.name + SESSION_SUFFIX)
    if not fingerprint:
        raise ValueError("Expected an image path in a writable folder or a fingerprint, got none.")
    from ..cache import cache_dir

    return cache_dir("sam-sessions") / fingerprint.split(":")[-1]


def find_session(image_path=None, fingerprint: str = "") -> Path | None:
    """The saved session folder of an image (beside it, else in the cache), or None."""
    candidates = []
    if image_path:
        path = Path(image_path).expanduser()
        candidates.append(path.parent / (path.name + SESSION_SUFFIX))
    if fingerprint:
        from ..cache import cache_dir

        candidates.append(cache_dir("sam-sessions", create=False) / fingerprint.split(":")[-1])
    return next((c for c in candidates if (c / "session.json").is_file()), None)


@dataclass
class SavedSession:
    """A session as read from disk: plain data.

    Attributes
    ----------
    folder : Path
    version : int
    saved_at : str
        ISO time of the last save (UTC).
    image : dict
        ``path``, ``name``, ``shape`` (labels shape), ``data_shape``, ``dtype``, ``fingerprint``.
    model : dict
        ``name``, ``source``, ``decoder``.
    settings : dict
    classes : dict of int to str
        Class id -> name.
    pending : list of dict
        ``uid``, ``class_id``, ``plane``, ``proposal``, ``prompts`` (records of
        ``plane``, ``points`` ``(N, 2)`` as ``(row, col)``, ``positive``, ``box``).
    active : int
        Index into ``pending`` of the active object.
    committed : list of dict
        ``id``, ``class_id``, ``plane``, ``prompts``.
    labels : int array or None
        The committed labels, of ``image["shape"]``.
    warnings : list of str
        What looked wrong but did not stop the read.
    """

    folder: Path
    version: int
    saved_at: str
    image: dict
    model: dict
    settings: dict
    classes: dict[int, str]
    pending: list[dict]
    active: int
    committed: list[dict]
    labels: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    def check_image(self, data) -> None:
        """Raise :class:`SessionMismatch` unless ``data`` is the image this session was made on."""
        shape = [int(n) for n in np.shape(data)]
        expected = [int(n) for n in self.image.get("data_shape", [])]
        if shape != expected:
            raise SessionMismatch(
                f"The session in {self.folder} was made on an image of shape {tuple(expected)}, "
                f"got one of shape {tuple(shape)}: not resumed."
            )
        found = image_fingerprint(data, bool(self.image.get("stack", False)))
        if found != self.image.get("fingerprint"):
            raise SessionMismatch(
                f"The session in {self.folder} was made on another image of the same shape "
                f"(fingerprint {self.image.get('fingerprint')}, this one {found}): not resumed."
            )


def load_session(path) -> SavedSession:
    """Read a saved session folder (or its ``session.json``).

    Raises
    ------
    FileNotFoundError
        No ``session.json`` there.
    ValueError
        Not a session file, or a newer format version.
    """
    path = Path(path).expanduser()
    folder = path.parent if path.name == "session.json" else path
    file = folder / "session.json"
    if not file.is_file():
        raise FileNotFoundError(f"Expected a saved SAM session at {file}, found none.")
    state = json.loads(file.read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise ValueError(f"Expected format {FORMAT!r} in {file}, got {state.get('format')!r}.")
    if int(state.get("version", 0)) > VERSION:
        raise ValueError(
            f"Expected a session of version <= {VERSION} in {file}, got {state['version']}: "
            "update napari-seglab to read it."
        )
    saved = SavedSession(
        folder=folder,
        version=int(state["version"]),
        saved_at=str(state.get("saved_at", "")),
        image=dict(state["image"]),
        model=dict(state.get("model", {})),
        settings=dict(state.get("settings", {})),
        classes={int(c["id"]): str(c["name"]) for c in state.get("classes", [])},
        pending=list(state.get("pending", [])),
        active=int(state.get("active", 0)),
        committed=list(state.get("committed", [])),
    )
    record = state.get("labels")
    if record:
        import zarr

        array = zarr.open_array(str(folder / record["path"]), mode="r")
        saved.labels = np.asarray(array[...])
        if int(array.attrs.get("commit", -1)) != int(record.get("commit", -2)):
            saved.warnings.append(
                "The labels and the session file are from different saves (a crash between "
                "the two writes): the last commit's record may be missing."
            )
        if list(saved.labels.shape) != list(saved.image["shape"]):
            raise ValueError(
                f"Expected saved labels of shape {tuple(saved.image['shape'])} in {folder}, "
                f"got {saved.labels.shape}."
            )
    return saved


class SessionStore:
    """Saves one session's state to one folder (attach it as ``session.store``).

    Parameters
    ----------
    folder : path-like
        The session folder (created on the first save).
    image : dict
        What identifies the image (see :attr:`SavedSession.image`).
    """

    def __init__(self, folder, image: dict) -> None:
        self.folder = Path(folder)
        self.image = dict(image)
        self.commit = 0
        self._labels_record: dict | None = None

    @classmethod
    def for_session(cls, session, image_path=None, *, name: str = "", folder=None):
        """A store for the image ``session`` prompts on (beside its file, else in the cache)."""
        session._require_image()
        data = session.source.data
        fingerprint = image_fingerprint(data, session.is_stack)
        image = {
            "stack": session.is_stack,
            "path": None if not image_path else str(Path(image_path).expanduser().resolve()),
            "name": name,
            "shape": list(session.labels_shape),
            "data_shape": [int(n) for n in np.shape(data)],
            "dtype": str(data.dtype),
            "fingerprint": fingerprint,
        }
        return cls(folder or session_folder(image_path, fingerprint), image)

    def exists(self) -> bool:
        return (self.folder / "session.json").is_file()

    def save(self, session, labels=None) -> Path:
        """Write the session's state; with ``labels`` also the label array (zarr) first."""
        from ..batch.atomic import atomic_dir
        from ..checkpoints import atomic_path

        self.folder.mkdir(parents=True, exist_ok=True)
        if labels is not None:
            import zarr

            labels = np.asarray(labels)
            self.commit += 1
            with atomic_dir(self.folder / "labels.zarr") as tmp:
                chunks = (1, *labels.shape[1:]) if labels.ndim == 3 else labels.shape
                array = zarr.open_array(
                    str(tmp), mode="w", shape=labels.shape, dtype=labels.dtype, chunks=chunks
                )
                array[...] = labels
                array.attrs["commit"] = self.commit
            self._labels_record = {"path": "labels.zarr", "commit": self.commit}
        state = session_state(session, self.image, self._labels_record)
        with atomic_path(self.folder / "session.json") as tmp:
            tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        return self.folder

    def adopt(self, saved: SavedSession) -> None:
        """Continue numbering after a session read back from this folder."""
        labels = (saved.folder / "session.json").read_text(encoding="utf-8")
        self._labels_record = json.loads(labels).get("labels")
        self.commit = int((self._labels_record or {}).get("commit", 0))


def session_state(session, image: dict, labels_record: dict | None) -> dict:
    """The JSON-able state of ``session`` (what ``session.json`` holds)."""
    model = session.model
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image": image,
        "model": {
            "name": getattr(model, "name", None),
            "source": session.model_source,
            "decoder": session.model_decoder,
        },
        "settings": {"neighbours": session.neighbours, **session.settings},
        "classes": [{"id": k, "name": v} for k, v in sorted(session.classes.items())],
        "pending": [
            {
                "uid": obj.uid,
                "class_id": obj.class_id,
                "plane": obj.plane,
                "proposal": obj.proposal,
                "prompts": prompts_to_json(obj.prompts),
            }
            for obj in session.objects
        ],
        "active": session.objects.index(session.active_object),
        "committed": [
            {
                "id": k,
                "class_id": v["class_id"],
                "plane": v["plane"],
                "prompts": prompts_to_json(v["prompts"]),
            }
            for k, v in sorted(session.committed_objects.items())
        ],
        "labels": labels_record,
    }


def restore_session(session, saved: SavedSession) -> list[str]:
    """Put a saved session's classes, objects and settings into ``session``.

    The session must already prompt on the saved session's image (checked:
    :meth:`SavedSession.check_image`); the labels (``saved.labels``) are the
    caller's to write. Pending objects come back with their prompts; their
    proposals are recomputed (:meth:`~.SamPromptSession.predict_pending`).

    Returns
    -------
    list of str
        Warnings (a different model than the one the session was made with, ...).

    Raises
    ------
    SessionMismatch
        The session belongs to another image; ``session`` is left as it was.
    """
    session._require_image()
    saved.check_image(session.source.data)
    warnings = list(saved.warnings)
    name = saved.model.get("name")
    if name and session.model is not None and session.model.name != name:
        warnings.append(f"The session was made with model {name}; now {session.model.name}.")
    pending = []
    for record in saved.pending:
        obj = PendingObject(int(record["uid"]), int(record.get("class_id", 0)))
        obj.prompts = prompts_from_json(record.get("prompts", []))
        obj.plane = record.get("plane")
        obj.resume_proposal = int(record.get("proposal", 0))
        pending.append(obj)
    settings = dict(saved.settings)
    session.neighbours = int(settings.pop("neighbours", session.neighbours))
    session.settings = settings
    session.classes = dict(saved.classes)
    session.committed_objects = {
        int(r["id"]): {
            "class_id": int(r.get("class_id", 0)),
            "plane": r.get("plane"),
            "prompts": prompts_from_json(r.get("prompts", [])),
        }
        for r in saved.committed
    }
    session.objects = pending or [PendingObject(0)]
    session._next_uid = max(obj.uid for obj in session.objects) + 1
    session.generation += 1
    for obj in session.objects:
        obj.changed_at = session.generation
    active = session.objects[min(max(saved.active, 0), len(session.objects) - 1)]
    session.classes_changed.emit()
    session._activate(active)
    return warnings
