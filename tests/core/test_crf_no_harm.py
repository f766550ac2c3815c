"""Default CRF refinement does no harm on real images (issue 12).

Real images that ship inside installed packages: the stroma crop of
scikit-image's ``immunohistochemistry.png`` (haematoxylin nuclei, reference:
``rgb2hed`` haematoxylin, Otsu, opening, holes filled), pydicom's
``CT_small.dcm`` (bone, reference: HU > 250) and nibabel's EPI phantom (an
anisotropic 3D stack; Otsu, largest component). The full measurement, with more
images and degradations, is ``docs/scripts/tune_crf_real.py`` and its table in
``docs/crf.md``; these tests keep the cases that could regress.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_seglab import crf, metrics
from napari_seglab.crf._safety import verify_changes

#: The plain dense CRF with the settings used before issue 12.
PLAIN = {
    "spatial_sigma": 5.0,
    "keep_objects": False,
    "verify": False,
    "warn_fraction": None,
    "intensity_sigma": 0.1,
}


def _remove_small(mask: np.ndarray, size: int) -> np.ndarray:
    objects, _ = ndi.label(mask)
    keep = np.bincount(objects.ravel()) > size
    keep[0] = False
    return keep[objects]


def _probabilities(mask: np.ndarray, spacing, grow: float) -> np.ndarray:
    """Reference grown (``grow > 0``) or shrunk by ``|grow|`` units, blurred 2 units."""
    unit = min(spacing)
    if grow > 0:
        mask = ndi.distance_transform_edt(~mask, sampling=spacing) <= grow * unit
    elif grow < 0:
        mask = ndi.distance_transform_edt(mask, sampling=spacing) > -grow * unit
    p = ndi.gaussian_filter(mask.astype(np.float32), tuple(2 * unit / s for s in spacing))
    return np.clip(p, 0.02, 0.98)[np.newaxis]


@pytest.fixture(scope="module")
def nuclei():
    """160×160 RGB stroma crop of the bundled IHC image and its nuclei mask."""
    from skimage import color, data, filters, morphology

    rgb = data.immunohistochemistry()[288:448, 352:512]
    haem = ndi.gaussian_filter(color.rgb2hed(rgb)[..., 0], 1.0)
    mask = morphology.opening(haem > filters.threshold_otsu(haem), morphology.disk(1))
    return rgb, _remove_small(ndi.binary_fill_holes(mask), 30), (1.0, 1.0)


@pytest.fixture(scope="module")
def bone():
    """pydicom's CT_small.dcm in HU (128×128, 0.66 mm pixels) and its bone mask."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)
    mask = ndi.binary_fill_holes(_remove_small(hu > 250, 20))
    return hu, mask, tuple(float(v) for v in ds.PixelSpacing)


