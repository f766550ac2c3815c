"""The one training loop every model family uses.

A model family describes *what* to train as a :class:`TrainingTask` (its
parameters, one epoch's batches, the loss of a batch, a validation score and
how to snapshot its weights); :func:`training_loop` does the rest, the same
way for all: AdamW, mixed precision by device type (GradScaler only for
fp16), limits on epochs, steps and seconds, patience on the validation
score, keeping the best epoch's weights, one :class:`EpochEvent` per epoch,
and cancel as in :mod:`napari_seglab.jobs`.

On cancel the best weights so far are loaded back into the task and
:class:`~napari_seglab.jobs.JobCancelled` is raised with a
:class:`LoopResult` (``cancelled=True``) as ``partial``, or None when no
epoch had finished. A family's own job catches it, turns the partial loop
result into its model and re-raises with that model as ``partial``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .jobs import CancelCheck, CancelLike, JobCancelled, ProgressEvent, Stopwatch

if TYPE_CHECKING:
    import torch

__all__ = [
    "EpochEvent",
    "LoopResult",
    "LoopSettings",
    "TrainingTask",
    "train_to_model",
    "training_loop",
]


class TrainingTask(Protocol):
    """What a model family hands to :func:`training_loop`."""

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        """The parameters the optimiser updates."""

    def batches(self, epoch: int) -> Iterable[Any]:
        """One epoch's batches (``epoch`` is 1-based), in training order."""

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """Scalar loss of one batch (called under autocast) and its sample count."""

    def validate(self) -> Mapping[str, float]:
        """Validation scores, higher is better; ``"mean"`` is the one compared.

        Empty when there is nothing to validate on (then the last epoch is kept).
        """

    def train_mode(self, training: bool) -> None:
        """Switch the trained modules between training and evaluation mode."""

    def snapshot(self) -> Any:
        """A copy of the trained weights, detached from later updates."""

    def restore(self, snapshot: Any) -> None:
        """Load weights returned by :meth:`snapshot`."""


