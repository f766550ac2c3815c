"""CRF refinement dock widget: snap a probability map or a label layer to image edges.

A thin shell over :mod:`napari_seglab.crf`. The parameter form is a magicgui
container (layer choices follow the viewer): an Image layer, the input (a
probability Image layer ``(C, [Z,] Y, X)`` or ``([Z,] Y, X)``, or a Labels
layer) and the CRF parameters. ``refine_steps`` / ``refine_labels_steps`` run
in a worker thread; the result goes into a new Labels layer or back into the
input Labels layer as one undoable step. Every layer it adds (the preview, a
new result) takes the geometry of its source: the input Labels layer, or the
image for a probability map (scale, translate, rotate, shear, affine).
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from .. import crf
from ._dock import DockShell
from ._layers import (
    current_plane,
    error_text,
    layer_geometry,
    notify_error,
    replace_labels,
)
from .crf_form import crf_form, crf_inputs, lazy_crf_inputs

NEW_LAYER = "New Labels layer"
REPLACE_INPUT = "Replace input labels (Ctrl+Z undoes)"
PREVIEW_NAME = "CRF preview"


class CrfWidget(DockShell):
    """Dense CRF refinement of a probability map or a label layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    form : magicgui Container
        ``image``, ``given`` (the layer to refine), ``mode``, ``confidence``,
        ``iterations``, ``spatial_sigma``, ``intensity_sigma``, ``bilateral_weight``,
        ``smoothness_sigma``, ``smoothness_weight``, ``output``.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self._busy = False
        self._build_ui()
        self.reset_choices()
        self._input_changed()

    def _build_ui(self) -> None:
        self.form = crf_form(self._image_choices, self._input_choices, self._output_choices)
        self.forms = [self.form]
        self.form.given.changed.connect(self._input_changed)
        self.form.image.changed.connect(self._input_changed)
        self.preview_button = QPushButton("Preview on current plane")
        self.preview_button.setToolTip(
            f"Refine only the plane on screen and show it in a '{PREVIEW_NAME}' layer."
        )
        self.preview_button.clicked.connect(self.preview)
        self.apply_button = QPushButton("Apply to all")
        self.apply_button.setToolTip("Refine the whole image or stack.")
        self.apply_button.clicked.connect(self.apply)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.set_rows(
            [
                [self.form],
                [self.preview_button, self.apply_button, self.cancel_button],
                [self.progress],
                [self.status],
            ]
        )

    # ----------------------------------------------------------------- layers
    def _image_choices(self, widget=None) -> list:
        return [
            (x.name, x)
            for x in self.viewer.layers
            if isinstance(x, Image) and x.name != PREVIEW_NAME
        ]

    def _input_choices(self, widget=None) -> list:
        return [
            (x.name, x)
            for x in self.viewer.layers
            if isinstance(x, (Image, Labels)) and x.name != PREVIEW_NAME
        ]

    def _output_choices(self, widget=None) -> list:
        given = getattr(getattr(self, "form", None), "given", None)
        is_labels = given is not None and isinstance(given.value, Labels)
        return [NEW_LAYER, REPLACE_INPUT] if is_labels else [NEW_LAYER]

    def reset_choices(self, event=None) -> None:
        """Refresh the layer choices; the chosen layers stay while they exist.

        With no layer to refine chosen, the newest Labels layer is taken (else the
        newest other image).
        """
        before = (self.form.image.value, self.form.given.value)
        super().reset_choices()
        if self.form.given.value is None:
            layers = [x for _, x in self._input_choices()]
            labels = [x for x in layers if isinstance(x, Labels)]
            newest = labels or [x for x in layers if x is not self.form.image.value]
            self.form.given.value = newest[-1] if newest else None
        if (self.form.image.value, self.form.given.value) != before:
            self._input_changed()

    def _input_changed(self, *_) -> None:
        """Labels-only controls follow the input; a new choice leaves no stale status."""
        is_labels = isinstance(self.form.given.value, Labels)
        self.form.mode.enabled = is_labels
        self.form.confidence.enabled = is_labels
        current = self.form.output.value
        self.form.output.reset_choices()
        if current in self.form.output.choices:
            self.form.output.value = current
        if self._busy:
            return
        image, given = self.form.image.value, self.form.given.value
        if image is None or given is None:
            self.status.setText("Choose an image and a layer to refine.")
        else:
            self.status.setText(f"Ready: refine {given.name!r} along the edges of {image.name!r}.")
        self.progress.setValue(0)

    # ------------------------------------------------------------- parameters
    def parameters(self) -> dict:
        """Keyword arguments for ``crf.refine`` from the form (``None`` means auto)."""
        form = self.form
        return {
            "iterations": form.iterations.value,
            "spatial_sigma": form.spatial_sigma.value or None,
            "intensity_sigma": form.intensity_sigma.value,
            "bilateral_weight": form.bilateral_weight.value,
            "smoothness_sigma": form.smoothness_sigma.value or None,
            "smoothness_weight": form.smoothness_weight.value,
        }

    def _layers(self) -> tuple[Image, Layer]:
        image, given = self.form.image.value, self.form.given.value
        if image is None or given is None:
            raise ValueError("Expected an Image layer and a layer to refine; add them first.")
        return image, given

    def _source(self) -> Layer:
        """The layer whose grid the results lie on: the input Labels layer, else the image."""
        image, given = self._layers()
        return given if isinstance(given, Labels) else image

    # ------------------------------------------------------------------- jobs
    def preview(self) -> None:
        """Refine the plane on screen into the preview layer."""
        try:
            image_layer = self._layers()[0]
            source = self._source()
            plane = current_plane(self.viewer, image_layer)
            inputs = crf_inputs(*self._layers(), plane)
        except ValueError as exc:
            self._fail(exc)
            return
        self._start(inputs, lambda result: self._show_preview(result, source, plane))

    def apply(self) -> None:
        """Refine the whole image or stack and write the result.

        Layers backed by dask or zarr are refined block by block into a zarr
        store in the cache folder (``crf/``) and never loaded whole.
        """
        try:
            target, source = self._layers()[1], self._source()
            lazy = lazy_crf_inputs(*self._layers())
            inputs = crf_inputs(*self._layers(), None) if lazy is None else None
        except ValueError as exc:
            self._fail(exc)
            return
        if lazy is not None:
            self._start_lazy(lazy, source, target)
            return
        replace = self.form.output.value == REPLACE_INPUT
        self._start(inputs, lambda result: self._write(result, source, target, replace))

    def cancel(self) -> None:
        """Ask the running job to stop; no layer changes."""
        if self._busy:
            self.jobs.cancel("crf")
            self.status.setText("Cancelling…")

    @property
    def busy(self) -> bool:
        """True from Preview/Apply until the job (finished, failed or cancelled) has ended."""
        return self._busy

    def _fail(self, exc: BaseException, notify: bool = True) -> None:
        """Say what went wrong in the status line (and as a notification); ready again."""
        self.status.setText(f"Failed: {error_text(exc)}")
        self.progress.setValue(0)
        if notify:
            notify_error(exc, "CRF refinement")

    def _start(self, inputs, on_result) -> None:
        image, given, spacing, is_labels = inputs
        kwargs = dict(self.parameters(), spacing=spacing)
        if is_labels:
            function = crf.refine_labels_steps
            kwargs.update(confidence=self.form.confidence.value, mode=self.form.mode.value)
        else:
            function = crf.refine_steps
        self._run(function, (image, given), kwargs, on_result)

    def _start_lazy(self, inputs, source: Layer, target: Layer) -> None:
        from ..batch.crf_blocks import refine_into_store_events
        from ..cache import cache_dir

        image, probabilities, spacing = inputs
        kwargs = dict(self.parameters(), spacing=spacing)

        def add(result) -> None:
            name = f"{target.name} CRF"
            self.viewer.add_labels(result, name=name, **layer_geometry(source))
            self.status.setText(f"Result in new layer {name!r} (a zarr store in the cache).")

        args = (image, probabilities, cache_dir("crf"))
        self._run(refine_into_store_events, args, kwargs, add)

    def _run(self, function, args, kwargs, on_result) -> None:
        if self._busy:
            self.status.setText("CRF refinement is already running.")
            return

        def returned(result) -> None:
            try:
                on_result(result)
            except Exception as exc:  # writing the result failed: no half-written state
                self._fail(exc)

        self._set_busy(True)
        self.progress.setValue(0)
        self.status.setText("Refining…")
        self.jobs.start(
            "crf",
            function,
            *args,
            what="CRF refinement",
            on_yielded=self._progress,
            on_returned=returned,
            on_errored=lambda exc: self._fail(exc, notify=False),  # WidgetJobs notified
            on_cancelled=lambda exc: self._cancelled(),
            on_finished=lambda: self._set_busy(False),
            **kwargs,
        )

    def _cancelled(self) -> None:
        self.status.setText("Cancelled; no layer changed.")
        self.progress.setValue(0)

    def _progress(self, event) -> None:
        self.progress.setValue(int(100 * event.done / max(event.total, 1)))
        self.status.setText(event.message)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        with suppress(RuntimeError):  # the widget went away meanwhile
            self.preview_button.setEnabled(not busy)
            self.apply_button.setEnabled(not busy)
            self.cancel_button.setEnabled(busy)

    # ---------------------------------------------------------------- results
    def _show_preview(self, result: np.ndarray, source: Layer, plane: int | None) -> None:
        if plane is None:
            full = result
        else:
            depth = (source.data[0] if source.multiscale else source.data).shape[0]
            full = np.zeros((depth, *result.shape), dtype=result.dtype)
            full[plane] = result
        geometry = layer_geometry(source)
        if PREVIEW_NAME in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_NAME]
            if layer.data.shape == full.shape and layer.data.dtype == full.dtype:
                layer.data = full
                for key, value in geometry.items():
                    setattr(layer, key, value)
                self.status.setText(f"Preview of plane {plane} updated.")
                return
            self.viewer.layers.remove(layer)
        self.viewer.add_labels(full, name=PREVIEW_NAME, opacity=0.6, **geometry)
        where = "" if plane is None else f" of plane {plane}"
        self.status.setText(f"Preview{where} ready in {PREVIEW_NAME!r}.")

    def _write(self, result: np.ndarray, source: Layer, target: Layer, replace: bool) -> None:
        if replace and isinstance(target, Labels):
            changed = replace_labels(target, result.astype(target.data.dtype, copy=False))
            self.status.setText(f"Refined {target.name!r}: {changed} voxels changed (Ctrl+Z).")
            return
        name = f"{target.name} CRF"
        self.viewer.add_labels(result, name=name, **layer_geometry(source))
        self.status.setText(f"Result in new layer {name!r}.")
