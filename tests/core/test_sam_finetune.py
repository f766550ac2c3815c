"""SAM decoder fine-tuning on a tiny in-process SAM (random weights) and synthetic nuclei.

The tiny model's encoder is random and frozen; its decoder starts random too,
so held-out Dice starts near 0.1 and fine-tuning must raise it on its own.
Images are 64x64 crops of ``data.nuclei_2d`` (upsampled 4x to the 256-px
encoder input, so a nucleus spans several embedding cells).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from napari_seglab.data import nuclei_2d, nuclei_3d  # noqa: E402
from napari_seglab.jobs import JobCancelled, ProgressEvent, run_to_end  # noqa: E402
from napari_seglab.sam import PromptSegmenter, load_model  # noqa: E402
from napari_seglab.sam.finetune import (  # noqa: E402
    DecoderMismatchError,
    PromptRecipe,
    batched_predict_masks,
    finetune_decoder,
    finetune_decoder_events,
    load_decoder,
    read_decoder_metadata,
    save_decoder,
)
from napari_seglab.sam.finetune.data import collect_objects, split_objects  # noqa: E402
from napari_seglab.sam.finetune.losses import correction_points  # noqa: E402
from napari_seglab.training_loop import EpochEvent  # noqa: E402

STEPS = 200
LEARNING_RATE = 3e-3  # the decoder starts from random weights


def crops(seed: int, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    sample = nuclei_2d((256, 256), n_objects=40, seed=seed)
    images, labels = [], []
    for r in range(0, 256, size):
        for c in range(0, 256, size):
            images.append(sample.image[r : r + size, c : c + size])
            labels.append(sample.labels[r : r + size, c : c + size])
    return images, labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    images, labels = [], []
    for seed in (0, 1):
        i, lab = crops(seed)
        images += i
        labels += lab
    return images, labels


@pytest.fixture(scope="module")
def tuned(data, make_tiny_sam):
    model = make_tiny_sam(seed=0)
    encoder_before = {k: v.clone() for k, v in model.sam.image_encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    calls = []
    hook = model.sam.image_encoder.register_forward_hook(
        lambda module, args, output: calls.append(int(args[0].shape[0]))
    )
    events: list[ProgressEvent] = []
    images, labels = data
    try:
        result = finetune_decoder(
            model,
            images,
            labels,
            steps=STEPS,
            learning_rate=LEARNING_RATE,
            patience=1000,
            device="cpu",
            seed=0,
            callback=events.append,
        )
    finally:
        hook.remove()
    return {
        "model": model,
        "result": result,
        "encoder_before": encoder_before,
        "decoder_before": decoder_before,
        "encoded_planes": sum(calls),
        "events": events,
    }


def test_finetuning_raises_validation_dice_for_boxes_and_points(tuned):
    result = tuned["result"]
    assert set(result.before) == {"box", "points", "mean"}
    for kind in ("box", "points"):
        assert result.after[kind] >= result.before[kind] + 0.2, (kind, result.before, result.after)
    assert result.steps == STEPS
    assert result.n_validation_objects >= 10
    assert result.history[0]["loss"] is None
    assert len(result.history) == result.epochs + 1
    assert result.history[result.best_epoch]["validation"] == result.after
    assert result.stopped_by == "steps"


def test_tuned_decoder_segments_unseen_images_better(tuned):
    """Prompting through PromptSegmenter on images never seen in training."""
    base = PromptSegmenter(tuned["model"])
    tuned_seg = PromptSegmenter(tuned["result"].model)
    images, labels = crops(seed=7)
    scores = {"base box": [], "tuned box": [], "base point": [], "tuned point": []}
    for image, label in zip(images, labels):
        base.set_image(image)
        tuned_seg.set_image(image)
        for obj in collect_objects(label, 0, np.random.default_rng(0)):
            truth = obj.full_mask(label.shape)
            for name, seg in (("base", base), ("tuned", tuned_seg)):
                box = seg.predict(box=obj.bbox, multimask=False).mask
                point = seg.predict(points=[obj.centre], labels=[1], multimask=False).mask
                scores[f"{name} box"].append(dice(box, truth))
                scores[f"{name} point"].append(dice(point, truth))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["tuned box"] >= mean["base box"] + 0.2, mean
    assert mean["tuned point"] >= mean["base point"] + 0.2, mean


def test_encoder_bit_identical_and_input_model_untouched(tuned):
    model, result = tuned["model"], tuned["result"]
    assert result.model.sam.image_encoder is model.sam.image_encoder  # shared, frozen
    for name, value in model.sam.image_encoder.state_dict().items():
        assert torch.equal(value, tuned["encoder_before"][name]), name
    for name, value in model.sam.mask_decoder.state_dict().items():
        assert torch.equal(value, tuned["decoder_before"][name]), name
    changed = [
        name
        for name, value in result.model.sam.mask_decoder.state_dict().items()
        if not torch.equal(value, tuned["decoder_before"][name])
    ]
    assert changed
    assert result.model.model_hash != model.model_hash


def test_encoder_runs_once_per_distinct_plane(tuned, data):
    images, _ = data
    assert tuned["encoded_planes"] == len(images) == tuned["result"].n_planes
    assert tuned["result"].encoder_calls == len(images)
    embedding_events = [e for e in tuned["events"] if e.stage == "embedding"]
    assert [e.done for e in embedding_events] == list(range(1, len(images) + 1))


def test_identical_planes_are_embedded_once(make_tiny_sam):
    images, labels = crops(seed=2)
    images, labels = images[:5] * 2, labels[:5] * 2  # each plane twice, more than the LRU
    model = make_tiny_sam(seed=0)
    calls = []
    hook = model.sam.image_encoder.register_forward_hook(
        lambda module, args, output: calls.append(int(args[0].shape[0]))
    )
    try:
        result = finetune_decoder(model, images, labels, steps=1, device="cpu")
    finally:
        hook.remove()
    assert result.n_planes == 10
    assert sum(calls) == result.encoder_calls == 5


def test_epoch_events_report_loss_and_dice(tuned):
    result = tuned["result"]
    epochs = [e for e in tuned["events"] if e.stage == "epoch"]
    assert all(isinstance(e, EpochEvent) for e in epochs)
    assert epochs[0].epoch == 0
    assert epochs[0].loss is None
    assert all(e.loss is not None and np.isfinite(e.loss) for e in epochs[1:])
    assert [e.epoch for e in epochs] == list(range(len(epochs)))
    assert [e.as_dict() for e in epochs] == result.history
    assert tuned["events"][-1] is epochs[-1]
    assert epochs[-1].final
    assert not any(e.final for e in epochs[:-1])
    assert epochs[-1].best_epoch == result.best_epoch
    assert epochs[-1].best_score == result.after["mean"]
    assert epochs[result.best_epoch].validation == result.after


def test_saved_decoder_reloads_and_reproduces_predictions(tuned, tmp_path, make_tiny_sam):
    result = tuned["result"]
    path = save_decoder(result.model, tmp_path / "decoder.pt", result=result)
    metadata = read_decoder_metadata(path)
    assert metadata["architecture"] == "tiny"
    assert metadata["base_encoder_hash"] == tuned["model"].encoder_hash
    assert metadata["recipe"]["kind"] == "mixed"
    assert metadata["validation_dice"]["after"] == result.after
    assert metadata["parts"] == ["mask_decoder"]
    # Only the trained parts are stored.
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith("image_encoder") for k in state)

    base_file = tmp_path / "tiny_base.pth"
    torch.save(make_tiny_sam(seed=0).sam.state_dict(), base_file)
    reloaded = load_model("tiny", checkpoint=base_file, device="cpu", decoder_checkpoint=path)
    fresh = make_tiny_sam(seed=0)
    assert load_decoder(fresh, path)["recipe"] == metadata["recipe"]

    image = crops(seed=9)[0][5]
    expected = PromptSegmenter(result.model)
    expected.set_image(image)
    for model in (reloaded, fresh):
        seg = PromptSegmenter(model)
        seg.set_image(image)
        for prompt in ({"box": (10, 12, 40, 44)}, {"points": [[30, 30]], "labels": [1]}):
            want, got = expected.predict(**prompt), seg.predict(**prompt)
            assert np.array_equal(want.logits, got.logits)
            assert np.array_equal(want.scores, got.scores)


def test_decoder_file_with_an_image_encoder_part_is_refused(tmp_path, make_tiny_sam):
    # Issue 12: a nested image_encoder part was silently ignored.
    donor = make_tiny_sam(seed=3)
    path = save_decoder(donor, tmp_path / "decoder.pt")
    state = torch.load(path, weights_only=True)
    state["image_encoder"] = donor.sam.image_encoder.state_dict()
    torch.save(state, path)
    model = make_tiny_sam(seed=3)
    before = {k: v.clone() for k, v in model.sam.image_encoder.state_dict().items()}
    with pytest.raises(RuntimeError, match="also holds 'image_encoder'"):
        load_decoder(model, path)
    for key, value in model.sam.image_encoder.state_dict().items():
        assert torch.equal(value, before[key])


def test_plain_decoder_file_warns_and_says_how_to_record_provenance(tmp_path, make_tiny_sam):
    from napari_seglab.sam import save_decoder_checkpoint

    tuned = make_tiny_sam(seed=4)
    plain = save_decoder_checkpoint(tmp_path / "plain.pt", tuned)
    model = make_tiny_sam(seed=0)
    with pytest.warns(UserWarning, match=r"no provenance.*save_decoder") as record:
        assert load_decoder(model, plain) == {}
    assert str(plain) in str(record[0].message)
    for key, value in tuned.sam.mask_decoder.state_dict().items():
        assert torch.equal(model.sam.mask_decoder.state_dict()[key], value)
    # A file saved with provenance loads without that warning.
    recorded = save_decoder(make_tiny_sam(seed=0), tmp_path / "recorded.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_decoder(make_tiny_sam(seed=0), recorded)


def test_decoder_for_another_base_model_is_refused(tuned, tmp_path, make_tiny_sam):
    path = save_decoder(tuned["result"].model, tmp_path / "decoder.pt", result=tuned["result"])
    # Same architecture, other encoder weights: shapes fit, the embeddings do not.
    other_encoder = make_tiny_sam(seed=1)
    with pytest.raises(DecoderMismatchError, match="image encoder"):
        load_decoder(other_encoder, path)
    # Another architecture whose decoder has the same shapes.
    other_arch = make_tiny_sam(seed=0, encoder_depth=1, encoder_global_attn_indexes=(0,))
    with pytest.raises(RuntimeError, match="fine-tuned for a SAM 'tiny' base model"):
        load_decoder(other_arch, path)
    # load_model refuses a decoder of another architecture that does not fit.
    wide = make_tiny_sam(seed=0, prompt_embed_dim=48)
    wide_decoder = save_decoder(wide, tmp_path / "wide_decoder.pt")
    base_file = tmp_path / "tiny_base.pth"
    torch.save(tuned["model"].sam.state_dict(), base_file)
    with pytest.raises(RuntimeError, match="fine-tuned for a SAM 'tiny-custom'"):
        load_model("tiny", checkpoint=base_file, device="cpu", decoder_checkpoint=wide_decoder)
    # load_model refuses a decoder tuned on other encoder weights of the same architecture.
    other_file = tmp_path / "tiny_other.pth"
    torch.save(other_encoder.sam.state_dict(), other_file)
    with pytest.raises(DecoderMismatchError, match="image encoder"):
        load_model("tiny", checkpoint=other_file, device="cpu", decoder_checkpoint=path)
    # ... and accepts it on the base it was tuned on.
    reloaded = load_model("tiny", checkpoint=base_file, device="cpu", decoder_checkpoint=path)
    assert reloaded.decoder_checkpoint == path


def test_batched_decoder_equals_segment_anything_predict_masks(make_tiny_sam):
    model = make_tiny_sam(seed=3)
    sam = model.sam
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn((3, 32, 16, 16), generator=generator)
    boxes = torch.tensor([[10.0, 20, 90, 100], [50, 60, 200, 180], [0, 0, 255, 255]])
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        masks, iou = batched_predict_masks(sam.mask_decoder, embeddings, pe, sparse, dense)
        for i in range(3):
            want_masks, want_iou = sam.mask_decoder.predict_masks(
                embeddings[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1]
            )
            torch.testing.assert_close(masks[i : i + 1], want_masks, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], want_iou, rtol=1e-5, atol=1e-5)


def test_validation_dice_matches_prompt_segmenter(make_tiny_sam):
    """Training's prompt geometry and mask postprocessing agree with interactive prompting."""
    images, labels = crops(seed=4)
    images, labels = images[:4], labels[:4]
    model = make_tiny_sam(seed=0)
    result = finetune_decoder(
        model,
        images,
        labels,
        steps=3,
        learning_rate=LEARNING_RATE,
        device="cpu",
        validation_fraction=0.5,
        seed=1,
    )
    # Recompute the validation split the same way and score through PromptSegmenter.
    rng = np.random.default_rng(1)
    objects = []
    for plane, label in enumerate(labels):
        objects += collect_objects(label, plane, rng)
    _, val = split_objects(objects, 0.5, rng)
    seg = PromptSegmenter(result.model)
    scores = {"box": [], "points": []}
    for obj in val:
        seg.set_image(images[obj.plane])
        truth = obj.full_mask(labels[obj.plane].shape)
        scores["box"].append(dice(seg.predict(box=obj.bbox, multimask=False).mask, truth))
        point = seg.predict(points=[obj.centre], labels=[1], multimask=False).mask
        scores["points"].append(dice(point, truth))
    final = result.after  # the kept (best) decoder's validation Dice
    for kind in ("box", "points"):
        assert abs(float(np.mean(scores[kind])) - final[kind]) < 0.01, (kind, final, scores)


