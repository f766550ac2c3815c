"""Trainable segmentation models of several families: one train/predict/save/load API.

This is the family-neutral name of the trainer that started as the U-Net
(:mod:`napari_seglab.unet`, whose documented calls keep working and return
the same objects). Choose the network with ``family=``:

* MONAI networks: ``"unet"`` (default), ``"basicunet"``, ``"segresnet"``,
  ``"swinunetr"``, ``"dynunet"`` (2D or 3D);
* ``"deeplabv3plus"``: DeepLabV3+ from segmentation-models-pytorch (2D, plane
  by plane on stacks; ``encoder=``, default ``"resnet34"``);
* ``"maskrcnn"``: Mask R-CNN from torchvision (instance segmentation: trains
  on instance labels, predicts one id per object; 2D, plane by plane with
  linked ids on stacks; ``encoder=`` the backbone, default ``"resnet18"``;
  see :mod:`napari_seglab.models.maskrcnn`).

Families that are not a dense per-pixel network live in their own module
here and are listed in :data:`napari_seglab.unet.families.FAMILY_MODULES`
(the hook is described in :mod:`napari_seglab.unet.families`).

Importing this package is cheap: the names are loaded on first use (PEP 562).

Main entry points
-----------------
train, train_events
    Fit a network of any family (:func:`napari_seglab.unet.training.train_events`).
predict, predict_events, predict_and_split, predict_and_split_events
    Class probabilities ``(C, *spatial)`` and labels from a trained model,
    whatever its family (instance families: ``predict_and_split(...).instances``).
load_model
    :meth:`SegmentationModel.load`: a model file of any family.
SegmentationModel
    Network + metadata (``family``, ``network_kwargs``, classes, patch, intensity).
FAMILY_NAMES
    The accepted ``family=`` names.
"""

import importlib

#: Public name -> (module, attribute).
_EXPORTS = {
    "FAMILY_NAMES": ("napari_seglab.unet.families", "FAMILY_NAMES"),
    "DEFAULT_ENCODER": ("napari_seglab.unet.families", "DEFAULT_ENCODER"),
    "encoder_names": ("napari_seglab.unet.families", "encoder_names"),
    "SegmentationModel": ("napari_seglab.unet.model", "SegmentationModel"),
    "EpochEvent": ("napari_seglab.unet.training", "EpochEvent"),
    "train": ("napari_seglab.unet.training", "train"),
    "train_events": ("napari_seglab.unet.training", "train_events"),
    "predict": ("napari_seglab.unet.inference", "predict"),
    "predict_events": ("napari_seglab.unet.inference", "predict_events"),
    "PredictionCancelled": ("napari_seglab.unet.inference", "PredictionCancelled"),
    "Prediction": ("napari_seglab.unet.postprocess", "Prediction"),
    "predict_and_split": ("napari_seglab.unet.postprocess", "predict_and_split"),
    "predict_and_split_events": ("napari_seglab.unet.postprocess", "predict_and_split_events"),
}


def load_model(path, *, device: str = "cpu"):
    """Read a model file of any family (``torch.load(weights_only=True)``).

    See :meth:`napari_seglab.unet.model.SegmentationModel.load` for the errors.
    """
    from ..unet.model import SegmentationModel

    return SegmentationModel.load(path, device=device)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_ENCODER",
    "FAMILY_NAMES",
    "EpochEvent",
    "Prediction",
    "PredictionCancelled",
    "SegmentationModel",
    "encoder_names",
    "load_model",
    "predict",
    "predict_and_split",
    "predict_and_split_events",
    "predict_events",
    "train",
    "train_events",
]
