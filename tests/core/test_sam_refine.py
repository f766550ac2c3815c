"""Refining existing labels with SAM (``napari_seglab.sam.refine`` / ``refine_all``).

A tiny SAM with random weights refines nothing, so the module fixture first
fine-tunes its decoder and prompt encoder for a few seconds
(:func:`napari_seglab.sam.finetune_decoder`, prompt kind ``"mask"``) on
synthetic images of bright disks on a dark background: the prompts are a
shrunken or grown copy of each disk with that copy's box and interior point,
the target the disk. The tests then check that refining a shrunken disk with
its own mask as the prompt brings it closer to the disk on images never seen
in training, and everything ``refine_all`` promises.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from napari_seglab import cli  # noqa: E402
from napari_seglab.jobs import JobCancelled, ProgressEvent  # noqa: E402
from napari_seglab.sam import (  # noqa: E402
    PromptRecipe,
    PromptSegmenter,
    finetune_decoder,
)
from napari_seglab.sam.finetune.data import collect_objects  # noqa: E402
from napari_seglab.sam.finetune.prompts import sample_prompts, validation_prompts  # noqa: E402
from napari_seglab.sam.mask_prompts import change_mask, interior_point, mask_box  # noqa: E402
from napari_seglab.sam.refine import refine_object  # noqa: E402
from napari_seglab.sam.refine_all import (  # noqa: E402
    RefineStep,
    _resolve,
    refine_all,
    refine_all_job,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHRINK = 3.0  # pixels taken off each disk of radius 7..12


def disks(seed: int, size: int = 64, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image of ``n`` bright disks (radius 7..12, apart) and their labels 1..n."""
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 5, (size, size))
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    count = 0
    for _ in range(200):
        r = rng.uniform(7, 12)
        cy, cx = rng.uniform(r, size - r, 2)
        distance = (yy - cy) ** 2 + (xx - cx) ** 2
        if (labels[distance <= (r + 3) ** 2] > 0).any():
            continue
        count += 1
        labels[distance <= r * r] = count
        image[distance <= r * r] += 180
        if count == n:
            break
    return np.clip(image, 0, 255).astype(np.uint8), labels


def shrunk(labels: np.ndarray, pixels: float = SHRINK) -> np.ndarray:
    """Every object of ``labels`` shrunk by ``pixels`` (same ids)."""
    out = np.zeros_like(labels)
    for i in np.unique(labels[labels > 0]):
        out[change_mask(labels == i, -pixels)] = i
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


@pytest.fixture(scope="module")
def tuned(make_tiny_sam):
    """The tiny SAM with its decoder tuned on mask prompts (15-25 s on one thread)."""
    images, labels = zip(*[disks(seed) for seed in range(8)])
    result = finetune_decoder(
        make_tiny_sam(seed=0),
        list(images),
        list(labels),
        steps=150,
        learning_rate=1e-2,  # the decoder starts from random weights
        patience=1000,
        device="cpu",
        seed=0,
        prompt=PromptRecipe(kind="mask", mask_change=0.5),
        train_prompt_encoder=True,
    )
    assert result.after["mask"] > result.before["mask"] + 0.5, (result.before, result.after)
    return result.model


# -- the mask prompt kind of fine-tuning ------------------------------------------------------
def test_mask_prompt_kind_draws_changed_masks_with_their_box_and_point():
    _image, labels = disks(0)
    objects = collect_objects(labels, 0, np.random.default_rng(0))
    recipe = PromptRecipe(kind="mask", mask_change=0.3)
    assert recipe.kinds == ("mask",)
    batch = sample_prompts(objects, "mask", recipe, np.random.default_rng(1), [labels.shape] * 4)
    assert batch.points.shape == (4, 1, 2)
    assert batch.boxes.shape == (4, 4)
    assert len(batch.masks) == 4
    for obj, mask, point, box in zip(objects, batch.masks, batch.points, batch.boxes):
        truth = obj.full_mask(labels.shape)
        radius = np.sqrt(obj.area / np.pi)
        # Within 0.3 radius (plus a pixel of rounding) of the truth, but changed.
        assert np.all(change_mask(truth, -0.3 * radius - 1) <= mask)
        assert np.all(mask <= change_mask(truth, 0.3 * radius + 1))
        assert tuple(point[0]) == interior_point(mask)
        np.testing.assert_array_equal(box, mask_box(mask))
    val = validation_prompts(objects, "mask", [labels.shape] * 4, recipe)
    for obj, mask in zip(objects, val.masks):
        assert mask.sum() < obj.area  # validation shrinks
    with pytest.raises(ValueError, match="mask_change"):
        PromptRecipe(kind="mask", mask_change=1.5)
    with pytest.raises(ValueError, match="shape"):
        validation_prompts(objects, "mask")


