"""The CRF improves degraded segmentations of the synthetic samples, in 2D and 3D.

Degradation recipe (``napari_seglab.data.degrade_probabilities``, also in
``docs/crf.md``): one-hot ground-truth foreground, shifted by a few voxels,
Gaussian-blurred, plus Gaussian noise (sd 0.15), clipped to [0.02, 0.98].
SAM-like masks (``blobby_labels``) grow every object into the background and
round it off. Tests assert improvement, never exact scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab import crf, data, metrics


@pytest.fixture(scope="module")
def sample_2d():
    return data.nuclei_2d()


@pytest.fixture(scope="module")
def sample_3d():
    return data.nuclei_3d(shape=(24, 96, 96), n_objects=10)


def scores(prediction, sample):
    return (
        metrics.foreground_dice(prediction, sample.labels),
        metrics.boundary_f_score(prediction, sample.labels, spacing=sample.spacing),
    )


def assert_improves(before, after, sample):
    dice_before, bf_before = scores(before, sample)
    dice_after, bf_after = scores(after, sample)
    assert dice_after > dice_before + 0.02, (dice_before, dice_after)
    assert bf_after > bf_before + 0.1, (bf_before, bf_after)


def test_refine_improves_degraded_probabilities_2d(sample_2d):
    probs = data.degrade_probabilities(sample_2d.labels, blur=2.0, shift=(2, 2))
    refined = crf.refine(sample_2d.image, probs, spacing=sample_2d.spacing)
    assert refined.shape == sample_2d.labels.shape
    assert set(np.unique(refined)) <= {0, 1}
    assert_improves(probs.argmax(0), refined, sample_2d)


def test_refine_improves_degraded_probabilities_3d(sample_3d):
    probs = data.degrade_probabilities(
        sample_3d.labels, spacing=sample_3d.spacing, blur=1.5, shift=(0, 3, 3)
    )
    refined = crf.refine(sample_3d.image, probs, spacing=sample_3d.spacing)
    assert refined.shape == sample_3d.labels.shape
    assert_improves(probs.argmax(0), refined, sample_3d)


def test_refine_labels_snaps_grown_instances_2d(sample_2d):
    grown = data.blobby_labels(sample_2d.labels, grow=3.0)
    refined = crf.refine_labels(sample_2d.image, grown, spacing=sample_2d.spacing)
    assert refined.dtype == grown.dtype
    assert set(np.unique(refined)) <= set(np.unique(grown))
    assert_improves(grown, refined, sample_2d)


def test_refine_labels_snaps_grown_instances_3d(sample_3d):
    grown = data.blobby_labels(sample_3d.labels, grow=1.5, spacing=sample_3d.spacing)
    refined = crf.refine_labels(sample_3d.image, grown, spacing=sample_3d.spacing)
    assert set(np.unique(refined)) <= set(np.unique(grown))
    assert_improves(grown, refined, sample_3d)


def test_semantic_mode_improves_binary_masks(sample_2d):
    grown = (data.blobby_labels(sample_2d.labels, grow=3.0) > 0).astype(np.uint8) * 3
    refined = crf.refine_labels(sample_2d.image, grown, mode="semantic")
    assert set(np.unique(refined)) <= {0, 3}
    assert_improves(grown, refined, sample_2d)


def test_refine_follows_edges_of_multichannel_image(sample_2d):
    """The object channel carries the edges; a second channel of pure noise must not hide them."""
    noise = np.random.default_rng(3).normal(size=sample_2d.image.shape).astype(np.float32)
    two_channels = np.stack([sample_2d.image.astype(np.float32), noise * 5.0])
    probs = data.degrade_probabilities(sample_2d.labels, blur=2.0, shift=(2, 2))
    refined = crf.refine(two_channels, probs, intensity_sigma=0.2)
    assert_improves(probs.argmax(0), refined, sample_2d)


def test_anisotropic_spacing_weakens_coupling_across_planes():
    """Planes far apart (large z spacing) influence each other less.

    Plane 3 leans towards background (0.4) while its neighbours are confident
    foreground (0.9) and the image is flat: with isotropic voxels the smoothing
    kernels pull plane 3 to foreground; with a z spacing ten times the kernel
    width they cannot reach across, and plane 3 keeps its own unary.
    """
    shape = (7, 24, 24)
    p = np.full(shape, 0.9, dtype=np.float32)
    p[3] = 0.4
    image = np.full(shape, 100.0, dtype=np.float32)
    kwargs = {"spatial_sigma": 2.0, "smoothness_sigma": 2.0, "bilateral_weight": 5.0}
    near = crf.refine(image, p[None], spacing=(1.0, 1.0, 1.0), **kwargs)
    far = crf.refine(image, p[None], spacing=(20.0, 1.0, 1.0), **kwargs)
    assert near[3].mean() > 0.9
    assert far[3].mean() < 0.1
    assert far[[2, 4]].all()


def test_in_plane_spacing_sets_the_physical_kernel_width():
    """The same sigma in µm covers more pixels when pixels are smaller.

    A thin stripe of weak background evidence inside confident foreground is
    overruled when the kernel spans several pixels (0.25 µm pixels) but not
    when it spans a fraction of a pixel (10 µm pixels).
    """
    p = np.full((40, 40), 0.9, dtype=np.float32)
    p[:, 19:21] = 0.4
    image = np.zeros((40, 40), dtype=np.float32)
    kwargs = {"spatial_sigma": 2.0, "smoothness_sigma": 1.0}
    fine = crf.refine(image, p[None], spacing=(0.25, 0.25), **kwargs)
    coarse = crf.refine(image, p[None], spacing=(10.0, 10.0), **kwargs)
    assert fine[:, 19:21].all()
    assert not coarse[:, 19:21].any()


def test_default_kernels_follow_the_unit_of_spacing(sample_3d):
    """Defaults scale with the voxel size: the same stack in µm or in nm gives the same result."""
    probs = data.degrade_probabilities(sample_3d.labels, spacing=sample_3d.spacing)
    microns = crf.refine(sample_3d.image, probs, spacing=sample_3d.spacing)
    nanometres = crf.refine(
        sample_3d.image, probs, spacing=tuple(s * 1000.0 for s in sample_3d.spacing)
    )
    assert (microns == nanometres).mean() > 0.999
