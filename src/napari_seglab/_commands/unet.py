"""``seglab train``, ``seglab predict`` and ``seglab suggest``: the U-Net from a shell.

Images and labels are read with :func:`napari_seglab.io.read_array` (TIFF,
NumPy, NIfTI and DICOM on napari's ``(Z, Y, X)`` axes, zarr, PNG/JPEG);
outputs are written in the format their suffix names. The voxel size is
``--spacing`` or else the one the image file stores (NIfTI, DICOM, TIFF written
by this package); each command says which it used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train``, ``predict`` and ``suggest`` subcommands."""
    from ..unet.families import FAMILY_NAMES
    from ._shared import add_damaged, add_overwrite

    train = subparsers.add_parser(
        "train",
        help="train a segmentation network (U-Net, DeepLabV3+, Mask R-CNN, ...) on an image "
        "and its labels",
        description=(
            "Train a segmentation network (a MONAI network, DeepLabV3+ or Mask R-CNN) on IMAGE "
            "with LABELS (same spatial shape; each label value is a class, or with --family "
            "maskrcnn one id per object) and save it to -o/--out."
        ),
    )
    train.add_argument("image", type=Path, help="image file (.tif, .npy, .nii.gz)")
    train.add_argument("labels", type=Path, help="labels file with the same spatial shape")
    train.add_argument(
        "-o", "--out", type=Path, required=True, help="model file to write (.pt, .pth)"
    )
    train.add_argument(
        "--family",
        choices=FAMILY_NAMES,
        default=None,
        help="model family (default unet; deeplabv3plus and maskrcnn are 2D, plane by plane on "
        "stacks; maskrcnn trains on instance labels and predicts instance labels)",
    )
    train.add_argument(
        "--architecture", choices=FAMILY_NAMES, default=None, help="same as --family"
    )
    train.add_argument(
        "--encoder",
        default=None,
        help="DeepLabV3+ encoder (default resnet34; e.g. resnet18) or Mask R-CNN backbone "
        "(resnet18 default, resnet34, resnet50, small)",
    )
    train.add_argument("--patch-size", type=int, nargs="+", default=None, help="e.g. 16 64 64")
    train.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    train.add_argument("--time-budget", type=float, default=None, help="maximum seconds")
    train.add_argument("--steps-per-epoch", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    train.add_argument(
        "--ignore-label", type=int, default=None, help="label value of unannotated pixels"
    )
    train.add_argument(
        "--binary", action="store_true", help="train foreground (labels > 0) vs background"
    )
    train.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None)
    train.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        help="voxel size per spatial axis (default: the image file's header)",
    )
    train.add_argument("--validation-fraction", type=float, default=0.2)
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--rgb", action="store_true", help="the image's last axis is RGB")
    train.add_argument("--channel-axis", type=int, default=None)
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)
    add_damaged(train)
    add_overwrite(train)
    train.set_defaults(func=_train)

    predict = subparsers.add_parser(
        "predict",
        help="segment an image with a trained model (any family)",
        description=(
            "Predict labels for IMAGE with MODEL (sliding windows, Gaussian blending; a Mask "
            "R-CNN model writes instance labels, one id per object, linked across planes)."
        ),
    )
    predict.add_argument("model", type=Path, help="model file written by 'seglab train'")
    predict.add_argument("image", type=Path, help="image file (.tif, .npy, .nii.gz)")
    predict.add_argument("-o", "--out", type=Path, required=True, help="labels file to write")
    predict.add_argument("--probabilities", type=Path, default=None, help="also write (C, ...)")
    predict.add_argument(
        "--instances",
        choices=("none", "connected", "watershed"),
        default="none",
        help="split the labels into objects",
    )
    predict.add_argument("--overlap", type=float, default=0.5)
    predict.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    predict.add_argument("--batch-size", type=int, default=None)
    predict.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        help=(
            "voxel size of IMAGE for the instance split and the output files "
            "(default: the image file's header, else the model's)"
        ),
    )
    predict.add_argument("--slicewise", action="store_true", help="2D model on a 3D stack")
    predict.add_argument("--device", default="auto")
    add_damaged(predict)
    add_overwrite(predict)
    predict.set_defaults(func=_predict)

    suggest = subparsers.add_parser(
        "suggest",
        help="list the planes (3D) or tiles (2D) to annotate next",
        description="Rank planes or tiles of IMAGE by the predictive entropy of MODEL.",
    )
    suggest.add_argument("model", type=Path)
    suggest.add_argument("image", type=Path)
    suggest.add_argument("-k", type=int, default=5, help="number of suggestions")
    suggest.add_argument("--mc-dropout", type=int, default=0, help="Monte-Carlo dropout passes")
    suggest.add_argument("--slicewise", action="store_true", help="2D model on a 3D stack")
    suggest.add_argument("--device", default="auto")
    add_damaged(suggest)
    suggest.set_defaults(func=_suggest)


def _spacing(given, image_file, n_spatial: int, channel_axis: int | None = None):
    """The spacing to use for an image and where it comes from.

    Parameters
    ----------
    given : list of float or None
        ``--spacing``; wins when given.
    image_file : ArrayFile
        The image as read; its ``spacing`` (from the file's header) is used when
        it has one value per spatial axis (the channel axis's value, if any, dropped).
    n_spatial : int
        Number of spatial axes of the image.
    channel_axis : int, optional
        Axis of the image that holds channels (RGB: -1).

    Returns
    -------
    spacing : tuple of float or None
    source : str
        Where the spacing comes from, for the command's output.
    """
    if given is not None:
        return tuple(float(s) for s in given), "--spacing"
    stored = image_file.spacing
    name = image_file.path.name
    if stored is None:
        return None, f"not stored in {name}"
    stored = tuple(float(s) for s in stored)
    if channel_axis is not None and len(stored) == len(image_file.shape) == n_spatial + 1:
        axis = channel_axis % len(stored)
        stored = stored[:axis] + stored[axis + 1 :]
    if len(stored) != n_spatial:
        return None, f"{name} stores {_numbers(stored)}, not one value per spatial axis; ignored"
    return stored, f"header of {name}"