@dataclass(frozen=True)
class LoopSettings:
    """Optimiser and stopping rules.

    Attributes
    ----------
    learning_rate, weight_decay : float
        AdamW settings.
    max_epochs, max_steps : int or None
        Stop after this many epochs / optimiser steps.
    time_budget_s : float or None
        Stop once this many seconds of training have passed (checked every step).
    patience : int or None
        Stop when the validation score has not improved for this many epochs.
    min_improvement : float
        An epoch is better only if its score beats the best by more than this.
    validate_first : bool
        Validate the untrained weights and report them as epoch 0.

    With no epoch, step or time limit the loop would never end: a
    ``ValueError`` says so.
    """

    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    max_epochs: int | None = None
    max_steps: int | None = None
    time_budget_s: float | None = None
    patience: int | None = None
    min_improvement: float = 0.0
    validate_first: bool = False

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if self.learning_rate <= 0:
            raise ValueError(f"Expected a positive learning rate, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"Expected weight decay >= 0, got {self.weight_decay}.")
        for name in ("max_epochs", "max_steps", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Expected {name} >= 1, got {value}.")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"Expected a positive time budget, got {self.time_budget_s} s.")
        if self.max_epochs is None and self.max_steps is None and self.time_budget_s is None:
            raise ValueError("Expected at least one of max_epochs, max_steps, time_budget_s.")


@dataclass(frozen=True)
class EpochEvent(ProgressEvent):
    """Progress after one epoch (``stage == "epoch"``, ``done`` = epoch).

    Attributes
    ----------
    epoch : int
        Epochs finished (0: the untrained weights, with ``validate_first``).
    step : int
        Optimiser steps so far.
    samples : int
        Samples (patches, objects) trained on so far.
    loss : float or None
        Mean training loss of the epoch (None for epoch 0).
    validation : dict of str to float
        Validation scores of this epoch (empty without validation).
    best_score : float or None
        Best ``validation["mean"]`` so far.
    best_epoch : int
        Epoch whose weights are kept.
    budget_s : float or None
        The time budget, so a progress bar can show ``elapsed / budget_s``
        when ``total`` is 0.
    final : bool
        True for the last event of the run.
    """

    epoch: int = 0
    step: int = 0
    samples: int = 0
    loss: float | None = None
    validation: Mapping[str, float] = field(default_factory=dict)
    best_score: float | None = None
    best_epoch: int = 0
    budget_s: float | None = None
    final: bool = False

    @property
    def score(self) -> float | None:
        """``validation["mean"]``, or None without validation."""
        value = self.validation.get("mean")
        return None if value is None or math.isnan(value) else float(value)

    @property
    def fraction(self) -> float | None:
        """Epochs done of the limit, or elapsed of the time budget, whichever is further."""
        parts = []
        if self.total > 0:
            parts.append(self.done / self.total)
        if self.budget_s:
            parts.append(self.elapsed / self.budget_s)
        return min(max(parts), 1.0) if parts else None

    def as_dict(self) -> dict:
        """One history row: epoch, step, samples, loss, validation, elapsed."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "samples": self.samples,
            "loss": self.loss,
            "validation": dict(self.validation),
            "elapsed": self.elapsed,
        }


@dataclass
class LoopResult:
    """How a run of :func:`training_loop` ended (the task holds the kept weights).

    Attributes
    ----------
    history : list of dict
        :meth:`EpochEvent.as_dict` of every epoch (epoch 0 first with ``validate_first``).
    best_epoch, epochs, steps, samples : int
    best_score : float or None
    stopped_by : {"epochs", "steps", "time", "patience", "cancel"}
    """

    history: list[dict]
    best_epoch: int
    epochs: int
    steps: int
    samples: int
    best_score: float | None
    stopped_by: str

    @property
    def cancelled(self) -> bool:
        return self.stopped_by == "cancel"

    @property
    def stopped_early(self) -> bool:
        return self.stopped_by == "patience"


def training_loop(
    task: TrainingTask,
    settings: LoopSettings,
    *,
    device: torch.device | str,
    cancel: CancelLike = None,
) -> Generator[EpochEvent, None, LoopResult]:
    """Train ``task`` on ``device``, yielding an :class:`EpochEvent` per epoch.

    Parameters
    ----------
    task : TrainingTask
        What to train; its modules must already be on ``device``.
    settings : LoopSettings
        Optimiser and stopping rules (checked first).
    device : torch.device
        Selects mixed precision (bf16/fp16 autocast on CUDA, fp32 elsewhere).
    cancel : threading.Event or callable, optional
        Checked before every step.

    Returns
    -------
    LoopResult
        After the best epoch's weights have been restored into ``task``.

    Raises
    ------
    JobCancelled
        When ``cancel`` is set; ``partial`` is the :class:`LoopResult` so far
        (best weights restored) or None when no epoch had finished.
    """
    import torch

    from .device import autocast, autocast_dtype

    settings.check()
    device = torch.device(device)
    check = CancelCheck(cancel)
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    clock = Stopwatch()
    history: list[dict] = []
    best = _Best(settings.min_improvement)
    epoch = step = samples = 0
    stopped_by = ""
    total = settings.max_epochs or 0

    def event(loss, validation, final) -> EpochEvent:
        out = EpochEvent(
            "epoch",
            epoch,
            total,
            clock.elapsed,
            epoch=epoch,
            step=step,
            samples=samples,
            loss=loss,
            validation=dict(validation),
            best_score=best.score,
            best_epoch=best.epoch,
            budget_s=settings.time_budget_s,
            final=final,
        )
        history.append(out.as_dict())
        return out

    def result() -> LoopResult:
        if best.state is not None:
            task.restore(best.state)
        return LoopResult(history, best.epoch, epoch, step, samples, best.score, stopped_by)

    task.train_mode(False)
    if settings.validate_first:
        validation = task.validate()
        best.offer(0, validation, task)
        yield event(None, validation, False)
    try:
        while not stopped_by:
            epoch += 1
            task.train_mode(True)
            loss_sum = torch.zeros((), device=device)
            epoch_steps = 0
            for batch in task.batches(epoch):
                if check.is_set():
                    stopped_by = "cancel"
                    break
                optimizer.zero_grad(set_to_none=True)
                with autocast(device):
                    loss, count = task.loss(batch)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().float()
                epoch_steps += 1
                step += 1
                samples += int(count)
                if settings.max_steps is not None and step >= settings.max_steps:
                    stopped_by = "steps"
                    break
                if settings.time_budget_s is not None and clock.elapsed >= settings.time_budget_s:
                    stopped_by = "time"
                    break
            task.train_mode(False)
            if stopped_by == "cancel":
                epoch -= 1
                break
            if settings.max_epochs is not None and epoch >= settings.max_epochs:
                stopped_by = stopped_by or "epochs"
            validation = task.validate()
            improved = best.offer(epoch, validation, task)
            if (
                not improved
                and settings.patience is not None
                and best.has_score
                and epoch - best.epoch >= settings.patience
            ):
                stopped_by = stopped_by or "patience"
            mean_loss = float(loss_sum.item()) / epoch_steps if epoch_steps else None
            yield event(mean_loss, validation, bool(stopped_by))
            if not stopped_by and check.is_set():
                stopped_by = "cancel"
    finally:
        task.train_mode(False)
    if stopped_by == "cancel":
        raise JobCancelled(
            "Training was cancelled.", partial=result() if best.state is not None else None
        )
    return result()


class _Best:
    """The best epoch so far and a snapshot of its weights."""

    def __init__(self, min_improvement: float):
        self.min_improvement = float(min_improvement)
        self.score: float | None = None
        self.epoch = 0
        self.state: Any = None

    @property
    def has_score(self) -> bool:
        return self.score is not None

    def offer(self, epoch: int, validation: Mapping[str, float], task: TrainingTask) -> bool:
        """Keep ``task``'s weights if this epoch is the best; True when kept."""
        value = validation.get("mean")
        score = None if value is None or math.isnan(value) else float(value)
        if score is None:
            # Nothing to compare: the latest weights are kept (until a score appears).
            if self.score is not None:
                return False
        elif self.score is not None and score <= self.score + self.min_improvement:
            return False
        else:
            self.score = score
        self.epoch = epoch
        self.state = task.snapshot()
        return True


def train_to_model(
    task: TrainingTask,
    settings: LoopSettings,
    finished: Callable[[list[dict]], Any],
    *,
    device: torch.device | str,
    cancel: CancelLike = None,
) -> Generator[EpochEvent, None, Any]:
    """:func:`training_loop`, then ``finished(history)`` makes the trained model.

    On cancel the model of the best epoch so far is the ``partial`` of the
    :class:`~napari_seglab.jobs.JobCancelled` raised; before the first epoch
    ended there is none.

    Parameters
    ----------
    task, settings, device, cancel
        As :func:`training_loop`.
    finished : callable
        ``finished(history) -> model``, called with the epochs' history (list of dict).

    Returns
    -------
    Any
        Generator return value: ``finished(result.history)``.
    """
    try:
        result = yield from training_loop(task, settings, device=device, cancel=cancel)
    except JobCancelled as stop:
        if stop.partial is None:
            raise JobCancelled(
                "Training was cancelled before the first epoch finished; no model."
            ) from None
        raise JobCancelled(
            f"Training was cancelled; the best epoch ({stop.partial.best_epoch}) is kept.",
            partial=finished(stop.partial.history),
        ) from None
    return finished(result.history)
