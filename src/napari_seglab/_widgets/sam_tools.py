"""SAM tools of the prompting dock: refine existing labels, segment everything.

A thin shell over the core (:func:`napari_seglab.sam.refine_object`,
:func:`~napari_seglab.sam.refine_all_job`,
:func:`~napari_seglab.sam.segment_everything_job`), attached to
:class:`~napari_seglab._widgets.sam_prompt.SamPromptWidget`. It works on the
dock's chosen image and target Labels layer; the model and the embedding cache
are the dock's session's (a separate segmenter, so a running job never
disturbs prompting).

* **Refine selected label** refines the object ``layer.selected_label`` of the
  target layer on the visible plane (2D image: the image), prompted with its
  own mask plus the corrective points clicked in "SAM points" (if any; they
  are used up). The refined mask is written at once, ids kept, as one step of
  the layer's undo history: the annotator sees the result where they look and
  Ctrl+Z takes it back (no extra Accept click per object). With "Stack" set
  to "every plane" or "propagation" the object is refined on all its planes
  (``refine_all_job`` with this one id and the thresholds).
* **Refine all** refines every object (the visible plane, every plane, or
  through propagation) and writes only the changed pixels of the accepted
  refinements, in ONE undo step; it reports accepted / rejected counts.
* **Segment everything**: :mod:`.sam_tools_everything`.

Every job runs in a worker with a progress bar and Cancel; a cancelled job
changes no layer. After a write the dock's object list is told
(:meth:`~.sam_session_files.SessionFiles.tool_wrote`): ids the session did
not know become committed objects (refine: no class; segment everything: the
selected class), the layer's ``features`` get their rows and the saved
session is re-saved with the labels.
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox
from napari.layers import Labels
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..jobs import ProgressEvent
from ._layers import current_plane, error_text, notify_error, spatial_image, write_labels
from .sam_tools_everything import EverythingTools

__all__ = ["STACK_MODES", "SamToolsPanel", "refine_one_job"]

#: How the refine buttons treat a stack.
STACK_MODES = ("visible plane", "every plane", "propagation")
JOB = "sam tools"


def refine_one_job(segmenter, image, labels, object_id: int, points, positive, cancel=None):
    """Refine one object of a plane (:func:`~napari_seglab.sam.refine_object`) as a job.

    ``image`` is a 2D :class:`~napari_seglab.sam.SamInput` or a ``(Y, X, 3)`` uint8
    plane, ``labels`` ``(Y, X)`` (read only), ``points`` ``(N, 2)`` ``(row, col)`` with
    ``positive`` ``(N,)`` bool, or None. Returns the
    :class:`~napari_seglab.sam.RefinedObject` (``plane`` None).
    """
    from ..sam import refine_object

    yield ProgressEvent("refining", 0, 1)
    labels_arg = None if points is None or not len(points) else np.asarray(positive, int)
    return refine_object(
        segmenter,
        labels,
        object_id,
        points=None if labels_arg is None else points,
        point_labels=labels_arg,
        image=image,
    )


class SamToolsPanel(EverythingTools, QWidget):
    """Refine selected label / Refine all / Segment everything for a SAM prompting dock.

    Parameters
    ----------
    widget : SamPromptWidget
        Its ``session`` (model, cache, prompts), ``viewer``, ``jobs`` and ``form``
        (``image``, ``target``).

    Attributes
    ----------
    refine_form : magicgui Container
        ``min_score``, ``min_overlap`` (Refine all's thresholds, also Refine
        selected label's through a stack), ``stack`` (:data:`STACK_MODES`).
    last_result : RefineResult or RefinedObject or None
        What the last refine run returned.
    """

    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget
        self.session = widget.session
        self.viewer = widget.viewer
        self.jobs = widget.jobs
        self.last_result = None
        self._segmenter = None
        self._busy = False
        self.refine_form = Container(
            widgets=[
                FloatSpinBox(name="min_score", label="Min score", value=0.7, min=-1, max=1),
                FloatSpinBox(name="min_overlap", label="Min overlap", value=0.5, max=1),
                ComboBox(name="stack", label="Stack", choices=STACK_MODES),
            ]
        )
        self.refine_button = QPushButton("Refine selected label")
        self.refine_button.clicked.connect(self.refine_selected)
        self.refine_all_button = QPushButton("Refine all")
        self.refine_all_button.clicked.connect(self.refine_all)
        self.progress = QProgressBar()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("Refine labels or segment everything with the loaded model.")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Existing labels</b>"))
        layout.addWidget(self.refine_form.native)
        for button in (self.refine_button, self.refine_all_button):
            layout.addWidget(button)
        layout.addWidget(QLabel("<b>Segment everything</b>"))
        self._build_everything(layout)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.status)
        self._buttons = [self.refine_button, self.refine_all_button, *self._everything_buttons]

    # -- inputs ----------------------------------------------------------------------------
    def _inputs(self, need_labels: bool = True):
        """``(image layer, SamInput, target Labels or None, plane or None)``; raises ValueError."""
        from ..sam import SamInput

        if self.session.model is None:
            raise ValueError("Load a model first.")
        image = self.widget.form.image.value
        if image is None or image not in self.viewer.layers:
            raise ValueError("Choose an image layer.")
        source = self.session.source  # the prompted image: same normalisation, same cache keys
        if self.widget.image is not image or source is None:
            data, rgb = spatial_image(image)
            source = SamInput(data, rgb=rgb)
        shape = (source.n_planes, *source.plane_shape) if source.is_stack else source.plane_shape
        target = self.widget.form.target.value
        if target is not None and target not in self.viewer.layers:
            target = None
        if target is None and need_labels:
            raise ValueError("Choose the Labels layer to refine in 'Labels'.")
        if target is not None and tuple(target.data.shape) != tuple(shape):
            raise ValueError(
                f"The labels {target.name!r} have shape {tuple(target.data.shape)}, expected "
                f"{tuple(shape)} to match the image {image.name!r}."
            )
        plane = current_plane(self.viewer, image) if source.is_stack else None
        return image, source, target, plane

    def segmenter(self):
        """A segmenter of the session's model sharing its embedding cache (made once per model)."""
        from ..sam import PromptSegmenter

        model = self.session.model
        if self._segmenter is None or self._segmenter.model is not model:
            self._segmenter = PromptSegmenter(model, self.session.cache)
        return self._segmenter

    def _corrective_points(self, image, plane):
        """The session's prompts on ``plane`` when it prompts this image: points, positive."""
        if self.widget.image is not image or self.session.source is None:
            return None, None
        prompts = self.session.prompts(plane)
        if not len(prompts.points):
            return None, None
        return np.asarray(prompts.points), np.asarray(prompts.positive)

    # -- refine ----------------------------------------------------------------------------
    def refine_selected(self) -> None:
        """Refine the target layer's selected label; written at once (one undo step)."""
        from ..sam import SamInput

        try:
            image, source, target, plane = self._inputs()
            object_id = int(target.selected_label)
            mode = self.refine_form.stack.value
            whole = plane is None or mode != "visible plane"
            where = np.asarray(target.data if whole else target.data[plane])
            if object_id == 0 or not (where == object_id).any():
                on = "" if plane is None else f" on plane {plane}"
                raise ValueError(
                    f"Label {object_id} (the selected label of {target.name!r}) is not in the "
                    f"layer{on}: pick an object with the colour picker or the label box."
                )
        except ValueError as exc:
            notify_error(exc, "Refine selected label")
            self.status.setText(error_text(exc))
            return
        if plane is not None and whole:
            self._refine_all(source, target, [object_id], None)
            return
        points, positive = self._corrective_points(image, plane)
        snapshot = where.copy()  # the plane (2D image: the image) the job reads

        def returned(refined) -> None:
            change = refined.change(dtype=target.data.dtype)
            written = self._write(target, snapshot, change.indices, change.values, plane)
            if points is not None:
                self.session.clear_prompts()  # the corrective points are used up
            self.status.setText(
                f"Label {object_id} refined (score {refined.score:.2f}, overlap "
                f"{refined.overlap:.2f}): {written} pixels changed; Ctrl+Z undoes."
            )

        self._start(
            "Refining…",
            refine_one_job,
            self.segmenter(),
            source if plane is None else SamInput(source.plane(plane), rgb=True),
            snapshot,
            object_id,
            points,
            positive,
            on_returned=returned,
        )

    def refine_all(self) -> None:
        """Refine every object of the target layer; accepted changes in one undo step."""
        try:
            _image, source, target, plane = self._inputs()
        except ValueError as exc:
            notify_error(exc, "Refine all")
            self.status.setText(error_text(exc))
            return
        self._refine_all(source, target, None, plane)

    def _refine_all(self, source, target: Labels, ids, plane) -> None:
        from ..sam import refine_all_job

        visible = plane is not None and self.refine_form.stack.value == "visible plane"
        snapshot = np.array(target.data[plane] if visible else target.data)  # what the job reads
        image = source.plane(plane) if visible else source
        through = "propagation" if self.refine_form.stack.value == "propagation" else "planes"

        def returned(result) -> None:
            indices, values = result.changed_pixels()
            written = self._write(target, snapshot, indices, values, plane if visible else None)
            self.status.setText(
                f"Refine: {len(result.accepted)} accepted, {len(result.rejected)} rejected; "
                f"{written} pixels changed in one step (Ctrl+Z undoes)."
            )

        self._start(
            "Refining all…",
            refine_all_job,
            self.segmenter(),
            image,
            snapshot,
            min_score=self.refine_form.min_score.value,
            min_overlap=self.refine_form.min_overlap.value,
            ids=ids,
            rgb=True if visible else None,
            through=through if snapshot.ndim == 3 else "planes",
            on_returned=returned,
        )

    def _write(self, target: Labels, snapshot: np.ndarray, indices, values, plane=None) -> int:
        """Write ``values`` at ``indices`` in one undo step, where the user did not paint since.

        ``indices`` address ``snapshot`` (the labels the job read: the layer, or its
        ``plane``). Pixels whose value differs from ``snapshot`` were edited during
        the job and are left as the user made them.
        """
        if target not in self.viewer.layers:
            raise ValueError(f"The labels layer {target.name!r} was removed during the job.")
        if not len(indices) or not indices[0].size:
            return 0
        current = target.data if plane is None else target.data[plane]
        keep = np.asarray(current[indices]) == snapshot[indices]
        indices, values = tuple(ix[keep] for ix in indices), np.asarray(values)[keep]
        if plane is not None:
            indices = (np.full(values.size, plane, dtype=np.intp), *indices)
        write_labels(target, indices, values)
        target.refresh()
        self._recorded(target, indices, values, class_id=0)
        return int(indices[0].size) if len(indices) else 0

    def _recorded(self, target: Labels, indices, values, *, class_id: int) -> None:
        """Tell the session's object list about a tool write (records, features, autosave)."""
        panel = getattr(self.widget, "objects_panel", None)
        if panel is None or not len(indices) or not indices[0].size:
            return
        plane = None
        if self.session.is_stack and indices[0].min() == indices[0].max():
            plane = int(indices[0][0])
        ids = np.unique(np.asarray(values)).tolist()
        panel.tool_wrote(target, ids, class_id=class_id, plane=plane)

    # -- jobs ------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True from a button press until its job has ended (finished, failed or cancelled)."""
        return self._busy

    def _start(self, text: str, job, *args, on_returned, **kwargs) -> None:
        if self._busy:
            self.status.setText("A SAM tool is already running: wait or cancel it.")
            return

        def returned(result) -> None:
            try:
                on_returned(result)
            except Exception as exc:  # writing failed: say so, the layer is as it was
                notify_error(exc, "SAM tools")
                self.status.setText(f"Failed: {error_text(exc)}")

        self._set_busy(True)
        self.progress.setValue(0)
        self.status.setText(text)
        self.jobs.start(
            JOB,
            job,
            *args,
            what="SAM tools",
            on_yielded=self._progress,
            on_returned=returned,
            on_errored=lambda exc: self.status.setText(f"Failed: {error_text(exc)}"),
            on_cancelled=lambda exc: self.status.setText("Cancelled; no layer changed."),
            on_finished=lambda: self._set_busy(False),
            **kwargs,
        )

    def cancel(self) -> None:
        """Stop the running job; no layer changes."""
        if self._busy:
            self.jobs.cancel(JOB)
            self.status.setText("Cancelling…")

    def _progress(self, event) -> None:
        if isinstance(event, ProgressEvent):
            fraction = event.fraction
            if fraction is not None:
                self.progress.setValue(int(100 * fraction))
            self.status.setText(f"{event.stage}: {event.done}/{event.total}")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        with suppress(RuntimeError):  # the dock went away meanwhile
            for button in self._buttons:
                button.setEnabled(not busy)
            self.cancel_button.setEnabled(busy)
            if not busy:
                self.progress.setValue(0)