@pytest.fixture(scope="module")
def phantom():
    """nibabel's EPI phantom, (Z, Y, X) = (9, 64, 64) at (8, 3.75, 3.75) mm, and its mask."""
    import os

    import nibabel
    from skimage.filters import threshold_otsu

    path = os.path.join(
        os.path.dirname(nibabel.__file__), "tests", "data", "phantom_EPI_asc_CLEAR_2_1.PAR"
    )
    img = nibabel.load(path)
    volume = np.asarray(img.dataobj)[..., 0].transpose(2, 1, 0).astype(np.float32)
    smooth = ndi.gaussian_filter(volume, (0, 1, 1))
    objects, _ = ndi.label(smooth > threshold_otsu(smooth))
    mask = objects == np.argmax(np.bincount(objects.ravel())[1:]) + 1
    mask = np.stack([ndi.binary_fill_holes(plane) for plane in mask])
    zooms = img.header.get_zooms()
    return volume, mask, (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def _delta(case, probs, **kwargs) -> float:
    image, mask, spacing = case
    refined = crf.refine(image, probs, spacing=spacing, **kwargs)
    return metrics.foreground_dice(refined > 0, mask) - metrics.foreground_dice(
        probs[0] > 0.5, mask
    )


def test_too_small_map_of_real_nuclei_loses_no_more_than_002(nuclei):
    probs = _probabilities(nuclei[1], nuclei[2], grow=-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good map gives no warning
        default = _delta(nuclei, probs)
    assert default > -0.02
    # the trap is real: the plain dense CRF (old defaults) erases weak nuclei
    assert _delta(nuclei, probs, **PLAIN) < -0.05
    # and checking the changes against the image is what keeps them
    assert _delta(nuclei, probs, verify=False) < default - 0.02


def test_anisotropic_3d_phantom_map_much_too_small_is_not_erased(phantom):
    """Eroded by 15 mm, the phantom's map is a weak object the plain CRF removes entirely."""
    probs = _probabilities(phantom[1], phantom[2], grow=-4)
    assert _delta(phantom, probs) > -0.02
    assert _delta(phantom, probs, **dict(PLAIN, spatial_sigma=5 * 3.75)) < -0.3


@pytest.mark.parametrize("which", ["nuclei", "bone", "phantom"])
def test_too_large_map_of_real_image_gains_at_least_003(which, request):
    case = request.getfixturevalue(which)
    probs = _probabilities(case[1], case[2], grow=3)
    assert _delta(case, probs) >= 0.03


def test_shrunk_instance_masks_of_real_nuclei_are_checked_against_the_image(nuclei):
    image, mask, _ = nuclei
    labels, _ = ndi.label(ndi.distance_transform_edt(mask) > 3)  # every nucleus eroded by 3 px
    before = metrics.foreground_dice(labels > 0, mask)

    def delta(**kwargs) -> float:
        refined = crf.refine_labels(image, labels, **kwargs)
        return metrics.foreground_dice(refined > 0, mask) - before

    assert delta() > -0.04
    assert delta(verify=False) < -0.06
    assert delta(mode="semantic") > -0.02


def test_confident_pixels_keep_their_class_when_asked(nuclei):
    image, mask, _ = nuclei
    shifted = np.roll(mask, 6, axis=1)  # a confident map six pixels off
    probs = np.where(shifted, 0.97, 0.03).astype(np.float32)[np.newaxis]
    sure = np.maximum(probs[0], 1 - probs[0]) >= 0.95
    given = probs[0] > 0.5
    refined = crf.refine(image, probs, keep_confident=0.95, warn_fraction=None)
    assert np.array_equal(refined[sure] > 0, given[sure])
    # without the guard (the default) the CRF does move some of those pixels
    free = crf.refine(image, probs, warn_fraction=None)
    assert np.count_nonzero((free > 0)[sure] != given[sure]) > 20


def test_warns_when_many_confident_pixels_would_change(nuclei):
    image, mask, _ = nuclei
    flipped = np.where(mask[::-1], 0.97, 0.03).astype(np.float32)[np.newaxis]
    with pytest.warns(RuntimeWarning, match="pixels whose input probability"):
        crf.refine(image, flipped)
    right = np.where(mask, 0.97, 0.03).astype(np.float32)[np.newaxis]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crf.refine(image, right)
        crf.refine(image, flipped, warn_fraction=None)


def test_an_object_with_a_core_is_kept_a_speck_is_not():
    """On a flat image (no evidence either way) a weak disc is outvoted unless it is kept."""
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 24) ** 2 <= 25
    p = np.full((64, 64), 0.05, dtype=np.float32)
    p[disc] = 0.6
    p[10, 50] = 0.9  # one noisy pixel
    image = np.zeros((64, 64), dtype=np.float32)
    plain = crf.refine(image, p[None], keep_objects=False)
    kept = crf.refine(image, p[None])
    assert not plain[disc].any()
    assert kept[disc].all()
    assert kept[10, 50] == 0


def test_changes_the_image_argues_against_are_undone():
    """A bright disc: shrinking into it is undone, trimming a dark rim around it is kept."""
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    image = np.where(r2 <= 144, 1.0, 0.0).astype(np.float32)[np.newaxis]
    given = (r2 <= 196).astype(np.uint8)  # the disc plus a 2-pixel dark rim
    refined = (r2 <= 64).astype(np.uint8)  # a CRF that shrank it far into the disc
    checked = verify_changes(refined.copy(), given, image, (1.0, 1.0))
    assert np.array_equal(checked, r2 <= 144)  # bright pixels back, the dark rim stays out
    assert np.array_equal(verify_changes(given.copy(), given, image, (1.0, 1.0)), given)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_confident": 0.3}, "keep_confident"),
        ({"keep_confident": float("nan")}, "keep_confident"),
        ({"warn_fraction": 1.5}, "warn_fraction"),
    ],
)
def test_bad_guard_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        crf.refine(np.zeros((8, 8)), np.full((1, 8, 8), 0.5), **kwargs)
