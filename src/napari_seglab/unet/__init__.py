"""U-Net / MONAI segmentation: train on layers, predict 2D/3D, suggest what to annotate.

Importing this package is cheap: the names below are loaded on first use
(PEP 562), and only then torch and MONAI are imported.

Main entry points
-----------------
train, train_events
    Fit a network of a model family (``family=``: MONAI networks,
    ``"deeplabv3plus"`` or ``"maskrcnn"``; see :data:`FAMILY_NAMES`) on image/label pairs (sparse
    labels via ``ignore_label``) through the shared
    :func:`napari_seglab.training_loop.training_loop`. The family-neutral name of
    this API is :mod:`napari_seglab.models`.
predict, predict_events
    Sliding-window class probabilities ``(C, *spatial)`` float32.
predict_and_split, predict_and_split_events
    Probabilities, labels and (optionally) objects in one job: what the
    widget and ``seglab predict`` run.
probabilities_to_labels, to_instances
    Post-processing to semantic labels and instance labels.
SegmentationModel
    Network + metadata; ``save(path)`` / ``SegmentationModel.load(path)``.
suggest_slices, suggest_events
    Planes (3D) or tiles (2D) ranked by predictive entropy.
"""

import importlib

#: Public name -> submodule that defines it.
_EXPORTS = {
    "ARCHITECTURES": "architectures",
    "ARCHITECTURE_NAMES": "architectures",
    "FAMILY_NAMES": "families",
    "PredictionCancelled": "inference",
    "PredictionProgress": "inference",
    "predict": "inference",
    "predict_events": "inference",
    "INSTANCE_METHODS": "postprocess",
    "Prediction": "postprocess",
    "predict_and_split": "postprocess",
    "predict_and_split_events": "postprocess",
    "probabilities_to_labels": "postprocess",
    "to_instances": "postprocess",
    "SegmentationModel": "model",
    "EpochEvent": "training",
    "UNetTask": "training",
    "train": "training",
    "train_events": "training",
    "Suggestion": "uncertainty",
    "suggest_events": "uncertainty",
    "suggest_slices": "uncertainty",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_NAMES",
    "FAMILY_NAMES",
    "INSTANCE_METHODS",
    "EpochEvent",
    "Prediction",
    "PredictionCancelled",
    "PredictionProgress",
    "SegmentationModel",
    "Suggestion",
    "UNetTask",
    "predict",
    "predict_and_split",
    "predict_and_split_events",
    "predict_events",
    "probabilities_to_labels",
    "suggest_events",
    "suggest_slices",
    "to_instances",
    "train",
    "train_events",
]
