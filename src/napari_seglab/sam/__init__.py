"""Segment Anything: model registry and download, embedding cache, prompting, 3D propagation.

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
"""

from .decoder_files import DecoderMismatchError, load_decoder, save_decoder
from .download import cache_dir, checkpoint_path, download_file, ensure_checkpoint
from .embedding import Embedding, EmbeddingCache, EmbeddingProgress, precompute_embeddings
from .finetune import FinetuneEvent, FinetuneResult, finetune_decoder, finetune_decoder_events
from .finetune_prompts import PromptRecipe
from .image import SamInput
from .model import (
    SamModel,
    apply_decoder_weights,
    build_tiny_sam,
    load_model,
    save_decoder_checkpoint,
)
from .prompt import Prediction, PromptSegmenter
from .propagate import PropagationStep, propagate, propagate_steps
from .registry import ARCHITECTURES, CHECKPOINTS, CheckpointSpec, SamArchitecture

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINTS",
    "CheckpointSpec",
    "DecoderMismatchError",
    "Embedding",
    "EmbeddingCache",
    "EmbeddingProgress",
    "FinetuneEvent",
    "FinetuneResult",
    "Prediction",
    "PromptRecipe",
    "PromptSegmenter",
    "PropagationStep",
    "SamArchitecture",
    "SamInput",
    "SamModel",
    "apply_decoder_weights",
    "build_tiny_sam",
    "cache_dir",
    "checkpoint_path",
    "download_file",
    "ensure_checkpoint",
    "finetune_decoder",
    "finetune_decoder_events",
    "load_decoder",
    "load_model",
    "precompute_embeddings",
    "propagate",
    "propagate_steps",
    "save_decoder",
    "save_decoder_checkpoint",
]
