"""The ``sam`` batch pipeline: prompts from a file -> one labels image per input.

For each input, the objects its prompts describe (:mod:`.prompts`) are
segmented one after the other with the same Qt-free
:class:`~napari_seglab.sessions.SamPromptSession` the prompting widget
drives: set the prompts of the object's plane, predict, pick a proposal,
optionally propagate through the stack (:func:`napari_seglab.sam.propagate`
via the session), and write the object into the labels as the widget's
commit does (free pixels only; existing objects are kept). The labels are
written atomically as ``<name>_sam.<ext>``: NIfTI for NIfTI and DICOM inputs
(with the source geometry), ``.npy`` for ``.npy``, ``.tif`` (with the
spacing) otherwise; see :func:`output_suffix`.

Objects get the ``label`` their prompt names or the next free id
(``max + 1``, above every label named for that image). Where a mask gives no
free pixel (empty, or entirely on earlier objects) the object is counted in
``objects_empty`` and nothing is written for it.

Embeddings come from an :class:`~napari_seglab.sam.EmbeddingCache` made once
per worker: in memory, plus the disk cache folder when ``cache_dir`` is given
(the same store the ``embed`` pipeline fills and the widget reads).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..jobs import CancelCheck, CancelLike, JobCancelled, ProgressEvent, Stopwatch, run_to_end
from .pipeline import BatchItem, ItemOutcome
from .prompts import PromptObject, PromptSet, check_prompts, read_prompts
from .sam_model import SamModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..io import ArrayFile
    from ..sam import EmbeddingCache, SamInput, SamModel

__all__ = [
    "PROPOSAL_RULES",
    "SamPipeline",
    "SamWorker",
    "choose_proposal",
    "output_suffix",
    "segment_objects",
    "segment_objects_steps",
    "write_labels",
]

#: How one proposal is picked when SAM proposes three (one ambiguous point).
PROPOSAL_RULES = ("best", "largest", "smallest")

#: Embeddings kept in memory per worker (4 MiB each for published models).
MEMORY_EMBEDDINGS = 64


@dataclass(frozen=True)
class ObjectProgress(ProgressEvent):
    """Progress of :func:`segment_objects_steps` (``stage == "prompting"``).

    Attributes
    ----------
    object : str
        The object just segmented (its name in the prompt file).
    value : int
        The label written for it (0: nothing was free to write).
    """

    object: str = ""
    value: int = 0


def choose_proposal(prediction: Any, rule: str) -> int:
    """Index of the proposal to keep: ``"best"`` score, ``"largest"`` or ``"smallest"`` area."""
    if rule not in PROPOSAL_RULES:
        raise ValueError(f"Expected a proposal rule in {PROPOSAL_RULES}, got {rule!r}.")
    if rule == "best" or len(prediction.scores) == 1:
        return int(prediction.best)
    areas = [int(np.count_nonzero(prediction.mask_at(k))) for k in range(len(prediction.scores))]
    return int(np.argmax(areas) if rule == "largest" else np.argmin(areas))


def segment_objects_steps(
    model: SamModel,
    image: SamInput | np.ndarray,
    objects: Sequence[PromptObject],
    *,
    cache: EmbeddingCache | None = None,
    proposal: str = "best",
    propagate: bool = False,
    cancel: CancelLike = None,
) -> Generator[ObjectProgress, None, np.ndarray]:
    """Segment ``objects`` on ``image`` into one label array (a job).

    Parameters
    ----------
    model : SamModel
    image : SamInput or array
        ``(Y, X[, 3])`` or a stack ``(Z, Y, X[, 3])``.
    objects : sequence of PromptObject
        Checked against the image first (:func:`.prompts.check_prompts`).
    cache : EmbeddingCache, optional
        Default: an in-memory cache of :data:`MEMORY_EMBEDDINGS` planes.
    proposal : {"best", "largest", "smallest"}
        Which of three proposals to keep (one point alone gives three).
    propagate : bool
        On a stack, extend each object from its plane through the stack.
    cancel : threading.Event or callable, optional
        Checked before each object.

    Yields
    ------
    ObjectProgress
        After each object.

    Returns
    -------
    unsigned integer array
        ``(Y, X)`` or ``(Z, Y, X)`` labels, 0 background; the smallest dtype
        that holds every id the objects can take.

    Raises
    ------
    JobCancelled
        ``partial``: the labels of the objects finished so far.
    ValueError
        Prompts that do not fit the image (named with their line).
    """
    from ..objects import ObjectWrite, new_object
    from ..sam import EmbeddingCache, SamInput
    from ..sessions import SamPromptSession

    check = CancelCheck(cancel)
    clock = Stopwatch()
    if proposal not in PROPOSAL_RULES:
        raise ValueError(f"Expected a proposal rule in {PROPOSAL_RULES}, got {proposal!r}.")
    source = image if isinstance(image, SamInput) else SamInput(image)
    n_planes = source.n_planes if source.is_stack else None
    check_prompts(objects, source.plane_shape, n_planes, image=objects[0].image if objects else "")
    session = SamPromptSession(
        cache if cache is not None else EmbeddingCache(max_items=MEMORY_EMBEDDINGS), neighbours=0
    )
    session.set_model(model)
    session.set_image(source)
    reserved = max((obj.label or 0 for obj in objects), default=0)
    labels = np.zeros(session.labels_shape, dtype=_label_dtype(reserved + len(objects)))
    for done, obj in enumerate(objects, start=1):
        check.raise_if_set("SAM prompting", partial=labels)
        session.set_prompts(obj.plane, **obj.predict_args())
        prediction = session.predict(obj.plane)
        session.proposal = choose_proposal(prediction, proposal)
        if source.is_stack and propagate:
            try:
                result = run_to_end(session.propagation_job(obj.plane, cancel=cancel))
            except JobCancelled as exc:  # the partial result is the labels, not one object
                raise JobCancelled(str(exc), partial=labels) from None
            block, offset = result.volume, None
        elif source.is_stack:
            block, offset = session.mask()[None], (obj.plane, 0, 0)
        else:
            block, offset = session.mask(), None
        free = new_object(labels, block, offset=offset)  # the pixels a commit would take
        value = 0
        if free.value:
            value = obj.label or max(free.value, reserved + 1)
            ObjectWrite(free.indices, value).apply(labels)
        session.clear_prompts()
        yield ObjectProgress(
            "prompting", done, len(objects), clock.elapsed, object=obj.key, value=value
        )
    return labels


def segment_objects(model: SamModel, image: Any, objects: Sequence[PromptObject], **options):
    """:func:`segment_objects_steps` run to the end: the label array."""
    return run_to_end(segment_objects_steps(model, image, objects, **options))


# -- outputs --------------------------------------------------------------------------------
def output_suffix(path: Path, output_format: str = "same") -> str:
    """The output suffix for an input.

    ``"same"`` keeps ``.nii.gz``, ``.nii`` and ``.npy``, writes DICOM series as
    ``.nii.gz`` (their geometry fits NIfTI, not TIFF) and everything else
    (TIFF, pictures, zarr) as ``.tif``; ``"tif"``, ``"nii.gz"``, ``"nii"`` or
    ``"npy"`` are used as given.
    """
    from ..io import WRITE_SUFFIXES

    if output_format != "same":
        suffix = "." + output_format.lstrip(".")
        if suffix not in WRITE_SUFFIXES:
            raise ValueError(
                f"Expected an output format in same, {', '.join(WRITE_SUFFIXES)}, "
                f"got {output_format!r}."
            )
        return suffix
    path = Path(path)
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii", ".npy"):
        if name.endswith(suffix):
            return suffix
    dicom_folder = path.is_dir() and not name.endswith(".zarr")
    if dicom_folder or name.endswith((".dcm", ".dicom", ".ima")):
        return ".nii.gz"
    return ".tif"


def _label_dtype(top: int) -> type:
    """The smallest unsigned integer dtype that holds ``top``."""
    for dtype in (np.uint8, np.uint16):
        if top <= np.iinfo(dtype).max:
            return dtype
    return np.uint32


def _smallest_uint(labels: np.ndarray) -> np.ndarray:
    dtype = _label_dtype(int(labels.max(initial=0)))
    return labels if labels.dtype == dtype else labels.astype(dtype)


def write_labels(path: Path, labels: np.ndarray, source: ArrayFile) -> Path:
    """Write ``labels`` atomically next to nothing half-done, with ``source``'s geometry.

    NIfTI outputs get the source's spacing, origin and (NIfTI/DICOM sources)
    exact header geometry; TIFF outputs the spacing. The smallest unsigned
    dtype that holds the largest id is used.
    """
    from ..io import write_array, write_nifti

    labels = _smallest_uint(labels)
    spacing = source.spacing if source.spacing and len(source.spacing) == labels.ndim else None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        origin = source.origin if source.origin and len(source.origin) == labels.ndim else None
        return Path(
            write_nifti(
                path, labels, spacing=spacing, origin=origin, metadata=source.metadata or None
            )
        )
    return write_array(path, labels, spacing=spacing, what="labels file", compression="zlib")


# -- the pipeline ---------------------------------------------------------------------------
@dataclass
class SamWorker:
    """What :meth:`SamPipeline.load` gives each worker: the model and its embedding cache."""

    model: SamModel
    cache: EmbeddingCache


class SamPipeline:
    """Prompted SAM segmentation of every input (see the module docstring).

    Parameters
    ----------
    model : str, Path or SamModelSpec
        A registered checkpoint name (``"vit_b"``, ``"medsam"`` ...) or a full
        SAM ``.pth`` file.
    prompts : str, Path or PromptSet
        The prompt file (CSV or JSON, :mod:`.prompts`), read and validated here.
    proposal : {"best", "largest", "smallest"}
        See :func:`choose_proposal`.
    propagate : bool
        Extend each object through the stack from its plane (3D inputs).
    architecture, decoder, device, download
        See :meth:`SamModelSpec.resolve` (ignored when ``model`` is a spec).
    cache_dir : path, optional
        Disk embedding cache folder (e.g. the one ``embed`` filled); None keeps
        embeddings in each worker's memory only.
    output_format : str
        ``"same"`` (see :func:`output_suffix`), ``"tif"``, ``"nii.gz"``, ``"nii"``, ``"npy"``.
    """

    name = "sam"

    def __init__(
        self,
        model: str | Path | SamModelSpec,
        prompts: str | Path | PromptSet,
        *,
        proposal: str = "best",
        propagate: bool = False,
        architecture: str | None = None,
        decoder: str | Path | None = None,
        device: str = "auto",
        download: bool = True,
        cache_dir: str | Path | None = None,
        output_format: str = "same",
    ) -> None:
        if proposal not in PROPOSAL_RULES:
            raise ValueError(f"Expected a proposal rule in {PROPOSAL_RULES}, got {proposal!r}.")
        output_suffix(Path("x.tif"), output_format)  # refuses unknown formats now
        if not isinstance(model, SamModelSpec):
            model = SamModelSpec.resolve(
                model, architecture=architecture, decoder=decoder, device=device,
                download=download,
            )  # fmt: skip
        self.model = model
        self.prompts = prompts if isinstance(prompts, PromptSet) else read_prompts(prompts)
        self.proposal = proposal
        self.propagate = bool(propagate)
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser().resolve())
        self.output_format = output_format

    def settings(self) -> dict[str, Any]:
        """Model identity, prompt file hash and the rules that change the labels."""
        return {
            "pipeline": "sam/1",
            **self.model.settings(),
            "prompts": self.prompts.path.name,
            "prompts_hash": self.prompts.digest,
            "proposal": self.proposal,
            "propagate": self.propagate,
            "output_format": self.output_format,
        }

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`settings`."""
        import hashlib
        import json

        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def output_names(self, item: BatchItem) -> list[str]:
        """``["<name>_sam<suffix>"]``."""
        return [f"{item.name}_sam{output_suffix(item.path, self.output_format)}"]

    def load(self) -> SamWorker:
        """Load the model and make the worker's embedding cache (once per worker)."""
        from ..sam import EmbeddingCache

        cache = EmbeddingCache(max_items=MEMORY_EMBEDDINGS, disk=self.cache_dir)
        return SamWorker(self.model.load(), cache)

    def run_item(self, item: BatchItem, output_dir: Path, loaded: SamWorker) -> ItemOutcome:
        """Segment the prompted objects of ``item`` and write ``<name>_sam.<ext>``."""
        from ..io import read_array
        from ..sam import SamInput

        objects = self.prompts.objects_for(item.name)
        array = read_array(item.path, what="image file", lazy=True)
        source = SamInput(array.data)
        cache = loaded.cache
        before = cache.misses
        values: list[int] = []
        labels = run_to_end(
            segment_objects_steps(
                loaded.model,
                source,
                objects,
                cache=cache,
                proposal=self.proposal,
                propagate=self.propagate,
            ),
            callback=lambda event: values.append(event.value),
        )
        name = self.output_names(item)[0]
        write_labels(Path(output_dir) / name, labels, array)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        planes = labels.reshape(labels.shape[0], -1).any(axis=1) if source.is_stack else None
        row = {
            "shape": list(array.shape),
            "spacing": None if array.spacing is None else list(array.spacing),
            "objects": int(ids.size),
            "objects_prompted": len(objects),
            "objects_empty": values.count(0),
            "planes": int(np.count_nonzero(planes)) if planes is not None else int(ids.size > 0),
            "embeddings_computed": cache.misses - before,
        }
        return ItemOutcome([name], row)
