"""The object list of the SAM prompting dock: several objects, their classes, commit all.

A thin shell over the pending objects and the class table of the shared
:class:`~napari_seglab.sessions.SamPromptSession`
(:mod:`napari_seglab.sessions.sam_objects`). The list shows the pending
objects; selecting one makes it active (its prompts go into the "SAM points"
and "SAM box" layers, its proposal into the preview). The other pending
objects' proposals are shown in a "SAM pending" Labels layer. "Commit all"
writes every pending object in one undo step; after a commit the objects'
classes go into the target layer's ``features`` (columns ``index``,
``class``, ``class_name``) and, when "Class layer" is ticked, into a "SAM
classes" Labels layer (class id per pixel, also through napari's undo).
Saving and resuming the session is :class:`~.sam_session_files.SessionFiles`.
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..sessions import class_image
from ._layers import layer_geometry, notify_error, replace_labels, show_warning
from .sam_session_files import SessionFiles

__all__ = ["CLASS_LAYER", "PENDING_LAYER", "ObjectsPanel"]

PENDING_LAYER = "SAM pending"
CLASS_LAYER = "SAM classes"
NO_CLASS = "(no class)"


class ObjectsPanel(SessionFiles, QWidget):
    """Pending objects, classes and saved sessions of a SAM prompting widget.

    Parameters
    ----------
    widget : SamPromptWidget
        The dock it belongs to (its ``session``, ``viewer``, ``jobs``,
        ``prompt_layers``, ``commit`` and ``target_labels``).

    Attributes
    ----------
    pending_layer : napari Labels or None
        The other pending objects' proposals (value: the object's uid).
    class_layer : napari Labels or None
        The semantic class image, when asked for.
    """

    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget
        self.session = widget.session
        self.viewer = widget.viewer
        self.pending_layer: Labels | None = None
        self.class_layer: Labels | None = None
        self._shown_uid: int | None = None
        self._pending_planes: set = set()
        self._build()
        self._connections = [
            (self.session.objects_changed, self._on_objects),
            (self.session.classes_changed, self._on_classes),
            (self.session.prediction_changed, self._on_prediction),
            (self.session.committed_all, self._on_committed),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self._init_files()
        widget.jobs.on_close(self.teardown)
        self._on_classes()

    # -- UI --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.object_list = QListWidget()
        self.object_list.setMaximumHeight(110)
        self.object_list.currentItemChanged.connect(self._on_row)
        self.new_button = QPushButton("New object")
        self.new_button.clicked.connect(self.add_object)
        self.delete_button = QPushButton("Delete object")
        self.delete_button.clicked.connect(self.delete_object)
        self.commit_all_button = QPushButton("Commit all")
        self.commit_all_button.clicked.connect(self.widget.commit)
        self.class_box = QComboBox()
        self.class_box.activated.connect(self._on_class_chosen)
        self.class_name = QLineEdit()
        self.class_name.setPlaceholderText("new class name")
        self.class_name.returnPressed.connect(self.add_class)
        self.add_class_button = QPushButton("Add class")
        self.add_class_button.clicked.connect(self.add_class)
        self.remove_class_button = QPushButton("Remove class")
        self.remove_class_button.setToolTip("Remove the class shown (no committed object has it)")
        self.remove_class_button.clicked.connect(self.remove_class)
        self.class_layer_box = QCheckBox("Class layer (class id per pixel)")
        self.class_layer_box.toggled.connect(self._on_setting)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Objects (the selected one takes the clicks):"))
        layout.addWidget(self.object_list)
        rows = [
            [self.new_button, self.delete_button, self.commit_all_button],
            [QLabel("Class"), self.class_box, self.remove_class_button],
            [self.class_name, self.add_class_button],
            [self.class_layer_box],
            *self._file_rows(),
        ]
        for widgets in rows:
            row = QHBoxLayout()
            for item in widgets:
                row.addWidget(item)
            layout.addLayout(row)

    @property
    def layers(self) -> tuple:
        """Layers of this panel that are never offered as an image or a target."""
        return tuple(x for x in (self.pending_layer, self.class_layer) if x is not None)

    def _alive(self) -> bool:
        return not self.widget.jobs.closed

    # -- objects ---------------------------------------------------------------------------
    def add_object(self) -> None:
        """Start a new pending object (the selected class carries over)."""
        self.session.add_object()

    def delete_object(self) -> None:
        """Drop the selected pending object and its prompts."""
        self.session.delete_object()

    def _on_row(self, current, previous=None) -> None:
        if current is not None:
            self.session.select_object(int(current.data(Qt.ItemDataRole.UserRole)))

    def _describe(self, obj) -> str:
        name = self.session.classes.get(obj.class_id, NO_CLASS)
        state = (
            "proposal ready"
            if obj.prediction is not None
            else ("prompts, no proposal" if obj.has_prompts else "empty: click on it")
        )
        return f"Object {obj.uid} · {name} · {state}"

    def _on_objects(self) -> None:
        """The object list or the active object changed: list, class box, layers."""
        if not self._alive():
            return
        with suppress(RuntimeError):
            self.object_list.blockSignals(True)
            try:
                self.object_list.clear()
                for obj in self.session.objects:
                    item = QListWidgetItem(self._describe(obj))
                    item.setData(Qt.ItemDataRole.UserRole, obj.uid)
                    self.object_list.addItem(item)
                    if obj is self.session.active_object:
                        self.object_list.setCurrentItem(item)
            finally:
                self.object_list.blockSignals(False)
            self._show_class()
        active = self.session.active_object
        if active.uid != self._shown_uid:
            self._shown_uid = active.uid
            self._load_prompts(active)
        self._show_pending()
        self.save_soon()

    def _on_prediction(self) -> None:
        """The active object's proposal changed: only its row's text (cheap, on every click)."""
        if not self._alive():
            return
        with suppress(RuntimeError):
            item = self.object_list.currentItem()
            if item is not None:
                item.setText(self._describe(self.session.active_object))
        self.save_soon()

    def _load_prompts(self, obj) -> None:
        """Put ``obj``'s prompts into the points and box layers (no prompt change reported)."""
        layers = self.widget.prompt_layers
        if layers is None or not layers.alive():
            return
        if not obj.has_prompts:
            layers.clear()
            return
        ndim = layers.points.ndim
        points, flags, boxes = [], [], []
        for plane, prompts in obj.prompts.items():
            lead = [] if plane is None else [plane]
            points += [[*lead, *rc] for rc in np.asarray(prompts.points).tolist()]
            flags += np.asarray(prompts.positive, bool).tolist()
            if prompts.box is not None:
                r0, c0, r1, c1 = np.asarray(prompts.box).tolist()
                boxes.append([[*lead, r0, c0], [*lead, r1, c1]])
        with layers.points.events.data.blocker():
            layers.points.data = np.asarray(points, dtype=float).reshape(-1, ndim)
            layers.points.features = {"positive": np.asarray(flags, dtype=bool)}
            layers.points.refresh_colors()  # colours follow the "positive" feature
        with layers.box.events.data.blocker():
            layers.box.data = []
            if boxes:
                layers.box.add_rectangles(np.asarray(boxes, dtype=float))

    def _show_pending(self) -> None:
        """Draw the proposals of the pending objects that are not active."""
        others = [
            o
            for o in self.session.objects
            if o is not self.session.active_object and o.prediction is not None
        ]
        layer = self.pending_layer
        if layer is None and others:
            layer = self._make_pending_layer()
        if layer is None or layer not in self.viewer.layers:
            return
        data = layer.data
        for plane in self._pending_planes:
            if plane is None:
                data[...] = 0
            else:
                data[plane] = 0
        self._pending_planes = set()
        for obj in others:
            (data if obj.plane is None else data[obj.plane])[obj.mask()] = obj.uid
            self._pending_planes.add(obj.plane)
        layer.refresh()

    def _make_pending_layer(self) -> Labels | None:
        layers = self.widget.prompt_layers
        if layers is None or not layers.alive() or self.session.source is None:
            return None
        preview = layers.preview
        self.pending_layer = Labels(
            np.zeros(self.session.labels_shape, dtype=np.int32),
            name=PENDING_LAYER,
            opacity=0.35,
            **layer_geometry(preview),
        )
        self._pending_planes = set()
        self.viewer.layers.insert(self.viewer.layers.index(preview), self.pending_layer)
        layers.activate()
        return self.pending_layer

    def _remove_pending_layer(self) -> None:
        if self.pending_layer is not None and self.pending_layer in self.viewer.layers:
            self.viewer.layers.remove(self.pending_layer)
        self.pending_layer = None

    # -- classes ---------------------------------------------------------------------------
    def _on_classes(self) -> None:
        if not self._alive():
            return
        with suppress(RuntimeError):
            self.class_box.blockSignals(True)
            try:
                self.class_box.clear()
                self.class_box.addItem(NO_CLASS, 0)
                for class_id, name in sorted(self.session.classes.items()):
                    self.class_box.addItem(f"{name} ({class_id})", class_id)
            finally:
                self.class_box.blockSignals(False)
            self._show_class()
        self._on_objects()

    def _show_class(self) -> None:
        index = self.class_box.findData(self.session.active_object.class_id)
        self.class_box.blockSignals(True)
        self.class_box.setCurrentIndex(max(index, 0))
        self.class_box.blockSignals(False)

    def _on_class_chosen(self, index: int) -> None:
        self.session.set_object_class(int(self.class_box.itemData(index) or 0))

    def add_class(self) -> None:
        """Add the typed class name to the class table and give it to the selected object."""
        try:
            class_id = self.session.add_class(self.class_name.text())
        except ValueError as exc:
            notify_error(exc, "SAM classes")
            return
        self.class_name.clear()
        self.session.set_object_class(class_id)

    def remove_class(self) -> None:
        """Remove the class shown in the class box from the table."""
        class_id = int(self.class_box.currentData() or 0)
        if class_id:
            try:
                self.session.remove_class(class_id)
            except ValueError as exc:
                notify_error(exc, "SAM classes")

    def choose_class(self, class_id: int) -> None:
        """Give the selected object the class ``class_id`` (as the class box does)."""
        index = self.class_box.findData(int(class_id))
        if index < 0:
            raise ValueError(f"Expected a class id in {sorted(self.session.classes)} or 0.")
        self.class_box.setCurrentIndex(index)
        self._on_class_chosen(index)

    # -- after a commit --------------------------------------------------------------------
    def _on_committed(self, ids) -> None:
        """Objects were written: their classes go into the layer's features (and class layer)."""
        if not self._alive() or self.session.last_object is None:
            return
        layer = self.session.last_object[0]
        if isinstance(layer, Labels) and layer in self.viewer.layers:
            self.apply_classes(layer)
            self.saved_now(layer)  # the core saves the labels right after this signal

    def apply_classes(self, layer: Labels) -> None:
        """Write the committed objects' classes into ``layer.features`` (and the class layer)."""
        import pandas as pd

        table = pd.DataFrame(self.session.class_features())
        current = layer.features
        if len(current.columns) and "index" not in current:
            show_warning(  # rows by position: merging could mislabel the user's features
                f"Layer {layer.name!r} has features without an 'index' column: the classes "
                "were not added to them."
            )
        else:
            extra = [c for c in current.columns if c not in table.columns]
            if extra:  # the user's own columns are kept, rows matched by label id
                table = current[["index", *extra]].merge(table, on="index", how="outer")
            layer.features = table
        if self.class_layer_box.isChecked():
            self._write_class_layer(layer)

    def _write_class_layer(self, labels: Labels) -> None:
        classes = class_image(labels.data, self.session.object_classes)
        layer = self.class_layer
        if layer is None or layer not in self.viewer.layers or layer.data.shape != classes.shape:
            self.class_layer = Labels(classes, name=CLASS_LAYER, **layer_geometry(labels))
            self.viewer.layers.insert(self.viewer.layers.index(labels) + 1, self.class_layer)
            if self.widget.prompt_layers is not None and self.widget.prompt_layers.alive():
                self.widget.prompt_layers.activate()
        else:
            replace_labels(layer, classes.astype(layer.data.dtype))

    def _on_setting(self, *args) -> None:
        self.session.settings["class_layer"] = self.class_layer_box.isChecked()
        self.save_soon()

    # -- closing ---------------------------------------------------------------------------
    def teardown(self) -> None:
        """Save the session (labels too if changed), stop listening, drop the pending layer."""
        with suppress(RuntimeError):
            if self._labels_timer.isActive():
                self.follow_layer()
        self.unwatch()
        self.flush()
        for signal, slot in self._connections:
            with suppress(Exception):
                signal.disconnect(slot)
        with suppress(Exception):
            self._remove_pending_layer()