def test_change_mask_shrinks_and_grows_by_distance():
    yy, xx = np.mgrid[:41, :41]
    disk = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    smaller, larger = change_mask(disk, -3), change_mask(disk, 3)
    assert np.all(smaller <= disk)
    assert np.all(disk <= larger)
    assert np.pi * 6.5**2 < smaller.sum() < np.pi * 8**2
    assert np.pi * 12.5**2 < larger.sum() < np.pi * 14**2
    dot = np.zeros((9, 9), bool)
    dot[4, 4] = True
    assert change_mask(dot, -5).sum() == 1  # never empty
    np.testing.assert_array_equal(change_mask(disk, 0), disk)


def test_interior_point_on_the_box_equals_the_whole_plane():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = np.zeros((50, 60), bool)
        mask[5:35, 8:50] = rng.random((30, 42)) < 0.6
        distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        expected = np.unravel_index(int(np.argmax(distance)), mask.shape)
        assert interior_point(mask) == tuple(int(v) for v in expected)


# -- refine_object ------------------------------------------------------------------------------
def test_refining_a_shrunken_disk_with_its_mask_improves_dice(tuned, make_tiny_sam):
    """Unseen images: refine each disk shrunk by 3 px; the tuned model brings it back."""
    before, after, untrained = [], [], []
    segmenter = PromptSegmenter(tuned)
    base = PromptSegmenter(make_tiny_sam(seed=0))
    for seed in (100, 101, 102):
        image, truth = disks(seed)
        labels = shrunk(truth)
        segmenter.set_image(image)
        base.set_image(image)
        for i in range(1, truth.max() + 1):
            refined = refine_object(segmenter, labels, i)
            before.append(dice(labels == i, truth == i))
            after.append(dice(refined.mask, truth == i))
            untrained.append(dice(refine_object(base, labels, i).mask, truth == i))
            assert refined.overlap == pytest.approx(
                np.count_nonzero(refined.mask & (labels == i))
                / np.count_nonzero(refined.mask | (labels == i))
            )
    before, after = np.array(before), np.array(after)
    assert np.mean(after) >= np.mean(before) + 0.1, (before.mean(), after.mean())
    assert np.mean(after > before) >= 0.9
    assert np.mean(untrained) < np.mean(before)  # the refinement is the training's doing


def test_refine_object_never_takes_other_objects_and_takes_corrections(tuned):
    image, truth = disks(100)
    labels = shrunk(truth)
    # Object 2 overlaps where object 1's true disk lies: keep_others keeps it out.
    ring = (truth == 1) & (labels != 1)
    labels[ring] = 2
    segmenter = PromptSegmenter(tuned)
    segmenter.set_image(image)
    refined = refine_object(segmenter, labels, 1)
    assert not (refined.mask & (labels == 2)).any()
    assert refined.raw_mask.sum() >= refined.mask.sum()
    # Its change, written into a copy, replaces the object by the refined mask and nothing else.
    change = refined.change(labels.dtype)
    written = labels.copy()
    change.apply(written)
    expected = np.where(labels == 1, 0, labels)
    expected[refined.mask] = 1
    np.testing.assert_array_equal(written, expected)
    assert change.size == refined.added + refined.removed
    # The prompt: interior point, grown box, own mask, plus the corrective clicks.
    own = labels == 1
    click = np.argwhere(ring)[0]
    corrected = refine_object(segmenter, labels, 1, points=[click], point_labels=[0])
    direct = segmenter.predict(
        points=[interior_point(own), click],
        labels=[1, 0],
        box=mask_box(own, 0.1),
        mask_input=own,
        multimask=False,
    )
    np.testing.assert_array_equal(corrected.raw_mask, direct.mask)
    assert corrected.score == pytest.approx(float(direct.scores[0]))
    with pytest.raises(ValueError, match=r"id 9 .*ids present: 1, 2, 3, 4"):
        refine_object(segmenter, labels, 9)
    with pytest.raises(ValueError, match="plane="):
        refine_object(segmenter, np.stack([labels, labels]), 1)


