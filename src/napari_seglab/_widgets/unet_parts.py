"""Pieces of the U-Net dock widget: sections, new layers on the source grid, suggestions.

The widget (:mod:`napari_seglab._widgets.unet`) lays its forms
(:mod:`.unet_forms`) out in these sections and runs the core jobs.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..batch.stores import is_lazy
from ._layers import layer_geometry


def group(title: str, *parts) -> QWidget:
    """A titled box (no frame when ``title`` is empty) of widgets and rows of widgets.

    ``parts`` are QWidgets, magicgui widgets, or tuples of them laid out in a row.
    """
    box = QGroupBox(title) if title else QWidget()
    layout = QVBoxLayout(box)
    margin = 4 if title else 0
    layout.setContentsMargins(margin, margin, margin, margin)
    for part in parts:
        if isinstance(part, tuple):
            row = QHBoxLayout()
            for widget in part:
                row.addWidget(getattr(widget, "native", widget))
            layout.addLayout(row)
        else:
            layout.addWidget(getattr(part, "native", part))
    return box


def section(title: str, *parts) -> QCollapsible:
    """A collapsed section (superqt ``QCollapsible``) holding :func:`group` ``("", *parts)``."""
    collapsible = QCollapsible(title, expandedIcon="▼", collapsedIcon="▶")
    collapsible.setDuration(120)
    collapsible.layout().setContentsMargins(0, 0, 0, 0)  # collapsed: just the title row
    collapsible.layout().setSpacing(0)
    collapsible.addWidget(group("", *parts))
    return collapsible


def source_geometry(layer, ndim: int, channel_axis: int | None = None) -> dict:
    """Layer keyword arguments that put ``ndim``-D data on ``layer``'s world grid.

    :func:`~._layers.layer_geometry` when ``ndim`` is the layer's; else the
    layer's transform restricted to its spatial axes.

    Parameters
    ----------
    layer : napari layer
        The source (an image the data was computed from).
    ndim : int
        Axes of the new data: ``layer.ndim``, or one less when the layer has a
        channel axis that the new data lacks.
    channel_axis : int, optional
        That channel axis of ``layer`` (default: its first axis).

    Returns
    -------
    dict
        ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` for
        ``viewer.add_labels`` / ``add_image``: the same data-to-world transform.
    """
    from napari.utils.transforms import Affine

    if ndim == layer.ndim:
        return layer_geometry(layer)
    drop = (0 if channel_axis is None else channel_axis) % layer.ndim
    axes = [axis for axis in range(layer.ndim) if axis != drop][-ndim:]
    physical = Affine(
        scale=layer.scale,
        translate=layer.translate,
        rotate=layer.rotate,
        shear=layer.shear,
        ndim=layer.ndim,
    ).set_slice(axes)
    return {
        "scale": physical.scale,
        "translate": physical.translate,
        "rotate": physical.rotate,
        "shear": physical.shear,
        "affine": layer.affine.set_slice(axes).affine_matrix,
    }


def train_job(*args, binary_hint: str, binary: bool = False, **kwargs):
    """:func:`~napari_seglab.unet.train_events`; too many classes names the checkbox to tick.

    ``binary_hint`` is the text of the "labels > 0" checkbox and ``binary``
    whether it is ticked; an instance family (Mask R-CNN) refuses it: its
    objects would all become one.
    """
    from ..unet import train_events
    from ..unet.data import TooManyClasses

    family = kwargs.get("architecture")
    if binary and instance_family(family):
        raise ValueError(
            f"The {family!r} family trains on instance labels (one id per object): untick "
            f"'{binary_hint}' under Data."
        )
    try:
        return (yield from train_events(*args, **kwargs))
    except TooManyClasses as exc:
        raise ValueError(f"{exc} Tick '{binary_hint}' under Data to do so.") from None


def instance_family(family: str | None) -> bool:
    """Whether ``family`` predicts objects itself (a family module of kind ``"instance"``)."""
    from ..unet.families import family_module

    module = None if family is None else family_module(family)
    return module is not None and getattr(module, "KIND", "") == "instance"


def module_family(family: str | None) -> bool:
    """Whether ``family`` predicts through its own module (Mask R-CNN, Mask2Former).

    Such models predict whole planes (no sliding windows): no block-by-block
    store, no visible-region prediction.
    """
    from ..unet.families import FAMILY_MODULES

    return family is not None and str(family).lower() in FAMILY_MODULES


def score_name(family: str | None) -> str:
    """Validation score of ``family``: ``"val F1"`` (instance), ``"val PQ"``, ``"val Dice"``."""
    from .unet_forms import panoptic_family

    if instance_family(family):
        return "val F1"
    return "val PQ" if panoptic_family(family) else "val Dice"


def describe_model(model) -> str:
    """One line about ``model`` for the dock ("No model yet." for None)."""
    if model is None:
        return "No model yet."
    name = score_name(model.family)
    best = "" if model.best_dice is None else f", best {name} {model.best_dice:.3f}"
    return (
        f"{model.architecture}, {model.describe_input()}, classes {list(model.classes)}, "
        f"patch {list(model.patch_size)}, {len(model.history)} epochs{best}"
    )


def prediction_job(image, probabilities: bool, model=None):
    """The core job predicting ``image`` and its extra keywords.

    In-memory images: :func:`~napari_seglab.unet.predict_and_split_events`.
    Lazy ones (dask, zarr, memory map): block by block into a zarr store in
    the cache folder (``predictions/``), so neither the image nor the result is
    loaded whole (:func:`~napari_seglab.batch.stores.predict_into_store_events`),
    except with a family module's ``model`` (Mask R-CNN, Mask2Former), which
    predicts whole planes: then the image is read into memory.
    """
    if not is_lazy(image) or module_family(getattr(model, "family", None)):
        from ..unet import predict_and_split_events

        return (lambda m, im, **kw: predict_and_split_events(m, np.asarray(im), **kw)), {}
    from ..batch.stores import predict_into_store_events
    from ..cache import cache_dir

    return predict_into_store_events, {
        "folder": cache_dir("predictions"),
        "probabilities": probabilities,
    }


def add_prediction_layers(viewer, result, image_layer, model, probabilities: bool) -> str:
    """Add a :class:`~napari_seglab.unet.Prediction` as new layers on ``image_layer``'s grid.

    Labels as ``"<image> U-Net"``, objects as ``"... objects"``, and with
    ``probabilities`` one hidden Image layer per foreground class; each takes
    the image layer's scale, translate, rotation, shear and affine. An
    instance family (Mask R-CNN) adds its objects only, as one instance
    Labels layer ``"<image> <family> objects"``; a panoptic family
    (Mask2Former) its class image as ``"<image> <family>"`` and its objects as
    ``"<image> <family> objects"``. Returns the (first) labels layer's name.
    """
    geometry = source_geometry(image_layer, result.labels.ndim, model.channel_axis)
    own = module_family(model.family)  # Mask2Former: "<image> mask2former" (+ objects)
    name = f"{image_layer.name} {model.family if own else 'U-Net'}"
    if instance_family(model.family):
        name = f"{image_layer.name} {model.family} objects"
        viewer.add_labels(result.instances, name=name, **geometry)
    else:
        viewer.add_labels(result.labels, name=name, **geometry)
    if result.instances is not None and not instance_family(model.family):
        viewer.add_labels(result.instances, name=f"{name} objects", **geometry)
    if probabilities:
        for channel, value in enumerate(model.classes):
            if channel == 0:
                continue  # background probability is 1 - the rest
            viewer.add_image(
                result.probabilities[channel],
                name=f"{name} P(label {value})",
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=False,
                **geometry,
            )
    return name


#: Name of the Shapes layer that outlines the suggested 2D tiles.
OUTLINES = "U-Net suggested tiles"


class SuggestionList(QListWidget):
    """Suggestions of :func:`~napari_seglab.unet.suggest_events`; a click moves the viewer there.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.layer = None
        self.setToolTip("Click to jump to the plane or tile.")
        self.setMaximumHeight(110)
        self.itemClicked.connect(self.jump)

    def show_suggestions(self, suggestions, layer) -> None:
        """List ``suggestions`` (computed on ``layer``'s data), most uncertain first.

        2D tiles are also outlined, numbered by rank, in a Shapes layer
        :data:`OUTLINES` on ``layer``'s grid (replaced by the next suggestions).
        """
        self.clear()
        self.layer = layer
        for suggestion in suggestions:
            item = QListWidgetItem(suggestion.describe())
            item.setData(Qt.ItemDataRole.UserRole, suggestion)
            self.addItem(item)
        if OUTLINES in self.viewer.layers:
            self.viewer.layers.remove(OUTLINES)
        tiles = [s.box for s in suggestions if s.box is not None]
        if tiles:
            # Tile rows r0..r1-1 cover data coordinates r0 - 0.5 .. r1 - 0.5 (pixel centres).
            rectangles = [
                np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float) - 0.5
                for r0, c0, r1, c1 in tiles
            ]
            outlines = self.viewer.add_shapes(
                rectangles,
                shape_type="rectangle",
                name=OUTLINES,
                edge_color="yellow",
                face_color="transparent",
                edge_width=max(1.0, min(layer.data.shape[-2:]) / 200),
                features={"rank": np.arange(1, len(tiles) + 1)},
                text={"string": "{rank}", "color": "yellow", "anchor": "upper_left"},
                **source_geometry(layer, 2),
            )
            outlines.editable = False
            self.viewer.layers.selection.active = layer

    def jump(self, item: QListWidgetItem) -> None:
        """Show the suggestion's plane (3D) or centre the camera on its tile (2D)."""
        suggestion = item.data(Qt.ItemDataRole.UserRole)
        layer = self.layer
        if suggestion is None or layer is None or layer not in self.viewer.layers:
            return
        spatial = 2 if suggestion.box is not None else 3
        first = layer.ndim - spatial  # the layer's spatial axes are its last ones
        data_point = np.zeros(layer.ndim)
        if suggestion.box is None:
            data_point[first + suggestion.axis] = suggestion.plane
            world = layer.data_to_world(data_point)
            world_axis = self.viewer.dims.ndim - layer.ndim + first + suggestion.axis
            self.viewer.dims.set_point(world_axis, world[first + suggestion.axis])
        else:
            data_point[first:] = suggestion.center
            world = layer.data_to_world(data_point)
            self.viewer.camera.center = tuple(world[first:])