def test_stack_uses_annotated_planes_only(make_tiny_sam):
    sample = nuclei_3d((12, 64, 64), n_objects=8, seed=0)
    labels = sample.labels.copy()
    annotated = [z for z in range(12) if labels[z].any()][:3]
    keep = np.zeros(12, bool)
    keep[annotated] = True
    labels[~keep] = 0
    model = make_tiny_sam(seed=0)
    calls = []
    hook = model.sam.image_encoder.register_forward_hook(
        lambda module, args, output: calls.append(int(args[0].shape[0]))
    )
    try:
        result = finetune_decoder(model, sample.image, labels, steps=2, device="cpu")
    finally:
        hook.remove()
    assert result.n_planes == len(annotated) == sum(calls)
    assert result.steps == 2


def test_semantic_labels_split_into_objects(make_tiny_sam):
    sample = nuclei_2d((96, 96), n_objects=8, seed=2)
    semantic = sample.semantic
    instance_objects = collect_objects(sample.labels, 0, np.random.default_rng(0))
    semantic_objects = collect_objects(semantic, 0, np.random.default_rng(0))
    assert {o.label for o in semantic_objects} == {1}
    assert 1 <= len(semantic_objects) <= len(instance_objects)
    # Every semantic object covers whole instances (touching nuclei merge).
    covered = sum(o.area for o in semantic_objects)
    assert covered == sum(o.area for o in instance_objects)
    result = finetune_decoder(make_tiny_sam(seed=0), sample.image, semantic, steps=2, device="cpu")
    assert result.n_train_objects + result.n_validation_objects == len(semantic_objects)


