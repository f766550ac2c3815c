"""What ``seglab batch predict`` can do with a model of an instance or panoptic family.

Families with their own module (:data:`napari_seglab.unet.families.FAMILY_MODULES`:
``"maskrcnn"`` of kind ``"instance"``, ``"mask2former"`` of kind
``"panoptic"``) predict their objects themselves, each input whole (a 3D
stack plane by plane, ids linked across planes). The batch pipeline then
writes, per input ``NAME``:

* ``NAME_instances.EXT``: the objects, ids from 1 (always, as ``--instances``
  writes it for per-pixel models);
* ``NAME_labels.EXT``: the class of every pixel (Mask R-CNN: the object class
  where an object is, 0 elsewhere; Mask2Former: the panoptic class image)
  when ``labels`` is among the outputs;
* ``NAME_probabilities.EXT``: the family's probabilities (Mask R-CNN:
  background and the highest object-mask probability; Mask2Former: the
  semantic class probabilities) on request.

Block-by-block prediction (``memory_budget``), the dense CRF, a split of the
labels into objects (``instances`` other than ``"none"``) and flip TTA do not
apply to these families and are refused before any work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_family_settings", "family_kind", "writes_instances"]


def family_kind(model: Any) -> str | None:
    """``"instance"``, ``"panoptic"`` or ``"semantic"`` for a family module's model, else None.

    None means a dense per-pixel family (MONAI networks, DeepLabV3+), which
    every batch option supports.
    """
    from ..unet.families import family_module

    module = family_module(getattr(model, "architecture", "unet"))
    return None if module is None else str(getattr(module, "KIND", "semantic"))


def check_family_settings(
    family: str,
    kind: str | None,
    *,
    crf: bool,
    instances: str,
    memory_budget: int | None,
    tta: bool,
) -> None:
    """Refuse the batch settings a family module's model cannot honour.

    Parameters
    ----------
    family : str
        The model's family name (for the message).
    kind : {"instance", "panoptic", "semantic"} or None
        From :func:`family_kind`; None (a dense family) accepts everything.
    crf, instances, memory_budget, tta :
        The :class:`~.predict.PredictPipeline` settings.

    Raises
    ------
    ValueError
        Naming the family, the setting received and what to do instead.
    """
    if kind is None:
        return
    refused = []
    if memory_budget is not None:
        refused.append(
            "--memory-budget (block-by-block prediction runs sliding windows of a per-pixel "
            "network; this family predicts every input whole, a stack plane by plane): drop "
            "--memory-budget"
        )
    if crf:
        refused.append(
            "--crf (the dense CRF refines per-pixel class probabilities; this family's "
            "labels come from its own object masks): drop --crf"
        )
    if instances != "none":
        refused.append(
            f"--instances {instances} (this family's prediction is not split afterwards; an "
            "instance or panoptic family writes its own objects as NAME_instances without the "
            "option): drop --instances"
        )
    if tta:
        refused.append("--tta (flip test-time augmentation is not available): drop --tta")
    if refused:
        raise ValueError(
            f"The model is of the {family!r} family ({kind} segmentation), which seglab batch "
            "predict cannot run with " + "; ".join(refused) + "."
        )


def writes_instances(kind: str | None) -> bool:
    """Whether a model of ``kind`` always gives objects (``NAME_instances``)."""
    return kind in ("instance", "panoptic")
