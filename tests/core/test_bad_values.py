"""Values that cannot give a right answer are refused, never turned into a silent wrong one.

Non-finite images for the U-Net, NaN weights, label ids that do not fit a
small integer type, and SAM prompts that cannot be right (issue 12).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seglab import imaging
from napari_seglab.unet import predict, train

TINY_2D = {"channels": [4, 8], "strides": [2]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(shape=(32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark background and its semantic labels."""
    image = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    image[8:20, 10:22] = 1.0
    labels[8:20, 10:22] = 1
    return image, labels


@pytest.fixture(scope="module")
def tiny_model(one_torch_thread):
    image, labels = blobs()
    return train(
        image,
        labels,
        network_kwargs=TINY_2D,
        patch_size=(16, 16),
        max_epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        validation_fraction=0,
        augment=False,
        device="cpu",
    )


# ------------------------------------------------------------------ finite images
def test_non_finite_counts_and_finds_the_first_bad_value():
    stack = np.zeros((3, 4, 5), dtype=np.float32)
    stack[1, 2, 3] = np.inf
    stack[2, 0:2, 0:2] = np.nan
    assert imaging.non_finite(stack) == (5, (1, 2, 3))
    assert imaging.non_finite(np.zeros((3, 4), dtype=np.uint16)) == (0, None)
    assert imaging.non_finite(np.ones((3, 4))) == (0, None)


def test_check_finite_names_count_position_and_shape():
    image = np.zeros((6, 7))
    image[4, 5] = -np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value.*index \(4, 5\).*shape \(6, 7\)"):
        imaging.check_finite(image)


def test_prediction_refuses_an_image_with_one_infinite_pixel(tiny_model):
    image, _ = blobs()
    image[3, 30] = np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value.*index \(3, 30\)"):
        predict(tiny_model, image, device="cpu")


def test_prediction_refuses_a_nan_block_in_a_stack_plane_by_plane(tiny_model):
    image, _ = blobs()
    stack = np.stack([image, image, image])
    stack[2, 5:7, 5:8] = np.nan
    with pytest.raises(ValueError, match=r"6 non-finite value.*index \(2, 5, 5\)"):
        predict(tiny_model, stack, device="cpu", slicewise=True)


def test_prediction_of_a_finite_image_still_works(tiny_model):
    image, _ = blobs()
    probs = predict(tiny_model, image, device="cpu")
    assert probs.shape == (2, *image.shape)
    assert np.isfinite(probs).all()


def test_training_refuses_a_non_finite_image_and_names_which_one():
    image, labels = blobs()
    bad = image.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"image 2 of 2 holds 1 non-finite.*index \(0, 1\)"):
        train([image, bad], [labels, labels], max_epochs=1, device="cpu")


def test_a_model_with_nan_weights_is_never_saved(tiny_model, tmp_path):
    import copy

    poisoned = copy.deepcopy(tiny_model)
    weight = next(p for p in poisoned.network.parameters() if p.ndim > 1)
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    target = tmp_path / "nan.pt"
    with pytest.raises(ValueError, match="NaN or ±Inf"):
        poisoned.save(target)
    assert not target.exists()
    assert tiny_model.save(tmp_path / "ok.pt").exists()


def test_training_stops_with_an_error_when_the_loss_becomes_nan(tiny_model):
    import copy

    poisoned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in poisoned.network.parameters():
            p.fill_(float("nan"))
    image, labels = blobs()
    with pytest.raises(RuntimeError, match=r"step 1: the loss became nan"):
        train(
            image,
            labels,
            initial_model=poisoned,
            max_epochs=1,
            steps_per_epoch=2,
            batch_size=2,
            validation_fraction=0,
            augment=False,
            device="cpu",
        )


# ------------------------------------------------------------ label ids that do not fit
BIG = 3_000_000_000  # above 2**31: int32 would turn it (and BIG + 1) into -2147483648