def test_cancel_keeps_best_decoder(make_tiny_sam):
    images, labels = crops(seed=3)
    model = make_tiny_sam(seed=0)
    cancel = threading.Event()
    events = finetune_decoder_events(
        model,
        images,
        labels,
        epochs=50,
        learning_rate=LEARNING_RATE,
        device="cpu",
        cancel=cancel,
    )

    def cancel_after_third_epoch(event) -> None:
        if event.stage == "epoch" and event.epoch == 3:
            cancel.set()

    with pytest.raises(JobCancelled) as cancelled:
        run_to_end(events, cancel_after_third_epoch)
    result = cancelled.value.partial
    assert result.cancelled
    assert result.epochs == 3
    best = result.history[result.best_epoch]["validation"]["mean"]
    assert best == max(h["validation"]["mean"] for h in result.history)
    assert result.after == result.history[result.best_epoch]["validation"]
    # The kept decoder is the best epoch's: re-validating gives its Dice.
    rerun = finetune_decoder(
        result.model, images, labels, steps=1, learning_rate=1e-12, device="cpu"
    )
    assert rerun.before["mean"] == pytest.approx(best, abs=1e-6)


def test_cancel_while_embedding_trains_nothing(make_tiny_sam):
    images, labels = crops(seed=3)
    model = make_tiny_sam(seed=0)
    cancel = threading.Event()
    events = finetune_decoder_events(model, images, labels, steps=5, device="cpu", cancel=cancel)
    first = next(events)
    assert first.stage == "embedding"
    assert first.total > 1
    cancel.set()
    with pytest.raises(JobCancelled, match="while embedding") as cancelled:
        next(events)
    assert cancelled.value.partial is None


