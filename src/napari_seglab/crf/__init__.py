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
    crf.refine_blockwise(zarr_image, zarr_probabilities, zarr_out)   # larger than memory

``refine_steps`` and ``refine_labels_steps`` are jobs (:mod:`napari_seglab.jobs`):
generators yielding :class:`CrfProgress` (a :class:`~napari_seglab.jobs.ProgressEvent`
with a ``message``) and returning the result. They take ``cancel=`` (a
``threading.Event`` or a callable returning True to stop) and raise
:class:`~napari_seglab.jobs.JobCancelled` when it is set. The defaults below
are what the command line and the widget show.

Defaults are chosen to do no harm on real data (``docs/crf.md``): ``refine``
keeps a pixel's change only where the image agrees (``verify``), never erases
the core of an input object (``keep_objects``), can keep the class of pixels
the input is confident about (``keep_confident``), and warns when it would
change more than ``warn_fraction`` of the confident pixels.
"""

from ._blockwise import BlockwiseRefinement, refine_blockwise, refine_blockwise_steps
from ._engine import CrfProgress, plan_blocks
from ._labels import DEFAULT_CONFIDENCE, MODES, refine_labels, refine_labels_steps
from ._params import (
    DEFAULT_BILATERAL_WEIGHT,
    DEFAULT_INTENSITY_SIGMA,
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_BLOCK_VOXELS,
    DEFAULT_SMOOTHNESS_SIGMA_VOXELS,
    DEFAULT_SMOOTHNESS_WEIGHT,
    DEFAULT_SPATIAL_SIGMA_VOXELS,
    CrfParameters,
)
from ._refine import DEFAULT_KEEP_CONFIDENT, DEFAULT_WARN_FRACTION, refine, refine_steps

__all__ = [
    "DEFAULT_BILATERAL_WEIGHT",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_INTENSITY_SIGMA",
    "DEFAULT_ITERATIONS",
    "DEFAULT_KEEP_CONFIDENT",
    "DEFAULT_MAX_BLOCK_VOXELS",
    "DEFAULT_SMOOTHNESS_SIGMA_VOXELS",
    "DEFAULT_SMOOTHNESS_WEIGHT",
    "DEFAULT_SPATIAL_SIGMA_VOXELS",
    "DEFAULT_WARN_FRACTION",
    "MODES",
    "BlockwiseRefinement",
    "CrfParameters",
    "CrfProgress",
    "plan_blocks",
    "refine",
    "refine_blockwise",
    "refine_blockwise_steps",
    "refine_labels",
    "refine_labels_steps",
    "refine_steps",
]
