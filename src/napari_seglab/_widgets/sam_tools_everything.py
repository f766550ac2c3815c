"""Segment everything in the SAM dock: settings, a preview layer, Accept / Reject.

A mixin of :class:`~napari_seglab._widgets.sam_tools.SamToolsPanel` (it uses
the panel's ``viewer``, ``widget``, ``session``, ``status``, ``_inputs`` and
``_start``). "Segment everything" runs
:func:`~napari_seglab.sam.segment_everything_job` with the official
generator's settings on the visible plane (or, with "All planes", on every
plane of a stack, ids linked across planes by the core) and shows the
objects in a "SAM everything" Labels layer. "Accept" writes them into the
target Labels layer (a new "SAM labels" layer when none is chosen) with ids
above its largest id, only into background pixels unless "Accept over
existing labels" is ticked, as ONE step of the layer's undo history, and removes the preview;
"Reject" removes the preview and changes nothing. Accepted objects become
committed objects of the session with the class selected in the object list
(the active object's class; "(no class)" gives none): they get rows in the
target's ``features`` and the saved session is saved with the new labels.
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, SpinBox
from napari.layers import Labels
from qtpy.QtWidgets import QHBoxLayout, QPushButton

from ._layers import error_text, layer_geometry, notify_error, write_labels

__all__ = ["EVERYTHING_LAYER", "EverythingTools", "added_objects"]

EVERYTHING_LAYER = "SAM everything"
#: The settings offered (official ``SamAutomaticMaskGenerator`` names) and their defaults.
SETTINGS = (
    ("points_per_side", SpinBox, 32, 1, 256, 1),
    ("pred_iou_thresh", FloatSpinBox, 0.88, 0.0, 1.0, 0.01),
    ("stability_score_thresh", FloatSpinBox, 0.95, 0.0, 1.0, 0.01),
    ("box_nms_thresh", FloatSpinBox, 0.7, 0.0, 1.0, 0.05),
    ("min_mask_region_area", SpinBox, 0, 0, 10**7, 10),
    ("crop_n_layers", SpinBox, 0, 0, 4, 1),
)


def added_objects(target: np.ndarray, new: np.ndarray, *, overwrite: bool = False):
    """Where and what to write to add the objects of ``new`` to ``target`` as new objects.

    Parameters
    ----------
    target : int array, any shape
        The labels written into (read only).
    new : int array, ``target``'s shape
        Objects to add, 0 background.
    overwrite : bool
        Also write over other objects (default: only into background pixels).

    Returns
    -------
    indices : tuple of int arrays
        ``np.nonzero``-style indices into ``target``.
    values : array of ``target``'s dtype
        ``new``'s id plus ``target``'s largest id, so no id is shared.

    Raises
    ------
    ValueError
        For another shape, or ids that do not fit ``target``'s dtype.
    """
    target, new = np.asarray(target), np.asarray(new)
    if target.shape != new.shape:
        raise ValueError(f"Expected new objects of shape {target.shape}, got {new.shape}.")
    mask = new > 0
    if not overwrite:
        mask &= target == 0
    indices = np.nonzero(mask)
    offset = int(target.max()) if target.size else 0
    top = offset + (int(new.max()) if new.size else 0)
    if np.issubdtype(target.dtype, np.integer) and top > np.iinfo(target.dtype).max:
        raise ValueError(
            f"New ids up to {top} do not fit the labels' dtype {target.dtype} "
            f"(max {np.iinfo(target.dtype).max}); convert the layer to a wider integer type."
        )
    values = (new[indices].astype(np.int64) + offset).astype(target.dtype)
    return indices, values


class EverythingTools:
    """The segment-everything part of the SAM tools panel (a mixin)."""

    everything_layer: Labels | None = None

    def _build_everything(self, layout) -> None:
        widgets = [
            kind(name=name, label=name, value=value, min=low, max=high, step=step)
            for name, kind, value, low, high, step in SETTINGS
        ]
        widgets.append(CheckBox(name="all_planes", label="All planes (stacks)", value=False))
        over = CheckBox(name="overwrite", label="Accept over existing labels", value=False)
        widgets.append(over)
        self.everything_form = Container(widgets=widgets)
        self.everything_button = QPushButton("Segment everything")
        self.everything_button.clicked.connect(self.segment_everything)
        self.accept_button = QPushButton("Accept")
        self.accept_button.clicked.connect(self.accept_everything)
        self.reject_button = QPushButton("Reject")
        self.reject_button.clicked.connect(self.reject_everything)
        layout.addWidget(self.everything_form.native)
        row = QHBoxLayout()
        for button in (self.everything_button, self.accept_button, self.reject_button):
            row.addWidget(button)
        layout.addLayout(row)
        self._everything_buttons = [self.everything_button, self.accept_button]

    def everything_settings(self) -> dict:
        """The settings by their official names (``points_per_side``, ...)."""
        return {name: getattr(self.everything_form, name).value for name, *_ in SETTINGS}

    @property
    def layers(self) -> tuple:
        """The helper layers this panel shows (never offered as image or target)."""
        layer = self.everything_layer
        return (layer,) if layer is not None and layer in self.viewer.layers else ()

    def segment_everything(self) -> None:
        """Segment every object of the visible plane (or every plane) into a preview layer."""
        from ..sam import segment_everything_job

        try:
            image, source, _target, plane = self._inputs(need_labels=False)
        except ValueError as exc:
            notify_error(exc, "Segment everything")
            self.status.setText(error_text(exc))
            return
        one_plane = plane is not None and not self.everything_form.all_planes.value
        shape = (source.n_planes, *source.plane_shape) if source.is_stack else source.plane_shape

        def returned(result) -> None:
            labels = result.labels
            if one_plane:
                full = np.zeros(shape, dtype=labels.dtype)
                full[plane] = labels
                labels = full
            self._show_everything(labels, image)
            where = f" on plane {plane}" if one_plane else ""
            self.status.setText(
                f"{len(result.objects)} objects found{where}: Accept writes them, Reject drops."
            )

        self._start(
            "Segmenting everything…",
            segment_everything_job,
            self.session.model,
            source.plane(plane) if one_plane else source,
            cache=self.session.cache,
            rgb=True if one_plane else None,
            on_returned=returned,
            **self.everything_settings(),
        )

    def _show_everything(self, labels: np.ndarray, image) -> None:
        self.remove_preview()
        geometry = layer_geometry(image)
        if labels.ndim != image.ndim:
            n = labels.ndim
            geometry = {"scale": image.scale[-n:], "translate": image.translate[-n:]}
        self.everything_layer = Labels(labels, name=EVERYTHING_LAYER, opacity=0.6, **geometry)
        self.viewer.layers.append(self.everything_layer)

    def remove_preview(self) -> None:
        """Remove the segment-everything preview layer, if shown."""
        layer, self.everything_layer = self.everything_layer, None
        if layer is not None and layer in self.viewer.layers:
            with suppress(ValueError):
                self.viewer.layers.remove(layer)

    def accept_everything(self) -> int:
        """Write the preview's objects into the target layer (one undo step); the ids added."""
        layer = self.everything_layer
        if layer is None or layer not in self.viewer.layers:
            self.status.setText("Nothing to accept: press 'Segment everything' first.")
            return 0
        try:
            target = self._everything_target(layer)
            indices, values = added_objects(
                target.data, layer.data, overwrite=self.everything_form.overwrite.value
            )
        except ValueError as exc:
            notify_error(exc, "Segment everything")
            self.status.setText(error_text(exc))
            return 0
        write_labels(target, indices, values)
        target.refresh()
        self.remove_preview()
        # the new objects become the session's committed objects, of the selected class
        self._recorded(target, indices, values, class_id=self.session.active_object.class_id)
        added = int(np.unique(values).size)
        self.status.setText(
            f"{added} objects added to {target.name!r} in one step (Ctrl+Z undoes)."
        )
        return added

    def _everything_target(self, preview: Labels) -> Labels:
        target = self.widget.form.target.value
        if target is not None and target in self.viewer.layers:
            if target.data.shape != preview.data.shape:
                raise ValueError(
                    f"The labels {target.name!r} have shape {target.data.shape}, expected "
                    f"{preview.data.shape} (the preview's)."
                )
            return target
        geometry = layer_geometry(preview)
        target = Labels(np.zeros(preview.data.shape, np.int32), name="SAM labels", **geometry)
        index = self.viewer.layers.index(preview)
        self.viewer.layers.insert(index, target)
        self.widget.reset_choices()
        self.widget.form.target.value = target
        return target

    def reject_everything(self) -> None:
        """Drop the preview; no layer changes."""
        self.remove_preview()
        self.status.setText("Segment everything rejected; no layer changed.")
