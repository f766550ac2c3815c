"""Qt-free objects that hold what a user is doing, driven alike by widgets and scripts.

A session owns state (a loaded model, the image, prompts, the current
proposal) and the rules for changing it; it computes through the core
packages and reports changes through ``psygnal`` signals. Widgets map their
controls onto a session and back; two widgets that share work share the
session object. Sessions never touch napari or Qt.
"""

from .sam_objects import class_image
from .sam_prompting import SamPromptSession
from .sam_records import PendingObject, PlanePrompts, PredictionResult, PropagationResult
from .sam_store import (
    SavedSession,
    SessionMismatch,
    SessionStore,
    find_session,
    image_fingerprint,
    load_session,
    restore_session,
)

__all__ = [
    "PendingObject",
    "PlanePrompts",
    "PredictionResult",
    "PropagationResult",
    "SamPromptSession",
    "SavedSession",
    "SessionMismatch",
    "SessionStore",
    "class_image",
    "find_session",
    "image_fingerprint",
    "load_session",
    "restore_session",
]
