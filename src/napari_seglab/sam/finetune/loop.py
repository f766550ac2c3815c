"""The fine-tuning job: inputs to embeddings to the shared training loop to a tuned model.

:func:`finetune_decoder_events` checks the inputs, collects the annotated
objects, embeds their planes once (:mod:`.store`) and trains a copy of the
decoder through :func:`napari_seglab.training_loop.training_loop` with a
:class:`~.task.DecoderTask`: AdamW, mixed precision by device, limits on
epochs, steps and seconds, validation before training (epoch 0) and after
every epoch, patience, and the best epoch's decoder kept, also on cancel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...jobs import CancelLike, JobCancelled, ProgressEvent, run_to_end
from ...training_loop import LoopResult, LoopSettings, training_loop
from ..embedding import EmbeddingCache
from .data import annotated_planes, checked_pairs, split_objects
from .prompts import PromptRecipe
from .store import embed_planes, open_store
from .task import DecoderTask

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model import SamModel

__all__ = ["DEFAULT_EPOCHS", "FinetuneResult", "finetune_decoder", "finetune_decoder_events"]

#: Epochs when none of ``steps``, ``epochs`` and ``time_budget_s`` is given.
DEFAULT_EPOCHS = 30
#: A validation Dice must beat the best by more than this to count as better.
MIN_IMPROVEMENT = 1e-4


@dataclass
class FinetuneResult:
    """Outcome of fine-tuning.

    Attributes
    ----------
    model : SamModel
        The tuned model (best epoch's decoder), sharing the input model's encoder.
    history : list of dict
        One row per epoch (epoch 0 = before training), as
        :meth:`napari_seglab.training_loop.EpochEvent.as_dict`: ``epoch``,
        ``step``, ``samples``, ``loss`` (mean training loss, None for epoch 0),
        ``validation`` (Dice per prompt kind and ``"mean"``), ``elapsed``.
    before, after : dict of str to float
        Validation Dice per prompt kind and ``"mean"``, of the untrained and
        of the kept decoder (empty without validation objects).
    best_epoch : int
    steps, epochs : int
        Optimizer steps and epochs run.
    stopped_by : str
        ``"epochs"``, ``"steps"``, ``"time"``, ``"patience"`` or ``"cancel"``.
    encoder_calls : int
        Planes the image encoder ran on (the others came from the cache).
    n_planes, n_train_objects, n_validation_objects : int
    recipe : dict
        Prompt recipe and optimisation settings (stored with the decoder).
    """

    model: SamModel
    history: list[dict]
    before: dict
    after: dict
    best_epoch: int = 0
    steps: int = 0
    epochs: int = 0
    stopped_by: str = ""
    encoder_calls: int = 0
    n_planes: int = 0
    n_train_objects: int = 0
    n_validation_objects: int = 0
    recipe: dict = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        """True for the partial result of a cancelled run."""
        return self.stopped_by == "cancel"

    @property
    def stopped_early(self) -> bool:
        """True when validation Dice stopped improving (patience)."""
        return self.stopped_by == "patience"


def trainable_copy(model: SamModel, device: torch.device, train_prompt_encoder: bool) -> SamModel:
    """A SamModel sharing ``model``'s image encoder, with its own copy of the trained parts.

    On another device, the whole network is copied there.
    """
    import copy

    if device != model.device:
        sam = copy.deepcopy(model.sam).to(device)
    else:
        sam = copy.copy(model.sam)  # shallow: shares the frozen encoder
        sam._modules = type(model.sam._modules)(model.sam._modules)
        sam._parameters = type(model.sam._parameters)(model.sam._parameters)
        sam._buffers = type(model.sam._buffers)(model.sam._buffers)
        sam.mask_decoder = copy.deepcopy(model.sam.mask_decoder)
        if train_prompt_encoder:
            sam.prompt_encoder = copy.deepcopy(model.sam.prompt_encoder)
    tuned = dataclasses.replace(model, sam=sam, device=device, decoder_checkpoint=None)
    tuned.invalidate()
    return tuned


def finetune_decoder_events(
    model: SamModel,
    images: Any,
    labels: Any,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    prompt: str | PromptRecipe = "mixed",
    learning_rate: float = 1e-4,
    weight_decay: float = 0.01,
    batch_size: int = 16,
    validation_fraction: float = 0.2,
    patience: int = 5,
    iou_loss_weight: float = 1.0,
    train_prompt_encoder: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    cache: EmbeddingCache | None = None,
    embedding_memory_mib: float = 1024.0,
    embedding_dir: str | Path | None = None,
    min_object_pixels: int = 16,
    cancel: CancelLike = None,
) -> Generator[ProgressEvent, None, FinetuneResult]:
    """Fine-tune the mask decoder as a job; returns a :class:`FinetuneResult`.

    Same parameters as :func:`finetune_decoder` plus ``cancel``: a
    ``threading.Event`` or a callable, checked before every plane embedded
    and every optimizer step.

    Yields
    ------
    ProgressEvent
        ``stage == "embedding"`` after each plane embedded (``done`` of
        ``total`` planes), then an :class:`~napari_seglab.training_loop.EpochEvent`
        per epoch (``stage == "epoch"``; epoch 0 is the untrained decoder;
        ``validation`` holds the Dice per prompt kind and their ``"mean"``;
        the last one has ``final=True``).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    JobCancelled
        When ``cancel`` is set: ``partial`` is the :class:`FinetuneResult` of
        the best decoder so far (``cancelled`` True), or None when cancelled
        while embedding (nothing trained).
    """
    from ...device import resolve_device

    recipe = prompt if isinstance(prompt, PromptRecipe) else PromptRecipe(kind=str(prompt))
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1, got {batch_size}.")
    if steps is None and epochs is None and time_budget_s is None:
        epochs = DEFAULT_EPOCHS
    settings = LoopSettings(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        max_epochs=epochs,
        max_steps=steps,
        time_budget_s=time_budget_s,
        patience=patience,
        min_improvement=MIN_IMPROVEMENT,
        validate_first=True,
    )
    settings.check()
    device = resolve_device(device)
    pairs = checked_pairs(images, labels)
    rng = np.random.default_rng(seed)
    planes, objects = annotated_planes(pairs, model.img_size, rng, min_pixels=min_object_pixels)
    train, val = split_objects(objects, validation_fraction, rng)
    tuned = trainable_copy(model, device, train_prompt_encoder)
    counts = {
        "n_planes": len(planes),
        "n_train_objects": len(train),
        "n_validation_objects": len(val),
    }
    recipe_dict = {
        **recipe.to_dict(),
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "iou_loss_weight": iou_loss_weight,
        "train_prompt_encoder": train_prompt_encoder,
        "validation_fraction": validation_fraction,
        "seed": seed,
        **counts,
    }

    def outcome(loop: LoopResult, encoder_calls: int) -> FinetuneResult:
        recipe_dict.update(steps=loop.steps, epochs=loop.epochs, best_epoch=loop.best_epoch)
        history = loop.history
        return FinetuneResult(
            model=tuned,
            history=history,
            before=dict(history[0]["validation"]),
            after=dict(history[loop.best_epoch]["validation"]),
            best_epoch=loop.best_epoch,
            steps=loop.steps,
            epochs=loop.epochs,
            stopped_by=loop.stopped_by,
            encoder_calls=encoder_calls,
            recipe=dict(recipe_dict),
            **counts,
        )

    with open_store(
        tuned,
        len(planes),
        cache=cache,
        budget_mib=embedding_memory_mib,
        embedding_dir=embedding_dir,
    ) as store:
        try:
            encoder_calls = yield from embed_planes(tuned, pairs, planes, store, cancel)
        except JobCancelled:
            raise JobCancelled(
                "Fine-tuning was cancelled while embedding; nothing was trained."
            ) from None
        task = DecoderTask(
            tuned,
            planes,
            store,
            train,
            val,
            recipe,
            batch_size=batch_size,
            iou_loss_weight=iou_loss_weight,
            train_prompt_encoder=train_prompt_encoder,
            seed=seed,
        )
        try:
            loop = yield from training_loop(task, settings, device=device, cancel=cancel)
        except JobCancelled as stop:
            partial = None if stop.partial is None else outcome(stop.partial, encoder_calls)
            raise JobCancelled(
                "Fine-tuning was cancelled; the best decoder so far is kept.", partial=partial
            ) from None
    return outcome(loop, encoder_calls)


def finetune_decoder(
    model: SamModel,
    images: Any,
    labels: Any,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    prompt: str | PromptRecipe = "mixed",
    learning_rate: float = 1e-4,
    validation_fraction: float = 0.2,
    train_prompt_encoder: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    callback: Callable[[ProgressEvent], Any] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune SAM's mask decoder on annotated images with the image encoder frozen.

    Parameters
    ----------
    model : SamModel
        Base model; never modified (the result holds a tuned copy that shares
        its image encoder).
    images : array or list of arrays
        2D images ``(Y, X)`` / ``(Y, X, 3)`` or stacks ``(Z, Y, X[, 3])``, any
        dtype, normalised like the prompting tool does (see :mod:`napari_seglab.sam.image`).
    labels : array or list of arrays
        One integer label image per image, ``(Y, X)`` or ``(Z, Y, X)``; 0 is
        background. Instance or semantic: each connected component of each
        value in each plane is one object. Planes without labels are ignored
        (only annotated planes are embedded).
    steps, epochs, time_budget_s : optional
        Stop after this many optimizer steps, epochs (passes over the training
        objects), or seconds of training (embedding time excluded), whichever
        comes first. None of them: 30 epochs. Early stopping (``patience``
        epochs without a gain of more than 1e-4 in mean validation Dice)
        applies in all cases.
    prompt : {"mixed", "box", "points"} or PromptRecipe
        Prompt kinds to train and validate with; a :class:`PromptRecipe`
        also sets point counts, negatives, box jitter and correction rounds.
    learning_rate : float
        AdamW learning rate (1e-4 suits published decoders; a decoder trained
        from scratch wants about 1e-3).
    validation_fraction : float
        Share of the objects held out for validation Dice (0: no validation,
        the last epoch is kept).
    train_prompt_encoder : bool
        Also train the prompt encoder (saved with the decoder).
    device : str or torch.device
        ``"auto"``: cuda > mps > cpu (CUDA runs the decoder under autocast).
    seed : int
        Seeds the object split and prompt sampling.
    callback : callable, optional
        Called with every event of :func:`finetune_decoder_events`.
    **options
        Further keywords of :func:`finetune_decoder_events`: ``batch_size``
        (16), ``patience`` (5 epochs), ``weight_decay`` (0.01),
        ``iou_loss_weight`` (1.0), ``cache`` (an :class:`EmbeddingCache` to
        reuse), ``embedding_memory_mib`` (1024; above it embeddings live on
        disk), ``embedding_dir``, ``min_object_pixels`` (16), ``cancel``.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    JobCancelled
        When ``cancel`` is set; ``partial`` is the :class:`FinetuneResult` of
        the best decoder so far (``cancelled=True``), or None when cancelled
        while embedding.
    """
    return run_to_end(
        finetune_decoder_events(
            model,
            images,
            labels,
            steps=steps,
            epochs=epochs,
            time_budget_s=time_budget_s,
            prompt=prompt,
            learning_rate=learning_rate,
            validation_fraction=validation_fraction,
            train_prompt_encoder=train_prompt_encoder,
            device=device,
            seed=seed,
            **options,
        ),
        callback,
    )