# -- refine_all -----------------------------------------------------------------------------------
def test_refine_all_keeps_ids_and_leaves_rejected_objects_untouched(tuned):
    image, truth = disks(101, n=5)
    labels = shrunk(truth)
    labels[labels == 5] = 40  # sparse ids stay as they are
    truth[truth == 5] = 40
    kept = labels.copy()
    everything = refine_all(tuned, image, labels, min_score=-np.inf, min_overlap=0.0)
    overlaps = sorted(r.overlap for r in everything.records)
    threshold = (overlaps[1] + overlaps[2]) / 2  # two objects fall below it
    result = refine_all(tuned, image, labels, min_score=-np.inf, min_overlap=threshold)
    np.testing.assert_array_equal(labels, kept)  # input never modified
    assert result.labels is not labels
    assert result.labels.dtype == labels.dtype
    assert [r.object_id for r in result.records] == [1, 2, 3, 4, 40]
    assert len(result.rejected) == 2
    assert len(result.accepted) == 3
    assert set(np.unique(result.labels)) == set(np.unique(labels))
    for record in result.rejected:
        assert record.reason == "overlap below min_overlap"
        assert record.pixels_changed == 0
        np.testing.assert_array_equal(
            result.labels == record.object_id, labels == record.object_id
        )
    for record in result.accepted:
        i = record.object_id
        assert dice(result.labels == i, truth == i) > dice(labels == i, truth == i)
        assert record.pixels_added == np.count_nonzero((result.labels == i) & (labels != i))
    # Only background or the object's own pixels change: no object eats another.
    changed = result.labels != labels
    assert np.all((labels[changed] == 0) | (result.labels[changed] == 0))
    # The changes rebuild the result from the input, as a widget writes them.
    indices, values = result.changed_pixels()
    rebuilt = labels.copy()
    rebuilt[indices] = values
    np.testing.assert_array_equal(rebuilt, result.labels)
    assert values.size == sum(r.pixels_changed for r in result.records)
    # A high score threshold rejects everything, and then nothing changes.
    none = refine_all(tuned, image, labels, min_score=2.0, ids=[2, 40])
    assert [r.object_id for r in none.records] == [2, 40]
    assert not none.changes
    assert all(r.reason.startswith("score below min_score") for r in none.records)
    np.testing.assert_array_equal(none.labels, labels)


def test_contested_background_stays_background_in_any_order():
    grow_a = np.array([0, 1, 2, 3])
    grow_b = np.array([2, 3, 4])
    refined = {
        5: (0.9, 0.8, "accepted", grow_a, np.array([10])),
        7: (0.9, 0.8, "accepted", grow_b, np.array([], dtype=np.int64)),
        9: (0.1, 0.8, "score below min_score", np.array([4, 5]), np.array([11])),
    }
    for order in ([5, 7, 9], [9, 7, 5]):
        records, changes = _resolve({k: refined[k] for k in order}, (4, 4), np.uint16, None)
        by_id = {r.object_id: r for r in records}
        assert (by_id[5].pixels_added, by_id[5].contested, by_id[5].pixels_removed) == (2, 2, 1)
        assert (by_id[7].pixels_added, by_id[7].contested) == (1, 2)
        assert by_id[9].pixels_changed == 0
        assert not by_id[9].accepted
        out = np.zeros((4, 4), np.uint16)
        for change in changes:
            change.apply(out)
        assert out.ravel()[[0, 1]].tolist() == [5, 5]
        assert out.ravel()[4] == 7
        assert out.ravel()[[2, 3]].tolist() == [0, 0]


def test_refine_all_on_a_stack_refines_plane_by_plane(tuned):
    pairs = [disks(seed) for seed in (100, 101, 102)]
    image = np.stack([p[0] for p in pairs])
    labels = np.stack([shrunk(p[1]) for p in pairs])
    labels[1][labels[1] == 3] = 0  # object 3 is missing on plane 1
    steps = []
    result = refine_all(
        tuned, image, labels, min_score=-np.inf, min_overlap=0.0, callback=steps.append
    )
    planes = [(r.object_id, r.plane) for r in result.records]
    assert planes == [(i, z) for z in range(3) for i in (1, 2, 3, 4) if (z, i) != (1, 3)]
    assert all(isinstance(s, RefineStep) for s in steps)
    assert steps[-1].done == steps[-1].total == 11
    # Each plane is refined exactly as that plane alone would be.
    for z in range(3):
        alone = refine_all(tuned, image[z], labels[z], min_score=-np.inf, min_overlap=0.0)
        np.testing.assert_array_equal(result.labels[z], alone.labels)
    indices, values = result.changed_pixels()
    assert len(indices) == 3
    rebuilt = labels.copy()
    rebuilt[indices] = values
    np.testing.assert_array_equal(rebuilt, result.labels)