def test_time_budget_stops_training(make_tiny_sam):
    images, labels = crops(seed=3)
    result = finetune_decoder(
        make_tiny_sam(seed=0), images[:4], labels[:4], time_budget_s=0.2, device="cpu"
    )
    assert result.steps >= 1
    assert result.epochs >= 1
    assert not result.cancelled
    assert result.stopped_by == "time"


def test_patience_stops_when_validation_dice_stalls(make_tiny_sam):
    images, labels = crops(seed=3)
    result = finetune_decoder(
        make_tiny_sam(seed=0),
        images[:6],
        labels[:6],
        epochs=20,
        learning_rate=1e-12,  # the decoder cannot move: no epoch beats the untrained one
        patience=2,
        device="cpu",
    )
    assert result.stopped_by == "patience"
    assert result.stopped_early
    assert result.epochs == 2
    assert result.best_epoch == 0
    assert result.after == result.before


def test_correction_points_lie_in_the_error_region():
    target = torch.zeros((2, 1, 16, 16))
    target[:, :, 4:12, 4:12] = 1.0
    logits = torch.full((2, 16, 16), -5.0)
    logits[0, 4:12, 4:8] = 5.0  # misses the right half: positive corrections
    logits[1, 0:16, 0:16] = 5.0  # overflows everywhere outside: negative corrections
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        xy, labels = correction_points(logits, target, 64, generator)
        cols = ((xy[:, 0, 0] + 0.5) / 4 - 0.5).round().long()
        rows = ((xy[:, 0, 1] + 0.5) / 4 - 0.5).round().long()
        assert labels[0, 0] == 1
        assert 4 <= rows[0] < 12
        assert 8 <= cols[0] < 12
        assert labels[1, 0] == 0
        assert not (4 <= rows[1] < 12 and 4 <= cols[1] < 12)


