"""Per-viewer shared objects: the SAM prompting session, the U-Net model in use.

One SAM prompting session per viewer is shared by the SAM widgets of that
viewer; one :class:`ModelSlot` per viewer holds the U-Net model trained or
loaded there, for the batch panel.

The sessions live in a :class:`weakref.WeakKeyDictionary` keyed by the
viewer (napari's ``Viewer`` is an evented model that takes no new
attributes, so the session cannot be attached to it). The dictionary holds
no viewer alive: when a viewer is closed and collected, its session (and the
model it holds) goes with it. Two viewers side by side get two sessions;
widgets never look each other up by dock title.
"""

from __future__ import annotations

import weakref

from psygnal import Signal

from ..sessions import SamPromptSession

__all__ = ["ModelSlot", "model_slot", "sam_session"]

_SAM_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ModelSlot:
    """The segmentation model trained or loaded in one viewer (None before).

    Attributes
    ----------
    model : SegmentationModel or None
    changed : psygnal.Signal
        Emitted with the new model after :meth:`set`.
    """

    changed = Signal(object)

    def __init__(self) -> None:
        self.model = None

    def set(self, model) -> None:
        """Make ``model`` the viewer's current model and tell the listeners."""
        self.model = model
        self.changed.emit(model)


def model_slot(viewer) -> ModelSlot:
    """The :class:`ModelSlot` of ``viewer`` (created on first use)."""
    slot = _MODEL_SLOTS.get(viewer)
    if slot is None:
        slot = _MODEL_SLOTS[viewer] = ModelSlot()
    return slot


def sam_session(viewer) -> SamPromptSession:
    """The SAM prompting session of ``viewer`` (created on first use).

    Parameters
    ----------
    viewer : napari.Viewer

    Returns
    -------
    SamPromptSession
        The same object for every call with the same viewer.
    """
    session = _SAM_SESSIONS.get(viewer)
    if session is None:
        session = SamPromptSession()
        _SAM_SESSIONS[viewer] = session
    return session
