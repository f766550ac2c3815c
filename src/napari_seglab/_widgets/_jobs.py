"""Background jobs of a dock widget: started, reported, cancelled and dropped together.

:class:`WidgetJobs` runs core jobs (generators, :mod:`napari_seglab.jobs`) in
napari worker threads. Every error becomes a notification and the widget's
``on_finished`` runs whatever happened, so a failed job never leaves a widget
busy; a cancelled job (:class:`~napari_seglab.jobs.JobCancelled`) ends quietly.
After :meth:`WidgetJobs.close` no callback runs any more, so a job that ends
after its widget was closed (or the viewer quit) never touches a deleted Qt
object.

:class:`PromptServer` is one long-lived thread that serves prompt requests in
order, keeping only the newest pending one (rapid clicks coalesce); torch's
per-thread state is then made once, not per click.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from ..jobs import JobCancelled, run_to_end
from ._layers import notify_error, start_job

__all__ = ["PromptServer", "WidgetJobs", "load_sam_job"]


def _drive(job: Callable, *args: Any, **kwargs: Any):
    """A generator function around ``job`` (which may be a method returning a generator)."""
    return (yield from job(*args, **kwargs))


def load_sam_job(model_type: str, checkpoint: str = "", decoder: str = "", device: str = "auto"):
    """Load a SAM model as a job (downloads and verifies on first use); '' means none."""
    from ..sam import load_model

    yield "loading"
    return load_model(
        model_type,
        checkpoint=checkpoint or None,
        device=device,
        decoder_checkpoint=decoder or None,
        progress=False,
    )


class WidgetJobs:
    """The named background jobs of one widget (at most one per name)."""

    def __init__(self) -> None:
        self.closed = False
        self._jobs: dict[str, tuple[Any, threading.Event]] = {}
        self._closers: list[Callable[[], None]] = []

    def on_close(self, function: Callable[[], None]) -> None:
        """Call ``function`` when the jobs are closed (e.g. to stop a serving thread)."""
        self._closers.append(function)

    def running(self, name: str) -> bool:
        """Whether the job ``name`` is still running."""
        return name in self._jobs

    def _guard(self, function: Callable | None, what: str) -> Callable:
        def call(*args: Any) -> None:
            if self.closed or function is None:
                return
            try:
                function(*args)
            except RuntimeError as exc:  # e.g. a Qt object deleted meanwhile
                if not self.closed:
                    notify_error(exc, what)
            except Exception as exc:
                notify_error(exc, what)

        return call

    def start(
        self,
        name: str,
        job: Callable,
        *args: Any,
        what: str = "",
        on_yielded: Callable | None = None,
        on_returned: Callable | None = None,
        on_errored: Callable | None = None,
        on_cancelled: Callable | None = None,
        on_finished: Callable | None = None,
        cancellable: bool = True,
        progress: dict | None = None,
        **kwargs: Any,
    ):
        """Run ``job(*args, **kwargs)`` in a worker thread as the job ``name``.

        A running job of that name is cancelled first. With ``cancellable``
        the job gets ``cancel=`` (a :class:`threading.Event`).
        """
        self.cancel(name)
        cancel = threading.Event()
        if cancellable:
            kwargs["cancel"] = cancel
        report = self._guard(on_errored, what)
        quiet = self._guard(on_cancelled, what)

        def errored(exc: BaseException) -> None:
            if self.closed:
                return
            if isinstance(exc, JobCancelled) or cancel.is_set():
                quiet(exc)
                return
            notify_error(exc, what)
            report(exc)

        done = self._guard(on_finished, what)

        def finished() -> None:
            entry = self._jobs.get(name)
            if entry is not None and entry[1] is cancel:
                del self._jobs[name]
            done()

        returned = self._guard(on_returned, what)
        yielded = self._guard(on_yielded, what)

        def give_back(result: Any) -> None:
            if cancel.is_set():  # asked to stop but done anyway: a cancelled job changes nothing
                quiet(JobCancelled(f"{what or name} was cancelled.", partial=result))
            else:
                returned(result)

        worker = start_job(
            _drive,
            job,
            *args,
            on_yielded=lambda event: None if cancel.is_set() else yielded(event),
            on_returned=give_back,
            on_errored=errored,
            on_finished=finished,
            progress=progress,
            **kwargs,
        )
        worker.aborted.connect(lambda: quiet(JobCancelled(f"{what or name} was cancelled.")))
        worker.cancellable = cancellable
        self._jobs[name] = (worker, cancel)
        return worker

    def cancel(self, name: str | None = None) -> None:
        """Ask the job ``name`` (None: every job) to stop; it ends at its next check."""
        names = list(self._jobs) if name is None else [name]
        for key in names:
            entry = self._jobs.pop(key, None)
            if entry is not None:
                worker, cancel = entry
                cancel.set()
                if not getattr(worker, "cancellable", False):
                    worker.quit()  # a job without cancel= stops at its next yield

    def close(self) -> None:
        """Cancel every job; callbacks of jobs that end later are not run."""
        if self.closed:
            return
        self.closed = True
        self.cancel()
        for function in self._closers:
            function()
        self._closers.clear()


class _Relay(QObject):
    """Carries results from the serving thread to the GUI thread (queued signals)."""

    result = Signal(object)
    failed = Signal(object)


class PromptServer:
    """One long-lived thread that computes SAM prompts for a session, newest request first.

    Parameters
    ----------
    session : SamPromptSession
    on_result : callable
        Called on the GUI thread with each :class:`~napari_seglab.sessions.PredictionResult`.
    on_error : callable
        Called on the GUI thread with each exception.
    """

    def __init__(self, session, on_result: Callable, on_error: Callable) -> None:
        self.session = session
        self._relay = _Relay()
        self._relay.result.connect(on_result)
        self._relay.failed.connect(on_error)
        self._condition = threading.Condition()
        self._pending: list[int | None] = []
        self._working = False
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="seglab-sam-prompts", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a request is waiting or being computed."""
        with self._condition:
            return self._working or bool(self._pending)

    def request(self, plane: int | None) -> None:
        """Prompt ``plane`` with the session's current prompts (replaces a waiting request)."""
        with self._condition:
            self._pending[:] = [plane]
            self._condition.notify()

    def stop(self) -> None:
        """End the thread after its current request; nothing more is reported."""
        with self._condition:
            self._stopped = True
            self._pending.clear()
            self._condition.notify()

    def _serve(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                plane = self._pending.pop()
                self._working = True
            try:
                result = run_to_end(self.session.prediction_job(plane))
                signal, payload = self._relay.result, result
            except Exception as exc:
                signal, payload = self._relay.failed, exc
            with self._condition:
                self._working = bool(self._pending)
                if self._stopped:
                    return
            try:
                signal.emit(payload)
            except RuntimeError:  # the relay was deleted with its widget
                return