def test_correction_rounds_and_prompt_encoder_training_run(tmp_path, make_tiny_sam):
    images, labels = crops(seed=5)
    model = make_tiny_sam(seed=0)
    recipe = PromptRecipe(kind="points", correction_rounds=2, max_negatives=2)
    result = finetune_decoder(
        model,
        images[:4],
        labels[:4],
        steps=3,
        prompt=recipe,
        train_prompt_encoder=True,
        learning_rate=LEARNING_RATE,
        device="cpu",
    )
    assert set(result.before) == {"points", "mean"}
    assert all(np.isfinite(h["loss"]) for h in result.history[1:])
    assert result.model.sam.prompt_encoder is not model.sam.prompt_encoder
    path = save_decoder(result.model, tmp_path / "d.pt", result=result)
    assert read_decoder_metadata(path)["parts"] == ["mask_decoder", "prompt_encoder"]
    assert read_decoder_metadata(path)["recipe"]["correction_rounds"] == 2


def test_bad_inputs_are_explained(make_tiny_sam):
    model = make_tiny_sam(seed=0)
    image = np.zeros((32, 32), np.uint16)
    with pytest.raises(ValueError, match=r"shape \(16, 16\), expected \(32, 32\)"):
        finetune_decoder(model, image, np.zeros((16, 16), np.int32), steps=1, device="cpu")
    with pytest.raises(ValueError, match="found none"):
        finetune_decoder(model, image, np.zeros((32, 32), np.int32), steps=1, device="cpu")
    with pytest.raises(ValueError, match="integer labels"):
        finetune_decoder(model, image, np.zeros((32, 32), np.float32), steps=1, device="cpu")
    with pytest.raises(ValueError, match="2 images and 1 label"):
        finetune_decoder(model, [image, image], [np.zeros((32, 32), int)], device="cpu")
    with pytest.raises(ValueError, match="prompt kind"):
        finetune_decoder(model, image, np.ones((32, 32), int), prompt="scribble", device="cpu")


