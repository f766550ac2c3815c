"""``seglab finetune``: fine-tune SAM's mask decoder on annotated images, save it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._shared import INPUT_FORMATS, MODEL_SUFFIXES, add_damaged, add_overwrite, check_outputs


def register(subparsers) -> None:
    """Add the ``finetune`` subcommand."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune SAM's mask decoder on your annotated images (encoder frozen)",
        description=(
            "MedSAM-style decoder fine-tuning: each annotated plane is embedded once with the "
            "frozen image encoder, then the mask decoder is trained on box and point prompts "
            "drawn from the labels, with validation Dice on held-out objects and early "
            "stopping. Writes only the decoder (plus its base model's hash and the recipe); "
            "use it with the SAM prompting widget or load_model(..., decoder_checkpoint=...). "
            f"Files: {INPUT_FORMATS}. Guide: docs/finetune.md."
        ),
    )
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        required=True,
        metavar="IMAGE",
        help="2D images or 3D stacks",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        required=True,
        metavar="LABELS",
        help="one label image per image (0 = background; instance or semantic)",
    )
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="decoder file to write (.pt, .pth)"
    )
    parser.add_argument(
        "--model",
        default="vit_b",
        help="registered checkpoint (vit_b, vit_l, vit_h, medsam) or, with "
        "--checkpoint, an architecture (default vit_b)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="local full-model .pth (default: the registered file)",
    )
    parser.add_argument(
        "--decoder", type=Path, default=None, help="start from this fine-tuned decoder"
    )
    parser.add_argument("--prompt", choices=["mixed", "box", "points"], default="mixed")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop training after this many seconds (embedding excluded)",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (1e-4)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--patience", type=int, default=5, help="early-stopping epochs (5)")
    parser.add_argument("--correction-rounds", type=int, default=0)
    parser.add_argument("--train-prompt-encoder", action="store_true")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offline", action="store_true", help="never download weights")
    add_damaged(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def read_array(path: Path, damaged: str = "error") -> Any:
    """An image or label file as an array, read with :func:`napari_seglab.io.read_array`.

    ``.npy`` and uncompressed TIFF are memory-mapped and zarr stays on disk.
    ``damaged`` is ``--damaged`` (DICOM inputs with unreadable files).
    """
    from napari_seglab.io import read_array as read_file

    return read_file(path, lazy=True, damaged=damaged).data


def run(args: argparse.Namespace) -> int:
    """Fine-tune, print the Dice before/after, write the decoder; exit code 0."""
    from napari_seglab.jobs import ProgressEvent
    from napari_seglab.sam import (
        PromptRecipe,
        finetune_decoder,
        load_decoder,
        load_model,
        save_decoder,
    )

    if len(args.images) != len(args.labels):
        raise ValueError(
            f"expected one label file per image, got {len(args.images)} images and "
            f"{len(args.labels)} label files"
        )
    inputs = [("image", p) for p in args.images] + [("labels", p) for p in args.labels]
    inputs += [("base checkpoint", args.checkpoint), ("decoder", args.decoder)]
    check_outputs([("-o", args.out, MODEL_SUFFIXES)], inputs, overwrite=args.overwrite)
    images = [read_array(p, args.damaged) for p in args.images]
    labels = [read_array(p, args.damaged) for p in args.labels]
    model = load_model(
        args.model, checkpoint=args.checkpoint, device=args.device, download=not args.offline
    )
    if args.decoder is not None:
        load_decoder(model, args.decoder)
    recipe = PromptRecipe(kind=args.prompt, correction_rounds=args.correction_rounds)

    def show(event: ProgressEvent) -> None:
        if event.stage == "embedding":
            print(f"\rembedding planes {event.done}/{event.total}", end="", flush=True)
            if event.done == event.total:
                print()
        elif event.stage == "epoch":
            loss = "-" if event.loss is None else f"{event.loss:.4f}"
            dice = ", ".join(f"{k} {v:.3f}" for k, v in event.validation.items())
            print(
                f"epoch {event.epoch} step {event.step}: loss {loss}; validation Dice {dice}"
                f" ({event.elapsed:.1f} s)",
                flush=True,
            )

    result = finetune_decoder(
        model,
        images,
        labels,
        steps=args.steps,
        epochs=args.epochs,
        time_budget_s=args.time_budget,
        prompt=recipe,
        learning_rate=args.lr,
        validation_fraction=args.validation_fraction,
        train_prompt_encoder=args.train_prompt_encoder,
        device=args.device,
        seed=args.seed,
        callback=show,
        batch_size=args.batch_size,
        patience=args.patience,
    )
    written = save_decoder(result.model, args.out, result=result)
    before = ", ".join(f"{k} {v:.3f}" for k, v in result.before.items()) or "n/a"
    after = ", ".join(f"{k} {v:.3f}" for k, v in result.after.items()) or "n/a"
    print(f"validation Dice before: {before}")
    print(f"validation Dice after:  {after} (epoch {result.best_epoch} of {result.epochs})")
    print(f"wrote {written}")
    return 0
