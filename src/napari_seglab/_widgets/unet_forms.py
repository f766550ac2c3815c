"""The magicgui forms of the U-Net dock widget.

Each form is a magicgui :class:`~magicgui.widgets.Container` that maps its
controls to arguments of a core function. Layer choices follow the viewer:
the widget's ``reset_choices`` (called by napari when layers change)
refreshes them.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox
from napari.layers import Image, Labels

from ..unet.families import FAMILY_NAMES
from ..unet.postprocess import INSTANCE_METHODS
from ._controls import device_choices
from ._layers import spatial_image

INT32 = 2**31 - 1


def layer_choices(viewer, kind):
    """A magicgui ``choices`` callable: the ``kind`` layers of ``viewer``, as ``(name, layer)``."""

    def choices(widget=None) -> list:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


class DataForm(Container):
    """Which layers to train on and how to read the labels (sparse, instance).

    Widgets: ``image``, ``labels_layer`` (layers of ``viewer``), ``use_ignore``,
    ``ignore_value``, ``binary``.
    """

    def __init__(self, viewer) -> None:
        image = ComboBox(
            name="image",
            label="Image",
            choices=layer_choices(viewer, Image),
            tooltip="Image layer to train on and to predict.",
        )
        labels = ComboBox(
            name="labels_layer",  # not "labels" nor "annotation": Container attributes
            label="Labels",
            choices=layer_choices(viewer, Labels),
            tooltip="Labels layer: each value is a class (0 = background).",
        )
        use_ignore = CheckBox(
            name="use_ignore",
            text="Ignore value",
            tooltip="Sparse annotation: pixels with this value are not annotated and are skipped "
            "by the loss. With ignore value 0, paint background as 1 and objects as 2, 3...",
        )
        ignore_value = SpinBox(
            name="ignore_value",
            label="",
            min=-INT32,
            max=INT32,
            enabled=False,
            tooltip="Label value of unannotated pixels.",
        )
        use_ignore.changed.connect(lambda on: setattr(ignore_value, "enabled", on))
        ignore_row = Container(
            layout="horizontal", widgets=[use_ignore, ignore_value], labels=False
        )
        ignore_row.margins = (0, 0, 0, 0)
        binary = CheckBox(
            name="binary",
            text="Foreground vs background (labels > 0)",
            tooltip="Treat every non-zero label as one class (for instance labels).",
        )
        super().__init__(widgets=[image, labels, ignore_row, binary])
        self.margins = (0, 0, 0, 0)
        self.use_ignore, self.ignore_value = use_ignore, ignore_value

    def image_layer(self):
        """The chosen Image layer; ``ValueError`` when there is none."""
        return _chosen(self.image, "Image")

    def ignore_label(self) -> int | None:
        """Label value of unannotated pixels, or None."""
        return self.ignore_value.value if self.use_ignore.value else None

    def training_data(self, patch_size=None):
        """``(image_layer, image, rgb, labels)``; labels are ``labels > 0`` when binary.

        Layers backed by dask or zarr with an ignore label are read only in the
        box of the annotated voxels grown by half a patch (``patch_size``, else
        32 voxels per axis): training never samples outside it.
        """
        from ..batch.stores import is_lazy

        image_layer = self.image_layer()
        labels_layer = _chosen(self.labels_layer, "Labels")
        data, rgb = spatial_image(image_layer)
        labels = labels_layer.data[0] if labels_layer.multiscale else labels_layer.data
        ignore = self.ignore_label()
        if ignore is not None and (is_lazy(data) or is_lazy(labels)):
            from ..unet.annotated import annotated_box

            halves = [32] * labels.ndim if not patch_size else [int(p) // 2 for p in patch_size]
            box = annotated_box(labels, ignore, ([0] * labels.ndim + halves)[-labels.ndim :])
            if tuple(data.shape[: labels.ndim]) == tuple(labels.shape):
                data = data[box]
            labels = labels[box]
        labels = np.asarray(labels)
        if self.binary.value and ignore is None:
            labels = (labels > 0).astype(np.uint8)
        elif self.binary.value:  # unannotated voxels stay unannotated
            labels = np.where(labels == ignore, labels, labels > 0).astype(labels.dtype)
        return image_layer, np.asarray(data), rgb, labels


def _chosen(combo: ComboBox, kind: str):
    layer = combo.value
    if layer is None:
        raise ValueError(f"Expected an {kind} layer; add one to the viewer first.")
    return layer


class TrainingForm(Container):
    """Training settings the user sets every time: network, limits, device."""

    def __init__(self) -> None:
        super().__init__(
            widgets=[
                ComboBox(
                    name="architecture",
                    label="Family",
                    choices=FAMILY_NAMES,
                    tooltip=(
                        "Model family: MONAI networks (small defaults for CPUs), "
                        "deeplabv3plus (2D, ResNet-34 encoder) or maskrcnn (instance "
                        "segmentation: Labels with one id per object, every object of a "
                        "trained plane labelled; predicts an instance Labels layer). "
                        "mask2former (panoptic: a class Labels layer, objects of the thing "
                        "classes apart; needs the mask2former extra). "
                        "deeplabv3plus, maskrcnn and mask2former start from random weights: "
                        "trained from scratch they need many annotations and a GPU."
                    ),
                ),
                LineEdit(
                    name="things",
                    label="Thing classes",
                    value="",
                    visible=False,
                    tooltip=(
                        "Panoptic families: label values of the countable classes, e.g. '1 3'; "
                        "each connected region of such a class in the labels is one object. "
                        "Empty: every class is stuff (semantic output only)."
                    ),
                ),
                SpinBox(
                    name="epochs",
                    label="Epochs",
                    value=30,
                    max=100_000,
                    tooltip="Maximum epochs (0: only the time budget).",
                ),
                SpinBox(
                    name="time_budget",
                    label="Time budget (s)",
                    value=0,
                    max=10**7,
                    tooltip="Maximum seconds (0: no limit).",
                ),
                ComboBox(
                    name="device",
                    label="Device",
                    choices=device_choices(),
                    tooltip="Where the network runs; auto: CUDA > MPS > CPU.",
                ),
            ]
        )
        self.margins = (0, 0, 0, 0)
        self.architecture.changed.connect(self._family_changed)

    def _family_changed(self, family: str) -> None:
        self.things.visible = panoptic_family(family)


def panoptic_family(family: str | None) -> bool:
    """Whether ``family`` is a family module of kind ``"panoptic"`` (Mask2Former)."""
    from ..unet.families import family_module

    try:
        module = None if family is None else family_module(family)
    except (ValueError, ImportError):
        return False
    return getattr(module, "KIND", "") == "panoptic"


def thing_classes(text: str) -> list[int]:
    """``"1 3"`` or ``"1, 3"`` as ``[1, 3]``; empty text gives ``[]``.

    Raises
    ------
    ValueError
        For text that is not non-negative integers.
    """
    parts = text.replace(",", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = [-1]
    if any(v < 0 for v in values):
        raise ValueError(f"Expected thing classes as label values like '1 3', got {text!r}.")
    return list(dict.fromkeys(values))


class AdvancedTrainingForm(Container):
    """Training settings with good defaults: window, batch, learning rate, augmentation."""

    def __init__(self) -> None:
        super().__init__(
            widgets=[
                LineEdit(
                    name="patch_size",
                    label="Patch size",
                    value="",
                    tooltip="Window size, e.g. '128 128' or '16 64 64'; empty = auto.",
                ),
                SpinBox(
                    name="batch_size",
                    label="Batch size",
                    value=0,
                    max=4096,
                    tooltip="Patches per step (0: auto).",
                ),
                FloatSpinBox(
                    name="learning_rate",
                    label="Learning rate",
                    value=1e-3,
                    min=1e-6,
                    max=1.0,
                    step=1e-4,
                    tooltip="AdamW learning rate.",
                ),
                CheckBox(
                    name="augment",
                    text="Augmentation",
                    value=True,
                    tooltip="Flips, rotations, affine/elastic deformation, intensity, noise.",
                ),
                CheckBox(
                    name="continue_training",
                    text="Continue from current model",
                    tooltip="Start from the current model's weights (retrain).",
                ),
            ]
        )
        self.margins = (0, 0, 0, 0)
        self.learning_rate.native.setDecimals(6)
        self.patch_size.native.setPlaceholderText("auto")


def training_settings(basic: TrainingForm, advanced: AdvancedTrainingForm) -> dict:
    """Keyword arguments for :func:`~napari_seglab.unet.train_events` from the two forms.

    Raises
    ------
    ValueError
        For a patch size that is not integers, or neither epochs nor a time budget.
    """
    text = advanced.patch_size.value.replace(",", " ").split()
    try:
        patch = tuple(int(t) for t in text) or None
    except ValueError:
        raise ValueError(
            "Expected the patch size as integers like '128 128', "
            f"got {advanced.patch_size.value!r}."
        ) from None
    epochs = basic.epochs.value or None
    budget = float(basic.time_budget.value) or None
    if epochs is None and budget is None:
        raise ValueError("Expected a number of epochs or a time budget; both are 0.")
    family = basic.architecture.value
    things = thing_classes(basic.things.value) if panoptic_family(family) else []
    extra = {"network_kwargs": {"things": things}} if things else {}
    return {
        **extra,
        "architecture": family,
        "patch_size": patch,
        "max_epochs": epochs,
        "time_budget_s": budget,
        "batch_size": advanced.batch_size.value or None,
        "learning_rate": advanced.learning_rate.value,
        "augment": advanced.augment.value,
        "device": basic.device.value,
    }


class PredictionForm(Container):
    """Prediction settings: window overlap, instance split, flip TTA, probability layers."""

    def __init__(self) -> None:
        super().__init__(
            widgets=[
                FloatSpinBox(
                    name="overlap",
                    label="Overlap",
                    value=0.5,
                    min=0.0,
                    max=0.95,
                    step=0.05,
                    tooltip="Window overlap (Gaussian blending).",
                ),
                ComboBox(
                    name="instances",
                    label="Instances",
                    choices=INSTANCE_METHODS,
                    tooltip="Split the prediction into objects (one label per object).",
                ),
                CheckBox(
                    name="tta",
                    text="Flip TTA",
                    tooltip="Average predictions over flips (slower, smoother).",
                ),
                CheckBox(
                    name="probability_layer",
                    text="Probability layer",
                    tooltip="Also add the class probabilities as Image layers.",
                ),
            ]
        )
        self.margins = (0, 0, 0, 0)


class SuggestForm(Container):
    """How many planes / tiles to suggest, and Monte-Carlo dropout passes."""

    def __init__(self) -> None:
        super().__init__(
            widgets=[
                SpinBox(
                    name="k",
                    label="How many",
                    value=5,
                    min=1,
                    max=1000,
                    tooltip="Number of planes / tiles to suggest.",
                ),
                SpinBox(
                    name="mc_passes",
                    label="MC dropout",
                    value=0,
                    max=100,
                    tooltip="Monte-Carlo dropout passes (0: off).",
                ),
            ]
        )
        self.margins = (0, 0, 0, 0)
