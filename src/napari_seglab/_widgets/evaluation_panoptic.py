"""The panoptic part of the Evaluation dock: object layers, thing and stuff classes.

In panoptic mode the dock's Prediction and Ground truth layers are *class*
layers. Each side then needs its objects, from one of two forms:

* an object (instance) Labels layer chosen in "Prediction objects" /
  "Ground-truth objects";
* none chosen: the class layer itself holds objects whose ``class`` feature
  gives their class (the form the SAM session writes); it is split with
  :func:`napari_seglab.metrics.labels_to_panoptic`.

:func:`panoptic_job` runs that split in the worker thread, then
:func:`napari_seglab.metrics.evaluation_steps` in panoptic mode.
"""

from __future__ import annotations

from typing import Any, Optional

from magicgui.widgets import CheckBox, Container, LineEdit, create_widget
from napari.layers import Labels

from .. import metrics

PANOPTIC = "panoptic"


def parse_classes(text: str, what: str) -> list[int] | None:
    """``"1, 2 3"`` -> ``[1, 2, 3]``; empty text -> None.

    Raises
    ------
    ValueError
        Naming ``what`` and the text when an entry is not an integer.
    """
    parts = text.replace(",", " ").split()
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"{what}: expected class ids separated by commas, e.g. 1,2; got {text!r}"
        ) from None


def panoptic_form(choices) -> Container:
    """The panoptic settings: object layers, things, stuff, per plane.

    ``choices`` is the callable giving the Labels layer choices.
    """

    def layer_box(name: str, label: str, tip: str):
        return create_widget(
            annotation=Optional[Labels],  # noqa: UP045 (magicgui reads the annotation)
            name=name,
            label=label,
            options={"choices": choices, "tooltip": tip},
        )

    form = Container(
        widgets=[
            layer_box(
                "pred_objects",
                "Prediction objects",
                "Panoptic: the prediction's object (instance) layer. Empty: the Prediction "
                "layer holds objects with a 'class' feature.",
            ),
            layer_box(
                "gt_objects",
                "Ground-truth objects",
                "Panoptic: the ground truth's object layer. Empty: the Ground truth layer holds "
                "objects with a 'class' feature.",
            ),
            LineEdit(
                name="things",
                label="Thing classes",
                tooltip="Panoptic: classes whose objects are counted, e.g. 1,2.",
            ),
            LineEdit(
                name="stuff",
                label="Stuff classes",
                tooltip="Panoptic: classes scored as one region per image. Empty: every other "
                "non-zero class.",
            ),
            CheckBox(
                name="per_plane",
                label="Each plane is an image",
                tooltip="Panoptic, 3D: score every plane along axis 0 as its own image.",
            ),
        ],
        labels=True,
    )
    form.things.native.setPlaceholderText("e.g. 1,2")
    form.stuff.native.setPlaceholderText("all other classes")
    return form


def layer_classes(layer: Labels) -> dict[int, int]:
    """``{object id: class}`` of a Labels layer's ``class`` feature (error naming the layer)."""
    try:
        return metrics.classes_from_features(layer.features)
    except ValueError as exc:
        raise ValueError(
            f"layer {layer.name!r}: choose its object layer, or give its objects a 'class' "
            f"feature ({exc})"
        ) from None


def panoptic_inputs(form: Container, pred_layer: Labels, gt_layer: Labels, data) -> dict:
    """Keyword arguments of :func:`panoptic_job` from the form (checked in the GUI thread).

    ``data`` reads a layer's full-resolution array.

    Raises
    ------
    ValueError
        No thing class, bad class text, layers of different shapes or a class
        layer without objects nor a ``class`` feature.
    """
    things = parse_classes(form.things.value, "Thing classes")
    if not things:
        raise ValueError("Thing classes: expected at least one class id, e.g. 1")
    inputs: dict[str, Any] = {
        "things": things,
        "stuff": parse_classes(form.stuff.value, "Stuff classes"),
        "per_plane": bool(form.per_plane.value),
    }
    for side, layer, objects in (
        ("pred", pred_layer, form.pred_objects.value),
        ("gt", gt_layer, form.gt_objects.value),
    ):
        inputs[side] = data(layer)
        if objects is None:
            inputs[f"{side}_objects"] = None
            inputs[f"{side}_classes"] = layer_classes(layer)
        else:
            inputs[f"{side}_objects"] = data(objects)
            inputs[f"{side}_classes"] = None
            metrics.check_label_pair(inputs[side], inputs[f"{side}_objects"])
    metrics.check_label_pair(inputs["pred"], inputs["gt"])
    return inputs


def panoptic_job(
    *,
    pred,
    gt,
    pred_objects=None,
    gt_objects=None,
    pred_classes=None,
    gt_classes=None,
    things,
    stuff=None,
    per_plane: bool = False,
    iou_threshold: float = 0.5,
    cancel=None,
):
    """Split single-layer inputs into class and object images, then score them (a job).

    Yields and returns as :func:`napari_seglab.metrics.evaluation_steps` in
    panoptic mode. A side whose ``*_objects`` is None is an object layer whose
    classes are ``*_classes`` (``{object id: class}``).
    """
    if pred_objects is None:
        pred, pred_objects = metrics.labels_to_panoptic(pred, pred_classes)
    if gt_objects is None:
        gt, gt_objects = metrics.labels_to_panoptic(gt, gt_classes)
    options = {
        "pred_instance": pred_objects,
        "gt_instance": gt_objects,
        "things": things,
        "stuff": stuff,
        "per_plane": per_plane,
    }
    return (
        yield from metrics.evaluation_steps(
            pred,
            gt,
            mode=PANOPTIC,
            iou_threshold=iou_threshold,
            panoptic_options=options,
            cancel=cancel,
        )
    )


def panoptic_summary(result: dict) -> str:
    """One status line: PQ, SQ, RQ overall, and PQ of things and stuff with their classes."""
    summary = result["summary"]
    fmt = metrics.format_value
    things = ", ".join(str(c) for c in result["things"]) or "none"
    stuff = ", ".join(str(c) for c in result["stuff"]) or "none"
    return (
        f"PQ {fmt(result['pq'])}, SQ {fmt(result['sq'])}, RQ {fmt(result['rq'])}; things "
        f"({things}) PQ {fmt(summary['things']['pq'])}; stuff ({stuff}) PQ "
        f"{fmt(summary['stuff']['pq'])}"
    )
