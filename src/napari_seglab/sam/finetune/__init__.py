"""Fine-tune SAM's mask decoder on the user's annotated images (the MedSAM recipe).

The image encoder is frozen: every annotated plane is embedded once (through
:class:`~napari_seglab.sam.embedding.EmbeddingCache`, so planes already
embedded by the prompting tool are reused), and the embeddings are kept in
memory, or on disk when they exceed a memory budget. Training then runs only
the prompt encoder and the mask decoder on prompts drawn from the labels
(jittered boxes, positive and negative points, optional correction rounds),
with Dice + BCE loss on the low-resolution logits and MSE on the IoU head,
through the project's one training loop
(:func:`napari_seglab.training_loop.training_loop`): AdamW, validation Dice on
held-out objects before training and after every epoch, early stopping, and
the best decoder kept (also on cancel).

Typical use::

    from napari_seglab.sam import load_model, save_decoder
    from napari_seglab.sam.finetune import finetune_decoder

    model = load_model("vit_b")
    result = finetune_decoder(model, [image], [labels], time_budget_s=600)
    result.before, result.after           # validation Dice per prompt kind
    save_decoder(result.model, "decoder.pt", result=result)
    tuned = load_model("vit_b", decoder_checkpoint="decoder.pt")

The input model is never changed: the result's model shares its (frozen)
image encoder and owns a trained copy of the decoder.

Modules, each on top of the ones before it:

* :mod:`.data`: input pairs, annotated planes and their objects, the split;
* :mod:`.prompts`: the prompt recipe, training and validation prompts;
* :mod:`.targets`: low-resolution training targets;
* :mod:`.store`: the embeddings of the annotated planes;
* :mod:`.losses`: Dice + BCE, actual IoU, correction clicks;
* :mod:`.batched`: the decoder on a batch of objects from several planes;
* :mod:`.task`: the :class:`~napari_seglab.training_loop.TrainingTask`;
* :mod:`.loop`: :func:`finetune_decoder_events` and :func:`finetune_decoder`.

Decoder files (``save_decoder``, ``load_decoder`` ...) live in
:mod:`napari_seglab.sam.decoder_files` and are re-exported here.
"""

from ..decoder_files import (
    DecoderMismatchError,
    check_decoder_compatible,
    load_decoder,
    read_decoder_metadata,
    save_decoder,
)
from .batched import batched_predict_masks
from .loop import DEFAULT_EPOCHS, FinetuneResult, finetune_decoder, finetune_decoder_events
from .prompts import PromptRecipe

__all__ = [
    "DEFAULT_EPOCHS",
    "DecoderMismatchError",
    "FinetuneResult",
    "PromptRecipe",
    "batched_predict_masks",
    "check_decoder_compatible",
    "finetune_decoder",
    "finetune_decoder_events",
    "load_decoder",
    "read_decoder_metadata",
    "save_decoder",
]