def save_float_labels(path, data):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float64)
    header["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    nib.save(nib.Nifti1Image(data, np.eye(4), header=header), path)
    return path


@pytest.mark.parametrize(
    ("ids", "dtype"),
    [
        ((7, 9), np.int32),
        ((BIG, BIG + 1), np.uint32),
        ((2**40, 2**40 + 1), np.int64),
        ((-5, BIG), np.int64),
        ((2**63 + 2**12, 2**63 + 2**13), np.uint64),
    ],
)
def test_float_label_nifti_keeps_every_id_in_the_smallest_type_that_holds_it(tmp_path, ids, dtype):
    from napari_seglab.io import read_nifti

    data = np.zeros((6, 5, 4), dtype=np.float64)
    data[1:3, 1:3, 1:3] = ids[0]
    data[3:5, 1:3, 1:3] = ids[1]  # touching the first object
    vol = read_nifti(save_float_labels(tmp_path / "ids.nii", data), layer_type="labels")
    assert vol.data.dtype == dtype
    values = sorted(int(v) for v in np.unique(vol.data))
    assert values == sorted([0, *ids])  # two objects stay two, ids exact


def test_float_label_nifti_with_fractions_or_nan_is_refused(tmp_path):
    from napari_seglab.io import read_nifti

    data = np.zeros((4, 4, 4), dtype=np.float64)
    data[1, 1, 1] = 2.5
    data[2, 2, 2] = np.nan
    path = save_float_labels(tmp_path / "frac.nii", data)
    with pytest.raises(ValueError, match=r"not integers \(1 NaN or infinite, 1 with a fractional"):
        read_nifti(path, layer_type="labels")


def sparse_scene(ids):
    """Two touching squares and a third apart, carrying ``ids``, on a noisy image."""
    labels = np.zeros((40, 40), dtype=np.asarray(ids).dtype)
    labels[5:15, 5:15] = ids[0]
    labels[5:15, 15:25] = ids[1]
    labels[25:35, 25:35] = ids[2]
    rng = np.random.default_rng(0)
    image = rng.normal(size=labels.shape).astype(np.float32) + (labels > 0) * 3.0
    return image, labels


@pytest.mark.parametrize(
    "ids",
    [
        np.array([BIG, BIG + 1, 2**40], dtype=np.int64),
        np.array([BIG, BIG + 1, 2**63 + 5], dtype=np.uint64),
    ],
)
@pytest.mark.parametrize("mode", ["instance", "semantic"])
def test_crf_refines_huge_sparse_ids_like_small_ones(ids, mode):
    from napari_seglab import crf

    image, labels = sparse_scene(ids)
    small_image, small = sparse_scene(np.array([1, 2, 3], dtype=np.int64))
    refined = crf.refine_labels(image, labels, mode=mode)
    expected = crf.refine_labels(small_image, small, mode=mode)
    lut = np.zeros(4, dtype=ids.dtype)
    lut[1:] = ids
    assert refined.dtype == labels.dtype
    np.testing.assert_array_equal(refined, lut[expected])  # same result, ids kept


def test_semantic_crf_without_background_keeps_uint64_ids_exact():
    from napari_seglab import crf

    image, labels = sparse_scene(np.array([2**63 + 5, 2**63 + 6, 2**63 + 7], dtype=np.uint64))
    labels[labels == 0] = 2**63 + 7  # no background value anywhere
    refined = crf.refine_labels(image, labels, mode="semantic")
    assert set(np.unique(refined).tolist()) <= {0, 2**63 + 5, 2**63 + 6, 2**63 + 7}
    assert (refined == 2**63 + 5).any()


@pytest.mark.parametrize(
    "ids",
    [
        np.array([BIG, BIG + 1, 2**40], dtype=np.int64),
        np.array([BIG, BIG + 1, 2**63 + 5], dtype=np.uint64),
    ],
)
def test_finetuning_objects_keep_huge_sparse_ids(ids):
    from napari_seglab.sam.finetune.data import collect_objects

    _, labels = sparse_scene(ids)
    _, small = sparse_scene(np.array([1, 2, 3], dtype=np.int64))
    objects = collect_objects(labels, 0, np.random.default_rng(0))
    reference = collect_objects(small, 0, np.random.default_rng(0))
    assert [o.label for o in objects] == [int(v) for v in ids]  # touching objects stay two
    assert len(reference) == 3
    for got, want in zip(objects, reference):
        np.testing.assert_array_equal(got.bbox, want.bbox)
        np.testing.assert_array_equal(got.mask, want.mask)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_finetuning_runs_on_labels_with_ids_above_2_to_the_40(make_tiny_sam, dtype):
    pytest.importorskip("segment_anything")
    from napari_seglab.data import nuclei_2d
    from napari_seglab.sam.finetune import finetune_decoder

    sample = nuclei_2d((64, 64), n_objects=4, seed=2)
    huge = np.where(sample.labels > 0, sample.labels.astype(dtype) + dtype(2**40), dtype(0))
    result = finetune_decoder(make_tiny_sam(seed=0), sample.image, huge, steps=2, device="cpu")
    assert result.steps == 2


# ------------------------------------------------------------ prompts that cannot be right
@pytest.fixture(scope="module")
def segmenter(make_tiny_sam):
    pytest.importorskip("segment_anything")
    from napari_seglab.data import nuclei_2d
    from napari_seglab.sam import PromptSegmenter

    seg = PromptSegmenter(make_tiny_sam(seed=1))
    seg.set_image(nuclei_2d((60, 100), n_objects=4, seed=3).image)
    return seg


@pytest.mark.parametrize(
    "points", [[[np.nan, 10.0]], [[10.0, 20.0], [5.0, np.inf]], [[-np.inf, -np.inf]]]
)
def test_non_finite_points_are_refused_by_name(segmenter, points):
    with pytest.raises(ValueError, match=r"Points \[\[.*\]\] \(row, col\) are not finite"):
        segmenter.predict(points=points)


@pytest.mark.parametrize("box", [(np.nan, 0, 10, 10), (0, 0, np.inf, 10)])
def test_non_finite_boxes_are_refused(segmenter, box):
    with pytest.raises(ValueError, match=r"box .* not finite"):
        segmenter.predict(box=box)


@pytest.mark.parametrize("box", [(70, 10, 90, 30), (-40, -40, -5, -5), (10, 100.6, 20, 300)])
def test_a_box_entirely_outside_the_image_is_refused(segmenter, box):
    with pytest.raises(ValueError, match=r"lies entirely outside the image of shape \(60, 100\)"):
        segmenter.predict(box=box)


def test_a_box_partly_inside_still_gives_a_mask(segmenter):
    prediction = segmenter.predict(box=(40, 80, 90, 140))
    assert prediction.mask.shape == (60, 100)


def test_points_outside_the_image_are_named(segmenter):
    with pytest.raises(ValueError, match=r"Points \[\[60\.0, 5\.0\]\] \(row, col\) lie outside"):
        segmenter.predict(points=[[10, 10], [60, 5]], labels=[1, 1])


def test_nan_mask_logits_are_refused(segmenter):
    low = segmenter.model.low_res_size
    logits = np.zeros((low, low), dtype=np.float32)
    logits[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"mask_input holds 1 non-finite value"):
        segmenter.predict(points=[[10, 10]], mask_input=logits)
    good = segmenter.predict(points=[[10, 10]], multimask=False)
    again = segmenter.predict(points=[[10, 10]], mask_input=good.logits[0], multimask=False)
    assert np.isfinite(again.scores).all()


def test_seglab_predict_and_train_refuse_a_nan_image_with_exit_code_2(
    tiny_model, tmp_path, capsys
):
    from napari_seglab.cli import main

    image, labels = blobs()
    image[2:4, 6:8] = np.nan
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "labels.npy", labels)
    model = tiny_model.save(tmp_path / "model.pt")
    out = tmp_path / "pred.npy"
    assert main(["predict", str(model), str(tmp_path / "image.npy"), "-o", str(out)]) == 2
    assert "4 non-finite value(s)" in capsys.readouterr().err
    assert not out.exists()
    trained = tmp_path / "trained.pt"
    args = ["train", str(tmp_path / "image.npy"), str(tmp_path / "labels.npy")]
    assert main([*args, "-o", str(trained), "--device", "cpu", "--epochs", "1"]) == 2
    assert "first at index (2, 6)" in capsys.readouterr().err
    assert not trained.exists()
