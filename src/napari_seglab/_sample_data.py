"""npe2 sample-data contributions: synthetic images with their ground truth."""

from __future__ import annotations

from .data import SyntheticSample, nuclei_2d, nuclei_3d


def _layers(sample: SyntheticSample) -> list[tuple]:
    meta = {"source": "napari-seglab synthetic", "spacing": sample.spacing}
    return [
        (
            sample.image,
            {"name": sample.name, "scale": sample.spacing, "metadata": meta},
            "image",
        ),
        (
            sample.labels,
            {"name": f"{sample.name} ground truth", "scale": sample.spacing, "metadata": meta},
            "labels",
        ),
    ]


def nuclei_2d_sample() -> list[tuple]:
    """2D nuclei image ``(256, 256)`` and its instance ground truth, as layer data."""
    return _layers(nuclei_2d())


def nuclei_3d_sample() -> list[tuple]:
    """3D anisotropic stack ``(32, 128, 128)`` and its ground truth, as layer data."""
    return _layers(nuclei_3d())
