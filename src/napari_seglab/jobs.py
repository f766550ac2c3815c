"""The one contract for long work: progress events, cancel, and how a job ends.

A *job* is a generator. It yields :class:`ProgressEvent` objects (or
instances of a subclass that adds the fields of its kind of work) and
returns its result with ``return``. It checks one kind of cancel flag, a
``threading.Event`` or a callable returning True to stop, wrapped once in
:class:`CancelCheck`. A cancelled job ends one way, everywhere: it raises
:class:`JobCancelled`. A job that has a usable partial result when it is
cancelled (training keeps its best model so far) attaches it to the
exception as ``partial``; other jobs leave ``partial`` as None.

Writing a job::

    def smooth_job(volume, *, cancel=None):
        check = CancelCheck(cancel)
        clock = Stopwatch()
        out = np.empty_like(volume)
        for z in range(len(volume)):
            check.raise_if_set("smoothing")       # JobCancelled, nothing returned
            out[z] = gaussian(volume[z])
            yield ProgressEvent("smoothing", z + 1, len(volume), clock.elapsed)
        return out

Driving it: ``run_to_end(smooth_job(v))`` from a script or the CLI (with an
optional ``callback`` called with each event); widgets hand the generator to
napari's ``thread_worker`` and update progress from ``yielded``; a
:class:`JobCancelled` arrives through ``errored``.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "CancelCheck",
    "CancelLike",
    "JobCancelled",
    "ProgressEvent",
    "Stopwatch",
    "run_to_end",
]

T = TypeVar("T")

#: What a job accepts as ``cancel``: nothing, an object with ``is_set()``
#: (``threading.Event``), a callable returning True to stop, or a :class:`CancelCheck`.
CancelLike = Any


class JobCancelled(RuntimeError):
    """Raised by a job whose cancel flag was set.

    Parameters
    ----------
    message : str
        What was cancelled, for the user.
    partial : object, optional
        A usable result as far as the job got (e.g. the best model of a
        cancelled training run); None when the job has nothing to offer.
    """

    def __init__(self, message: str = "The job was cancelled.", *, partial: Any = None):
        super().__init__(message)
        self.partial = partial


class CancelCheck:
    """One way to ask "should I stop?", whatever form the cancel flag takes.

    Parameters
    ----------
    cancel : threading.Event, callable, CancelCheck or None
        ``None`` never cancels; an object with ``is_set()`` is polled; a
        callable is called without arguments and stops the job when it
        returns True.

    Examples
    --------
    >>> import threading
    >>> flag = threading.Event()
    >>> check = CancelCheck(flag)
    >>> bool(check)
    False
    >>> flag.set(); bool(check)
    True
    """

    __slots__ = ("_poll",)

    def __init__(self, cancel: CancelLike = None):
        if isinstance(cancel, CancelCheck):
            self._poll = cancel._poll
        elif cancel is None:
            self._poll = None
        elif hasattr(cancel, "is_set"):
            self._poll = cancel.is_set
        elif callable(cancel):
            self._poll = cancel
        else:
            raise TypeError(
                "Expected cancel to be None, a threading.Event or a callable returning bool, "
                f"got {type(cancel).__name__}."
            )

    def is_set(self) -> bool:
        """True when the job should stop."""
        return self._poll is not None and bool(self._poll())

    __bool__ = is_set

    def __call__(self) -> bool:
        return self.is_set()

    def raise_if_set(self, what: str = "The job", *, partial: Any = None) -> None:
        """Raise :class:`JobCancelled` (with ``partial``) when the flag is set."""
        if self.is_set():
            raise JobCancelled(f"{what} was cancelled.", partial=partial)


class Stopwatch:
    """Seconds since creation (``time.perf_counter``), for the ``elapsed`` field."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the stopwatch was created."""
        return time.perf_counter() - self.start


@dataclass(frozen=True)
class ProgressEvent:
    """What every job reports, whatever its kind.

    Kinds of work subclass it and add their own fields after these four
    (with defaults), so a progress bar needs nothing but this class.

    Attributes
    ----------
    stage : str
        What the job is doing now (``"embedding"``, ``"epoch"``, ``"predicting"``, ...).
    done : int
        Units of the stage finished so far.
    total : int
        Units in the stage; 0 when unknown (a time budget bounds it instead).
    elapsed : float
        Seconds since the job started.
    """

    stage: str
    done: int = 0
    total: int = 0
    elapsed: float = 0.0

    @property
    def fraction(self) -> float | None:
        """``done / total`` clipped to [0, 1], or None when the total is unknown."""
        if self.total <= 0:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)


def run_to_end(job: Generator[Any, Any, T], callback: Callable[[Any], Any] | None = None) -> T:
    """Drive a job to its end and return what it returned.

    Parameters
    ----------
    job : generator
        A job as described in this module.
    callback : callable, optional
        Called with every yielded event.

    Returns
    -------
    object
        The job's return value.

    Raises
    ------
    JobCancelled
        When the job was cancelled (its ``partial`` holds any usable result).
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
