"""Dense CRF refinement: snap probability maps and label layers to image edges.

A fully connected CRF (Krähenbühl & Koltun, 2011, through ``pydensecrf2``)
combines per-pixel class probabilities with two pairwise kernels: an
appearance (bilateral) kernel over position and intensity, and a smoothness
kernel over position. 2D images use ``DenseCRF2D``; 3D stacks use the general
``DenseCRF`` with ``(z, y, x)`` features in physical units (``spacing``).

Public API::

    from napari_seglab import crf
    labels = crf.refine(image, probabilities, spacing=(2.0, 0.5, 0.5))
    refined = crf.refine_labels(image, labels, confidence=0.7)

``refine_steps`` and ``refine_labels_steps`` are generators yielding
:class:`CrfProgress` and returning the result; they accept a ``cancel``
callable (e.g. ``threading.Event().is_set``).
"""

from ._demo import blobby_labels, boundary_f_score, degrade_probabilities, dice
from ._engine import CrfProgress, plan_blocks
from ._labels import refine_labels, refine_labels_steps
from ._params import CrfParameters
from ._refine import refine, refine_steps

__all__ = [
    "CrfParameters",
    "CrfProgress",
    "blobby_labels",
    "boundary_f_score",
    "degrade_probabilities",
    "dice",
    "plan_blocks",
    "refine",
    "refine_labels",
    "refine_labels_steps",
    "refine_steps",
]