def _numbers(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_array
    from ..unet import train
    from ..unet.data import TooManyClasses
    from ._shared import MODEL_SUFFIXES, check_outputs

    check_outputs(
        [("-o", args.out, MODEL_SUFFIXES)],
        [("image", args.image), ("labels", args.labels)],
        overwrite=args.overwrite,
    )
    image_file = read_array(args.image, what="image file", damaged=args.damaged)
    labels_file = read_array(args.labels, what="labels file", damaged=args.damaged)
    image, labels = image_file.data, labels_file.data
    channel_axis = args.channel_axis if args.channel_axis is not None else -1 if args.rgb else None
    n_spatial = image.ndim - (0 if channel_axis is None else 1)
    spacing, source = _spacing(args.spacing, image_file, n_spatial, channel_axis)
    print(f"spacing: {_spacing_text(spacing)} ({source})", flush=True)
    if spacing is not None and labels_file.spacing is not None:
        label_spacing = tuple(float(s) for s in labels_file.spacing)[-len(spacing) :]
        if not np.allclose(label_spacing, spacing):
            print(
                f"seglab train: warning: {args.labels.name} stores spacing "
                f"{_numbers(label_spacing)}; using {_numbers(spacing)} ({source})",
                file=sys.stderr,
            )
    if args.binary and (args.family or args.architecture) == "maskrcnn":
        raise ValueError(
            "--binary would merge every object into one: maskrcnn needs instance labels."
        )
    if args.binary:
        labels = (labels > 0).astype("uint8")

    name = "F1" if (args.family or args.architecture) == "maskrcnn" else "Dice"

    def report(event) -> None:
        score = "-" if event.score is None else f"{event.score:.3f}"
        print(
            f"epoch {event.epoch}: loss {event.loss:.4f}, val {name} {score}, "
            f"{event.elapsed:.1f} s",
            flush=True,
        )

    try:
        model = train(
            image,
            labels,
            spatial_dims=args.spatial_dims,
            family=args.family,
            architecture=args.architecture,
            encoder=args.encoder,
            patch_size=args.patch_size,
            max_epochs=args.epochs,
            time_budget_s=args.time_budget,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            ignore_label=args.ignore_label,
            validation_fraction=args.validation_fraction,
            augment=not args.no_augment,
            rgb=True if args.rgb else None,
            channel_axis=args.channel_axis,
            spacing=spacing,
            device=args.device,
            seed=args.seed,
            callback=report,
        )
    except TooManyClasses as exc:
        raise ValueError(f"{exc} Add --binary to train on labels > 0.") from None
    written = model.save(args.out)
    print(f"wrote {written} (classes {list(model.classes)}, patch {list(model.patch_size)})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..io import WRITE_SUFFIXES, read_array, write_array
    from ..unet import SegmentationModel, predict_and_split
    from ._shared import check_outputs

    check_outputs(
        [
            ("-o", args.out, WRITE_SUFFIXES),
            ("--probabilities", args.probabilities, WRITE_SUFFIXES),
        ],
        [("model", args.model), ("image", args.image)],
        overwrite=args.overwrite,
    )
    model = SegmentationModel.load(args.model)
    image_file = read_array(args.image, what="image file", damaged=args.damaged)
    image = image_file.data
    n_spatial = image.ndim - (1 if model.rgb or model.channel_axis is not None else 0)
    channel_axis = -1 if model.rgb else model.channel_axis
    spacing, source = _spacing(args.spacing, image_file, n_spatial, channel_axis)
    result = predict_and_split(
        model,
        image,
        instances=args.instances,
        spacing=spacing,
        overlap=args.overlap,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        slicewise=True if args.slicewise else None,
    )
    if spacing is None and result.spacing is not None:
        source += "; the instance split used the model's training spacing"
        print(f"spacing: {_spacing_text(result.spacing)} ({source})")
    else:
        print(f"spacing: {_spacing_text(spacing)} ({source})")
    labels = result.labels if result.instances is None else result.instances
    written = write_array(args.out, labels, spacing=spacing)
    print(f"wrote {written} shape {labels.shape} {labels.dtype}")
    if args.probabilities is not None:
        channel_spacing = None if spacing is None else (1.0, *spacing)
        written = write_array(args.probabilities, result.probabilities, spacing=channel_spacing)
        print(f"wrote {written} shape {result.probabilities.shape} float32")
    return 0


def _spacing_text(spacing) -> str:
    return "unit voxels" if spacing is None else _numbers(spacing)


def _suggest(args: argparse.Namespace) -> int:
    from ..io import read_array
    from ..unet import SegmentationModel, suggest_slices

    model = SegmentationModel.load(args.model)
    image = read_array(args.image, what="image file", damaged=args.damaged).data
    suggestions = suggest_slices(
        model,
        image,
        k=args.k,
        mc_dropout=args.mc_dropout,
        device=args.device,
        slicewise=True if args.slicewise else None,
    )
    for rank, suggestion in enumerate(suggestions, start=1):
        print(f"{rank}. {suggestion.describe()}")
    return 0
