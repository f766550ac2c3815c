"""Subcommands of the ``seglab`` command line, one module per capability.

Each module defines ``register(subparsers)`` which adds its subparser(s) and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and
returning an exit code). Modules import heavy libraries inside ``func``.
"""

#: Modules under ``napari_seglab._commands`` that ``seglab`` loads, in help order.
COMMAND_MODULES = (
    "info",
    "sample",
    "io",
    "sam",
    "sam_refine",
    "sam_everything",
    "unet",
    "crf",
    "evaluate",
    "finetune",
    "batch",
)