def test_refine_all_through_propagation_judges_each_plane(tuned):
    image0, truth0 = disks(100)
    image = np.stack([image0] * 3)
    truth = np.stack([truth0] * 3)
    labels = np.stack([shrunk(truth0, 2), shrunk(truth0, 3), shrunk(truth0, 4)])
    labels[1][labels[1] == 3] = 0  # object 3 is missing on plane 1: that plane stays as it is
    kept = labels.copy()
    steps = []
    result = refine_all(
        tuned,
        image,
        labels,
        min_score=-np.inf,
        min_overlap=0.0,
        through="propagation",
        callback=steps.append,
    )
    np.testing.assert_array_equal(labels, kept)
    pairs = sorted((r.plane, r.object_id) for r in result.records)
    assert pairs == [(z, i) for z in range(3) for i in (1, 2, 3, 4) if (z, i) != (1, 3)]
    assert [s.done for s in steps] == list(range(1, 12))
    assert not (result.labels[1] == 3).any()
    changed = result.labels != labels
    assert np.all((labels[changed] == 0) | (result.labels[changed] == 0))
    before = [
        dice(labels[r.plane] == r.object_id, truth[r.plane] == r.object_id) for r in result.records
    ]
    after = [
        dice(result.labels[r.plane] == r.object_id, truth[r.plane] == r.object_id)
        for r in result.records
    ]
    assert np.mean(after) >= np.mean(before) + 0.1, (np.mean(before), np.mean(after))
    # Where propagation stops, the planes keep their labels, and say why.
    strict = refine_all(tuned, image, labels, min_score=2.0, through="propagation")
    reasons = {r.reason for r in strict.records}
    assert reasons == {"score below min_score", "propagation stopped"}
    np.testing.assert_array_equal(strict.labels, labels)
    with pytest.raises(ValueError, match="needs a stack"):
        refine_all(tuned, image0, truth0, through="propagation")
    with pytest.raises(ValueError, match="through one of"):
        refine_all(tuned, image, labels, through="volume")


def test_cancel_leaves_nothing_changed(tuned):
    image, truth = disks(100)
    labels = shrunk(truth)
    kept = labels.copy()
    flag = threading.Event()
    job = refine_all_job(tuned, image, labels, cancel=flag)
    first = next(job)
    assert isinstance(first, ProgressEvent)
    assert first.done == 1
    flag.set()
    with pytest.raises(JobCancelled) as info:
        for _ in job:
            pass
    assert info.value.partial is None
    np.testing.assert_array_equal(labels, kept)


def test_bad_inputs_name_what_was_expected(tuned):
    image, truth = disks(100)
    labels = shrunk(truth)
    with pytest.raises(ValueError, match=r"\[7\] which are not; ids present: 1, 2, 3, 4"):
        refine_all(tuned, image, labels, ids=[2, 7])
    with pytest.raises(ValueError, match=r"shape \(64, 60\), expected \(64, 64\)"):
        refine_all(tuned, image, labels[:, :60])
    with pytest.raises(ValueError, match=r"integer labels.*float32"):
        refine_all(tuned, image, labels.astype(np.float32))
    bad = image.astype(np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"finite image.*1 NaN/infinite pixel"):
        refine_all(tuned, bad, labels)
    with pytest.raises(ValueError, match=r"min_overlap in \[0, 1\], got 1.5"):
        refine_all(tuned, image, labels, min_overlap=1.5)
    with pytest.raises(TypeError, match="PromptSegmenter or a SamModel"):
        refine_all("vit_b", image, labels)


# -- the command line ----------------------------------------------------------------------
def test_sam_refine_command_matches_the_api(tuned, tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    image, truth = disks(102)
    labels = shrunk(truth).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    checkpoint = tmp_path / "tuned.pth"
    torch.save(tuned.sam.state_dict(), checkpoint)
    out, report = tmp_path / "refined.tif", tmp_path / "report.csv"
    argv = ["sam-refine", str(tmp_path / "image.tif"), str(tmp_path / "labels.tif")]
    argv += ["-o", str(out), "--ids", "1,3", "--min-score", "-10", "--min-overlap", "0.2"]
    argv += ["--model", "tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]
    argv += ["--report", str(report), "--quiet"]
    assert cli.main(argv) == 0
    assert "2 accepted" in capsys.readouterr().out
    expected = refine_all(tuned, image, labels, ids=[1, 3], min_score=-10, min_overlap=0.2)
    np.testing.assert_array_equal(tifffile.imread(out), expected.labels)
    rows = report.read_text().splitlines()
    assert rows[0].startswith("object_id,plane,accepted,score,overlap,pixels_added")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "3"]
    # A stack through propagation, as the API does it.
    np.save(tmp_path / "stack.npy", np.stack([image, image]))
    np.save(tmp_path / "stack_labels.npy", np.stack([labels, shrunk(truth, 2)]))
    stack_argv = ["sam-refine", str(tmp_path / "stack.npy"), str(tmp_path / "stack_labels.npy")]
    stack_argv += ["-o", str(tmp_path / "stack_out.npy"), "--propagate", "--quiet"]
    stack_argv += ["--model", "tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert cli.main(stack_argv) == 0
    expected = refine_all(
        tuned,
        np.stack([image, image]),
        np.stack([labels, shrunk(truth, 2)]),
        through="propagation",
    )
    np.testing.assert_array_equal(np.load(tmp_path / "stack_out.npy"), expected.labels)
    # No output may overwrite an input, even with --overwrite.
    argv[argv.index("-o") + 1] = str(tmp_path / "labels.tif")
    assert cli.main([*argv, "--overwrite"]) == 2
    assert "it is the labels" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)
