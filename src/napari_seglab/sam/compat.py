"""The segment-anything release this package was verified against.

:func:`~.model.build_sam` builds SAM from ``segment_anything.modeling``
classes by keyword, and the fast decoder (:mod:`.decoder`) reads the mask
decoder's submodules directly (``transformer.layers[i].norm4``,
``cross_attn_image_to_token.q_proj``, ``output_upscaling[0]`` ...). Both were
written and checked (``tests/core/test_sam_decoder.py`` compares with
``MaskDecoder.forward``) against :data:`VERIFIED_VERSION`. Another release may
rename or reorder those parts: :func:`check_segment_anything` warns once per
process when the installed version differs, and raises an error that says
how to install it when it is missing.
"""

from __future__ import annotations

import warnings

__all__ = ["VERIFIED_VERSION", "SegmentAnythingVersionWarning", "check_segment_anything"]

#: The ``segment-anything`` distribution version the model builder and the
#: fast decoder were verified against (also the bound in ``pyproject.toml``).
VERIFIED_VERSION = "1.0"

_checked: dict[str, str] = {}


class SegmentAnythingVersionWarning(UserWarning):
    """The installed segment-anything is not the release the fast decoder was verified on."""


def installed_version() -> str | None:
    """Version of the installed ``segment-anything`` distribution, or None."""
    from importlib import metadata

    for name in ("segment-anything", "segment_anything"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_segment_anything() -> str:
    """Make sure ``segment_anything`` is importable; warn once if its version differs.

    Returns
    -------
    str
        The installed version (``"unknown"`` when the package carries no metadata).

    Raises
    ------
    ImportError
        ``segment_anything`` is not installed (the message says how to install it).

    Warns
    -----
    SegmentAnythingVersionWarning
        The installed version is not :data:`VERIFIED_VERSION`: the model may
        not build, and the fast decoder may differ from ``MaskDecoder``; use
        ``PromptSegmenter(..., fast_decoder=False)`` or install the verified release.
    """
    if "version" in _checked:
        return _checked["version"]
    try:
        import segment_anything  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "SAM needs the segment-anything package: "
            f"pip install 'segment-anything=={VERIFIED_VERSION}'."
        ) from exc
    version = installed_version() or "unknown"
    if version != VERIFIED_VERSION:
        warnings.warn(
            f"segment-anything {version} is installed; napari-seglab's SAM model builder and "
            f"fast mask decoder were verified against {VERIFIED_VERSION}. If masks look wrong "
            "or the model fails to build, pass fast_decoder=False to PromptSegmenter or "
            f"install segment-anything=={VERIFIED_VERSION}.",
            SegmentAnythingVersionWarning,
            stacklevel=2,
        )
    _checked["version"] = version
    return version
