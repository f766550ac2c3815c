"""One SAM prompting session per viewer, shared by the SAM widgets of that viewer.

The sessions live in a :class:`weakref.WeakKeyDictionary` keyed by the
viewer (napari's ``Viewer`` is an evented model that takes no new
attributes, so the session cannot be attached to it). The dictionary holds
no viewer alive: when a viewer is closed and collected, its session (and the
model it holds) goes with it. Two viewers side by side get two sessions;
widgets never look each other up by dock title.
"""

from __future__ import annotations

import weakref

from ..sessions import SamPromptSession

__all__ = ["sam_session"]

_SAM_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
