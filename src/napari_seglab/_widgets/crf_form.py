"""The CRF dock's parameter form (magicgui) and the arrays it hands to the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, SpinBox, create_widget
from napari.layers import Image, Labels, Layer

from .. import crf
from ._layers import layer_spacing, spatial_image

AUTO = "auto"


def _number(name, label, value, low, high, step, tip, decimals=2, auto=False) -> FloatSpinBox:
    """A float box; with ``auto`` its minimum (0) reads "auto"."""
    box = FloatSpinBox(
        name=name, label=label, value=value, min=low, max=high, step=step, tooltip=tip
    )
    box.native.setDecimals(decimals)
    box.value = value
    if auto:
        box.native.setSpecialValueText(AUTO)
    return box


def crf_form(
    image_choices: Callable, input_choices: Callable, output_choices: Callable
) -> Container:
    """The CRF parameter form; layer and output choices come from the callables.

    Widgets: ``image``, ``given`` (the layer to refine), ``mode``, ``confidence``,
    ``iterations``, ``spatial_sigma`` and ``smoothness_sigma`` (0 shows "auto"),
    ``intensity_sigma``, ``bilateral_weight``, ``smoothness_weight``, ``output``.
    """
    defaults = crf.CrfParameters()
    return Container(
        widgets=[
            create_widget(
                annotation=Image,
                name="image",
                label="Image",
                options={
                    "choices": image_choices,
                    "tooltip": "Image whose edges the result should follow.",
                },
            ),
            create_widget(
                annotation=Optional[Layer],  # noqa: UP045 (magicgui reads the annotation)
                name="given",
                label="Refine",
                options={
                    "choices": input_choices,
                    "tooltip": "What to refine: a Labels layer (e.g. from SAM) or a "
                    "probability Image layer (classes first, (C, [Z,] Y, X), or one "
                    "foreground map shaped like the image).",
                },
            ),
            ComboBox(
                name="mode",
                label="Labels mode",
                choices=["instance", "semantic"],
                tooltip="Labels only. instance: refine each object inside its bounding box "
                "(objects never merge, keep their numbers). semantic: one CRF over all "
                "classes jointly.",
            ),
            _number(
                "confidence",
                "Confidence",
                crf.DEFAULT_CONFIDENCE,
                0.51,
                0.99,
                0.05,
                "Labels only: probability that a given label is right. Lower lets the "
                "image move boundaries further.",
            ),
            SpinBox(
                name="iterations",
                label="Iterations",
                value=defaults.iterations,
                min=1,
                max=50,
                tooltip="Mean-field iterations (results change little after 5).",
            ),
            _number(
                "spatial_sigma",
                "Edge kernel width",
                0.0,
                0.0,
                1000.0,
                0.5,
                "Width of the edge-following (bilateral) kernel in the layer's physical "
                "units (scale). auto: 5 x the finest voxel size.",
                auto=True,
            ),
            _number(
                "intensity_sigma",
                "Intensity width",
                defaults.intensity_sigma,
                0.01,
                1.0,
                0.01,
                "How different two intensities may be and still pull towards the same "
                "label, on the image scaled to [0, 1] between its 1st and 99.8th "
                "percentile.",
                decimals=3,
            ),
            _number(
                "bilateral_weight",
                "Edge kernel weight",
                defaults.bilateral_weight,
                0.0,
                200.0,
                1.0,
                "Strength of the edge-following kernel; 0 turns it off.",
                decimals=1,
            ),
            _number(
                "smoothness_sigma",
                "Smoothness width",
                0.0,
                0.0,
                1000.0,
                0.5,
                "Width of the smoothness kernel in physical units. "
                "auto: 1 x the finest voxel size.",
                auto=True,
            ),
            _number(
                "smoothness_weight",
                "Smoothness weight",
                defaults.smoothness_weight,
                0.0,
                200.0,
                1.0,
                "Strength of the smoothness kernel (removes isolated pixels); 0 turns it off.",
                decimals=1,
            ),
            ComboBox(
                name="output",
                label="Output",
                choices=output_choices,
                tooltip="Where 'Apply to all' writes: a new Labels layer, or back into the "
                "input Labels layer as one step that Ctrl+Z undoes.",
            ),
        ]
    )


def crf_inputs(image_layer: Image, given_layer: Layer, plane: int | None):
    """Arrays for the core from the layers: ``(image, given, spacing, is_labels)``.

    ``image`` is ``([Z,] Y, X[, 3])`` (one plane when ``plane`` is given), ``given``
    the labels of the same spatial shape or probabilities ``(C, [Z,] Y, X)``, and
    ``spacing`` the image layer's scale. Raises ``ValueError`` naming both shapes
    when they do not fit.
    """
    data, rgb = spatial_image(image_layer)
    image = np.asarray(data if plane is None else data[plane])
    spatial = image.shape[:-1] if rgb else image.shape
    spacing = layer_spacing(image_layer)
    if plane is not None:
        spacing = spacing[1:]
    is_labels = isinstance(given_layer, Labels)
    given = given_layer.data[0] if given_layer.multiscale else given_layer.data
    if is_labels:
        given = np.asarray(given if plane is None else given[plane])
    else:
        full_spatial = data.shape[:-1] if rgb else data.shape
        if given.shape == full_spatial:
            given = np.asarray(given if plane is None else given[plane])[np.newaxis]
        elif given.shape[1:] == full_spatial:
            given = np.asarray(given if plane is None else given[:, plane])
        else:
            raise ValueError(
                f"Expected probabilities of shape {full_spatial} or (C, *{full_spatial}) "
                f"to match image {image_layer.name!r}, got {given.shape} in layer "
                f"{given_layer.name!r}."
            )
    if is_labels and given.shape != spatial:
        raise ValueError(
            f"Expected labels of shape {spatial} to match image {image_layer.name!r}, "
            f"got {given.shape} in layer {given_layer.name!r}."
        )
    return image, given, spacing, is_labels


def lazy_crf_inputs(image_layer: Image, given_layer: Layer):
    """``(image, probabilities, spacing)`` kept lazy when a layer is backed by dask/zarr.

    Returns None when both layers are in memory (:func:`crf_inputs` applies).
    ``probabilities`` is ``(C, *spatial)`` as the layer holds it, or a
    :class:`~napari_seglab.batch.crf_blocks.ForegroundMap` over a single map.

    Raises
    ------
    ValueError
        For a lazy Labels layer to refine (only probability maps are refined
        block by block), or shapes that do not fit (both named).
    """
    from ..batch.crf_blocks import ForegroundMap
    from ..batch.stores import is_lazy

    data, rgb = spatial_image(image_layer)
    given = given_layer.data[0] if given_layer.multiscale else given_layer.data
    if not (is_lazy(data) or is_lazy(given)):
        return None
    if isinstance(given_layer, Labels):
        raise ValueError(
            f"Layer {given_layer.name!r} or {image_layer.name!r} is backed by dask/zarr and "
            "only probability maps are refined block by block; refine a probability layer "
            "(e.g. the U-Net's 'P(label ...)' layer), or load the layers into memory."
        )
    spatial = tuple(data.shape[:-1] if rgb else data.shape)
    if tuple(given.shape) == spatial:
        given = ForegroundMap(given)
    elif tuple(given.shape[1:]) != spatial:
        raise ValueError(
            f"Expected probabilities of shape {spatial} or (C, *{spatial}) to match image "
            f"{image_layer.name!r}, got {tuple(given.shape)} in layer {given_layer.name!r}."
        )
    return data, given, layer_spacing(image_layer)
