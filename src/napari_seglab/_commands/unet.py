"""``seglab train``, ``seglab predict`` and ``seglab suggest``: the U-Net from a shell.

Images and labels are read with :func:`napari_seglab.io.read_array` (TIFF,
NumPy, NIfTI and DICOM on napari's ``(Z, Y, X)`` axes, zarr, PNG/JPEG);
outputs are written in the format their suffix names.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``train``, ``predict`` and ``suggest`` subcommands."""
    from ..unet.architectures import ARCHITECTURE_NAMES

    train = subparsers.add_parser(
        "train",
        help="train a MONAI U-Net on an image and its labels",
        description=(
            "Train a segmentation network (MONAI) on IMAGE with LABELS (same spatial shape; "
            "each label value is a class) and save it to -o/--out."
        ),
    )
    train.add_argument("image", type=Path, help="image file (.tif, .npy, .nii.gz)")
    train.add_argument("labels", type=Path, help="labels file with the same spatial shape")
    train.add_argument("-o", "--out", type=Path, required=True, help="model file to write (.pt)")
    train.add_argument("--architecture", choices=ARCHITECTURE_NAMES, default="unet")
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
    train.add_argument("--spacing", type=float, nargs="+", default=None, help="voxel size")
    train.add_argument("--validation-fraction", type=float, default=0.2)
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--rgb", action="store_true", help="the image's last axis is RGB")
    train.add_argument("--channel-axis", type=int, default=None)
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)

    predict = subparsers.add_parser(
        "predict",
        help="segment an image with a trained U-Net",
        description="Predict labels for IMAGE with MODEL (sliding windows, Gaussian blending).",
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
        help="voxel size of IMAGE for the instance split (default: the model's)",
    )
    predict.add_argument("--slicewise", action="store_true", help="2D model on a 3D stack")
    predict.add_argument("--device", default="auto")
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
    suggest.set_defaults(func=_suggest)


def read_array(path: Path):
    """An image or labels array, read with :func:`napari_seglab.io.read_array` (any format)."""
    from ..io import read_array as read_file

    return read_file(path).data


def write_array(path: Path, array) -> None:
    """Write ``array`` as ``.tif``/``.tiff``, ``.npy`` or ``.nii(.gz)``."""
    import numpy as np

    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(path, array)
    elif name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith((".nii", ".nii.gz")):
        from ..io import write_nifti

        write_nifti(path, array)
    else:
        raise ValueError(
            f"Unsupported output type {path.name!r}: expected .tif, .tiff, .npy, .nii or .nii.gz."
        )


def _train(args: argparse.Namespace) -> int:
    from ..unet import train
    from ..unet.data import TooManyClasses

    image = read_array(args.image)
    labels = read_array(args.labels)
    if args.binary:
        labels = (labels > 0).astype("uint8")

    def report(event) -> None:
        dice = "-" if event.score is None else f"{event.score:.3f}"
        print(
            f"epoch {event.epoch}: loss {event.loss:.4f}, val Dice {dice}, {event.elapsed:.1f} s",
            flush=True,
        )

    try:
        model = train(
            image,
            labels,
            spatial_dims=args.spatial_dims,
            architecture=args.architecture,
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
            spacing=args.spacing,
            device=args.device,
            seed=args.seed,
            callback=report,
        )
    except TooManyClasses as exc:
        raise ValueError(f"{exc} Add --binary to train on labels > 0.") from None
    model.save(args.out)
    print(f"wrote {args.out} (classes {list(model.classes)}, patch {list(model.patch_size)})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..unet import SegmentationModel, predict_and_split

    model = SegmentationModel.load(args.model)
    image = read_array(args.image)
    result = predict_and_split(
        model,
        image,
        instances=args.instances,
        spacing=args.spacing,
        overlap=args.overlap,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        slicewise=True if args.slicewise else None,
    )
    labels = result.labels if result.instances is None else result.instances
    write_array(args.out, labels)
    print(f"wrote {args.out} shape {labels.shape} {labels.dtype}")
    if args.probabilities is not None:
        write_array(args.probabilities, result.probabilities)
        print(f"wrote {args.probabilities} shape {result.probabilities.shape} float32")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    from ..unet import SegmentationModel, suggest_slices

    model = SegmentationModel.load(args.model)
    image = read_array(args.image)
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
