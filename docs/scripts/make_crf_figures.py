"""Before/after pictures for ``docs/crf.md``, made with the project's own code.

Writes ``docs/images/crf_2d_probabilities.png``, ``crf_2d_labels.png`` and
``crf_3d.png``. Inputs are the synthetic samples from :mod:`napari_seglab.data`,
degraded with :func:`napari_seglab.data.degrade_probabilities` and
:func:`napari_seglab.data.blobby_labels` (the recipe in ``docs/crf.md``), and
refined with the default parameters.

Run: ``python docs/scripts/make_crf_figures.py`` (a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from napari_seglab import crf, data, metrics
from napari_seglab.imaging import normalize_percentile

OUT = Path(__file__).resolve().parents[1] / "images"
TRUTH, RESULT = "#00e5ff", "#ff3d7f"


def overlay(ax, image, result, truth, title, aspect=1.0):
    """Image in grey, ground-truth boundaries in cyan, result boundaries in magenta."""
    ax.imshow(normalize_percentile(image), cmap="gray", aspect=aspect, interpolation="nearest")
    for mask, colour in ((truth, TRUTH), (result, RESULT)):
        edges = find_boundaries(mask, mode="inner")
        rgba = np.zeros((*edges.shape, 4))
        rgba[edges] = matplotlib.colors.to_rgba(colour)
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def scores(result, truth, spacing):
    d = metrics.foreground_dice(result, truth)
    bf = metrics.boundary_f_score(result, truth, spacing=spacing)
    return f"Dice {d:.3f}, boundary F {bf:.3f}"


def figure_2d_probabilities() -> Path:
    sample = data.nuclei_2d()
    probs = data.degrade_probabilities(sample.labels, blur=2.0, shift=(2, 2))
    before = probs.argmax(0)
    after = crf.refine(sample.image, probs, spacing=sample.spacing)
    crop = (slice(0, 128), slice(0, 128))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
    axes[0].imshow(probs[1][crop], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("degraded foreground probability", fontsize=9)
    axes[0].set_axis_off()
    fg = sample.labels[crop] > 0
    overlay(
        axes[1],
        sample.image[crop],
        before[crop] > 0,
        fg,
        "argmax before CRF\n" + scores(before, sample.labels, sample.spacing),
    )
    overlay(
        axes[2],
        sample.image[crop],
        after[crop] > 0,
        fg,
        "crf.refine (defaults)\n" + scores(after, sample.labels, sample.spacing),
    )
    fig.suptitle(
        "2D: blurred, shifted, noisy probabilities (cyan: truth, magenta: result)", fontsize=10
    )
    return save(fig, "crf_2d_probabilities.png")


def figure_2d_labels() -> Path:
    sample = data.nuclei_2d()
    grown = data.blobby_labels(sample.labels, grow=3.0)
    after = crf.refine_labels(sample.image, grown, spacing=sample.spacing)
    crop = (slice(64, 192), slice(64, 192))
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8), constrained_layout=True)
    for ax, labels, name in (
        (axes[0], grown, "SAM-like masks"),
        (axes[1], after, "crf.refine_labels (per object)"),
    ):
        ax.imshow(normalize_percentile(sample.image[crop]), cmap="gray", interpolation="nearest")
        edges = find_boundaries(labels[crop], mode="inner")
        colours = plt.get_cmap("tab20")(labels[crop] % 20)
        colours[..., 3] = np.where(edges, 1.0, 0.0)
        truth = find_boundaries(sample.labels[crop], mode="inner")
        rgba = np.zeros((*truth.shape, 4))
        rgba[truth] = matplotlib.colors.to_rgba(TRUTH, 0.6)
        ax.imshow(rgba, interpolation="nearest")
        ax.imshow(colours, interpolation="nearest")
        ax.set_title(f"{name}\n{scores(labels, sample.labels, sample.spacing)}", fontsize=9)
        ax.set_axis_off()
    fig.suptitle("2D instances: grown masks snap back to the nuclei (cyan: truth)", fontsize=10)
    return save(fig, "crf_2d_labels.png")


def figure_3d() -> Path:
    sample = data.nuclei_3d()
    probs = data.degrade_probabilities(
        sample.labels, spacing=sample.spacing, blur=1.5, shift=(0, 3, 3)
    )
    before = probs.argmax(0)
    after = crf.refine(sample.image, probs, spacing=sample.spacing)
    plane = int(np.argmax((sample.labels > 0).sum(axis=(1, 2))))
    row = int(np.argmax((sample.labels[plane] > 0).sum(axis=1)))
    aspect = sample.spacing[0] / sample.spacing[1]
    fig, axes = plt.subplots(
        2, 2, figsize=(8, 6.2), constrained_layout=True, gridspec_kw={"height_ratios": [4, 2]}
    )
    fg = sample.labels > 0
    for col, (result, name) in enumerate(((before, "before"), (after, "after crf.refine"))):
        overlay(
            axes[0, col],
            sample.image[plane],
            result[plane] > 0,
            fg[plane],
            f"{name}, plane z={plane}\n{scores(result, sample.labels, sample.spacing)}",
        )
        overlay(
            axes[1, col],
            sample.image[:, row],
            result[:, row] > 0,
            fg[:, row],
            f"{name}, section y={row} (z spacing 2 µm, xy 0.5 µm)",
            aspect=aspect,
        )
    fig.suptitle("3D anisotropic stack (cyan: truth, magenta: result)", fontsize=10)
    return save(fig, "crf_3d.png")


def save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    figure_2d_probabilities()
    figure_2d_labels()
    figure_3d()