def test_cli_finetunes_and_writes_decoder(tmp_path, capsys, make_tiny_sam):
    import tifffile

    from napari_seglab.cli import main

    images, labels = crops(seed=6)
    args = []
    for i in range(2):
        tifffile.imwrite(tmp_path / f"img{i}.tif", images[i])
        tifffile.imwrite(tmp_path / f"gt{i}.tif", labels[i])
    args = ["finetune", "--images"] + [str(tmp_path / f"img{i}.tif") for i in range(2)]
    args += ["--labels"] + [str(tmp_path / f"gt{i}.tif") for i in range(2)]
    base = tmp_path / "base.pth"
    torch.save(make_tiny_sam(seed=0).sam.state_dict(), base)
    out = tmp_path / "decoder.pt"
    code = main(
        args
        + [
            "--model",
            "tiny",
            "--checkpoint",
            str(base),
            "--steps",
            "2",
            "--prompt",
            "box",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert read_decoder_metadata(out)["recipe"]["kind"] == "box"
    printed = capsys.readouterr().out
    assert "validation Dice" in printed
    assert str(out) in printed
    code = main(
        args[:4]
        + [
            "--labels",
            str(tmp_path / "gt0.tif"),
            "--model",
            "tiny",
            "--checkpoint",
            str(base),
            "-o",
            str(out),
        ]
    )
    assert code == 2
    assert "2 images and 1 label" in capsys.readouterr().err


def test_embeddings_beyond_the_memory_budget_live_on_disk(tmp_path, monkeypatch, make_tiny_sam):
    images, labels = crops(seed=8)
    images, labels = images[:6], labels[:6]
    model = make_tiny_sam(seed=0)
    in_memory = finetune_decoder(model, images, labels, steps=2, device="cpu")
    monkeypatch.setenv("SEGLAB_CACHE_DIR", str(tmp_path))
    # One tiny-model embedding is 32 KiB: a 0.05 MiB budget holds one plane, not six.
    on_disk = finetune_decoder(
        model, images, labels, steps=2, device="cpu", embedding_memory_mib=0.05
    )
    assert on_disk.before == in_memory.before  # same embeddings, read back from disk
    assert on_disk.encoder_calls == in_memory.encoder_calls == 6
    assert on_disk.steps == 2
    assert list(tmp_path.glob("finetune-embeddings-*")) == []  # temporary store removed


@pytest.mark.parametrize(
    ("shape", "img_size", "low_res"),
    [((64, 64), 256, 64), ((100, 70), 256, 64), ((300, 517), 1024, 256)],
)
def test_low_res_targets_equal_resizing_the_whole_mask(shape, img_size, low_res):
    """Crop-wise targets = the full pipeline (resize like the image, pad, area-average)."""
    import torch.nn.functional as F

    from napari_seglab.sam.finetune.targets import low_res_targets
    from napari_seglab.sam.frames import input_size as resized

    sample = nuclei_2d(shape, n_objects=10, seed=1)
    objects = collect_objects(sample.labels, 0, np.random.default_rng(0))
    input_size = resized(shape, img_size)
    masks = np.stack([o.full_mask(shape) for o in objects]).astype(np.float32)
    full = F.interpolate(torch.from_numpy(masks)[:, None], input_size, mode="bilinear")
    full = F.pad(full, (0, img_size - input_size[1], 0, img_size - input_size[0]))
    expected = F.interpolate(full, (low_res, low_res), mode="area")[:, 0]
    got = low_res_targets(objects, shape, input_size, img_size, low_res)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
