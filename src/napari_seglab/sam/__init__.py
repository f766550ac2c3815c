"""Segment Anything: model loading, embedding cache, prompting, 3D propagation, fine-tuning.

Importing this package is cheap: torch and segment_anything are imported by
the functions that need them.

Typical use::

    from napari_seglab.sam import load_model, PromptSegmenter, propagate

    model = load_model("vit_b")            # cached / downloaded, hash-verified
    seg = PromptSegmenter(model)
    seg.set_image(image)                   # (Y, X) or (Y, X, 3), any dtype
    pred = seg.predict(points=[[row, col]], labels=[1])
    pred.mask                              # (Y, X) bool, best proposal
    volume_mask = propagate(stack, plane, pred.mask, segmenter=seg)

    # adapt the mask decoder to annotated images (encoder frozen)
    result = finetune_decoder(model, images, labels, time_budget_s=600)
    save_decoder(result.model, "decoder.pt", result=result)
    tuned = load_model("vit_b", decoder_checkpoint="decoder.pt")

    # SAM 2.1 (pip extra "sam2"): same segmenter and propagate, with SAM 2's memory
    seg2 = PromptSegmenter(load_model("sam2.1_hiera_tiny"))

Modules, each importing only the ones above it:

* weights and files: :mod:`.registry`, :mod:`.download`, :mod:`.weights`, :mod:`.compat`;
* the network: :mod:`.model` (:class:`SamModel`, :func:`build_tiny_sam`),
  :mod:`.decoder_files` (fine-tuned decoders with provenance), :mod:`.loading`
  (:func:`load_model`);
* images and frames: :mod:`.image` (:class:`SamInput`), :mod:`.frames` (the
  one image <-> model coordinate conversion);
* embeddings: :mod:`.embedding` (:class:`EmbeddingCache`), :mod:`.precompute`;
* prompting: :mod:`.decoder_prepare`, :mod:`.decoder_masks`, :mod:`.decoder`
  (the fast mask decoder), :mod:`.prompt` (:class:`PromptSegmenter`);
* :mod:`.propagate` (through a stack);
* segment everything: :mod:`.everything` (:func:`segment_everything`), with
  :mod:`.everything_grid`, :mod:`.everything_filters`, :mod:`.everything_decode`
  (batched prompts) and :mod:`.everything_labels`;
* :mod:`.mask_prompts` (prompts from a mask), :mod:`.refine`, :mod:`.refine_stack` and
  :mod:`.refine_all` (refining existing labels with their own masks as prompts);
* :mod:`.finetune` (decoder fine-tuning on the shared training loop);
* SAM 2 (optional ``sam2`` extra): :mod:`.sam2_registry`, :mod:`.sam2_download`,
  :mod:`.sam2_model` (:class:`Sam2Model`, :func:`build_sam2_model`), :mod:`.sam2_decode`
  (2D prompting through :class:`PromptSegmenter`), :mod:`.sam2_video` and
  :mod:`.sam2_tracker` (:class:`Sam2Tracker`: propagation with SAM 2's memory, used by
  :func:`propagate` for a SAM 2 model) and :mod:`.sam2_stack` (objects of the stack widget).

``__all__`` lists what a user calls; everything else stays importable from its module.
"""

# ``X as X``: still importable from here for existing scripts, not part of ``__all__``.
from .decoder_files import DecoderMismatchError, load_decoder, save_decoder
from .download import cache_dir as cache_dir
from .download import checkpoint_path as checkpoint_path
from .download import download_file as download_file
from .download import ensure_checkpoint
from .embedding import Embedding as Embedding
from .embedding import EmbeddingCache
from .everything import EverythingResult, segment_everything, segment_everything_job
from .everything_grid import EverythingSettings
from .finetune import FinetuneResult, PromptRecipe, finetune_decoder, finetune_decoder_events
from .image import SamInput
from .loading import load_model
from .model import SamModel, build_tiny_sam
from .model import apply_decoder_weights as apply_decoder_weights
from .model import save_decoder_checkpoint as save_decoder_checkpoint
from .precompute import EmbeddingProgress as EmbeddingProgress
from .precompute import precompute_embeddings
from .prompt import Prediction, PromptSegmenter
from .propagate import PropagationStep as PropagationStep
from .propagate import propagate, propagate_steps
from .refine import RefinedObject, refine_object
from .refine_all import LabelChange as LabelChange
from .refine_all import ObjectRecord as ObjectRecord
from .refine_all import RefineResult, refine_all, refine_all_job
from .refine_all import RefineStep as RefineStep
from .registry import ARCHITECTURES as ARCHITECTURES
from .registry import CHECKPOINTS as CHECKPOINTS
from .registry import CheckpointSpec as CheckpointSpec
from .registry import SamArchitecture as SamArchitecture
from .sam2_model import Sam2Model, Sam2NotInstalledError, build_sam2_model, is_sam2_available
from .sam2_registry import SAM2_CHECKPOINTS as SAM2_CHECKPOINTS
from .sam2_stack import Sam2StackObjects
from .sam2_tracker import Sam2Tracker

__all__ = [
    "DecoderMismatchError",
    "EmbeddingCache",
    "EverythingResult",
    "EverythingSettings",
    "FinetuneResult",
    "Prediction",
    "PromptRecipe",
    "PromptSegmenter",
    "RefineResult",
    "RefinedObject",
    "Sam2Model",
    "Sam2NotInstalledError",
    "Sam2StackObjects",
    "Sam2Tracker",
    "SamInput",
    "SamModel",
    "build_sam2_model",
    "build_tiny_sam",
    "ensure_checkpoint",
    "finetune_decoder",
    "finetune_decoder_events",
    "is_sam2_available",
    "load_decoder",
    "load_model",
    "precompute_embeddings",
    "propagate",
    "propagate_steps",
    "refine_all",
    "refine_all_job",
    "refine_object",
    "save_decoder",
    "segment_everything",
    "segment_everything_job",
]
