"""Qt-free objects that hold what a user is doing, driven alike by widgets and scripts.

A session owns state (a loaded model, the image, prompts, the current
proposal) and the rules for changing it; it computes through the core
packages and reports changes through ``psygnal`` signals. Widgets map their
controls onto a session and back; two widgets that share work share the
session object. Sessions never touch napari or Qt.
"""

from .sam_prompting import SamPromptSession
from .sam_records import PlanePrompts, PredictionResult, PropagationResult

__all__ = ["PlanePrompts", "PredictionResult", "PropagationResult", "SamPromptSession"]
