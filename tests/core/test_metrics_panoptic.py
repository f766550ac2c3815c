"""Panoptic quality (PQ/SQ/RQ per class, things and stuff) against a brute-force reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from napari_seglab import metrics


def reference(pc, pi, gc, gi, things, stuff, void, threshold=0.5):
    """Panoptic counts by explicit enumeration of voxels and of every segment pair."""
    scored = set(things) | set(stuff)
    pred, gt, void_px, crowd = {}, {}, set(), {}
    for idx in itertools.product(*(range(s) for s in pc.shape)):
        c, i = int(pc[idx]), int(pi[idx])
        if c in scored and not (c in things and i == 0):
            pred.setdefault((c, i if c in things else 0), set()).add(idx)
        c, i = int(gc[idx]), int(gi[idx])
        if c in void:
            void_px.add(idx)
        elif c in things and i == 0:
            crowd.setdefault(c, set()).add(idx)
        elif c in scored:
            gt.setdefault((c, i if c in things else 0), set()).add(idx)
    counts = {c: [0, 0, 0, 0.0] for c in scored}
    pred_hit, gt_hit = set(), set()
    for p_key, p in pred.items():
        for g_key, g in gt.items():
            if p_key[0] != g_key[0]:
                continue
            inter = 0
            for voxel in p:
                if voxel in g:
                    inter += 1
            union = len((p | g) - void_px)
            if union and inter / union > threshold:
                assert p_key not in pred_hit
                assert g_key not in gt_hit
                pred_hit.add(p_key)
                gt_hit.add(g_key)
                counts[p_key[0]][0] += 1
                counts[p_key[0]][3] += inter / union
    for g_key in gt:
        if g_key not in gt_hit:
            counts[g_key[0]][2] += 1
    for p_key, p in pred.items():
        if p_key in pred_hit:
            continue
        out = len(p & (void_px | crowd.get(p_key[0], set())))
        if out / len(p) <= 0.5:
            counts[p_key[0]][1] += 1
    return counts


def blocky(rng, shape, values, block):
    small = rng.integers(0, values, size=tuple(max(1, s // block) for s in shape))
    big = small
    for axis, s in enumerate(shape):
        big = np.repeat(big, -(-s // small.shape[axis]), axis=axis)
    return big[tuple(slice(0, s) for s in shape)]


def perturb(rng, image, values, fraction):
    out = image.copy()
    flip = rng.random(image.shape) < fraction
    out[flip] = rng.integers(0, values, size=int(flip.sum()))
    return out


def random_case(rng, shape):
    gc = blocky(rng, shape, 5, 2)  # classes 0..4
    gi = blocky(rng, shape, 4, 2) * (rng.random() < 0.8)
    noise = rng.choice([0.05, 0.2, 0.45])
    pc = perturb(rng, gc, 5, noise)
    pi = perturb(rng, gi, 4, noise)
    return pc.astype(np.uint8), pi.astype(np.int32), gc.astype(np.int16), gi.astype(np.uint16)


@pytest.mark.parametrize("shape", [(10, 10), (3, 6, 6)])
def test_panoptic_matches_brute_force(shape):
    rng = np.random.default_rng(7)
    seen = {"tp": 0, "fp": 0, "fn": 0, "ignored": 0}
    for case in range(60):
        pc, pi, gc, gi = random_case(rng, shape)
        things = (1, 2)
        void = (4,) if case % 2 else ()
        stuff = (0, 3) if case % 3 == 0 else (3,)
        got = metrics.panoptic(
            pc, pi, gc, gi, things=things, stuff=stuff, ignore_label=void or None
        )
        ref = reference(pc, pi, gc, gi, things, stuff, set(void))
        for label, (tp, fp, fn, iou_sum) in ref.items():
            entry = got["classes"][label]
            assert (entry["tp"], entry["fp"], entry["fn"]) == (tp, fp, fn), (case, label)
            assert entry["iou_sum"] == pytest.approx(iou_sum, abs=1e-12)
            if tp + fp + fn:
                assert entry["pq"] == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2))
                assert entry["rq"] == pytest.approx(tp / (tp + fp / 2 + fn / 2))
                assert entry["sq"] == pytest.approx(iou_sum / tp if tp else 0.0)
            else:
                assert math.isnan(entry["pq"])
            seen["tp"] += tp
            seen["fp"] += fp
            seen["fn"] += fn
        present = [e for e in got["classes"].values() if e["tp"] + e["fp"] + e["fn"]]
        assert got["pq"] == pytest.approx(np.mean([e["pq"] for e in present]))
        n_pred = len(
            {
                (int(c), int(i) if c in things else 0)
                for c, i in zip(pc.ravel(), pi.ravel())
                if c in set(things) | set(stuff) and not (c in things and i == 0)
            }
        )
        seen["ignored"] += n_pred - sum(r[0] + r[1] for r in ref.values())
    # the random cases exercise every branch, so the comparison could fail
    assert all(v > 10 for v in seen.values()), seen


def test_things_and_stuff_averages_and_perfect_prediction():
    gc = np.zeros((3, 8, 8), np.uint8)
    gi = np.zeros_like(gc, dtype=np.int32)
    gc[:, :4] = 2  # stuff
    gc[:, 5:, :3] = 1
    gi[:, 5:, :3] = 7
    gc[:, 5:, 5:] = 1
    gi[:, 5:, 5:] = 9
    perfect = metrics.panoptic(gc, gi * 3, gc, gi, things=[1])
    assert perfect["stuff"] == (2,)
    assert perfect["pq"] == perfect["sq"] == perfect["rq"] == 1.0
    assert perfect["classes"][1]["tp"] == 2
    assert perfect["summary"]["things"]["n"] == 1
    pred_c = gc.copy()
    pred_c[:, 4] = 2  # stuff grows by one row per plane: IoU 32/40
    pred_i = gi.copy()
    pred_i[:, 5:, 5:] = 0  # one thing missed (its voxels become unsegmented)
    result = metrics.panoptic(pred_c, pred_i, gc, gi, things=[1])
    assert result["summary"]["stuff"]["pq"] == pytest.approx(96 / 120)
    assert result["classes"][1]["fn"] == 1
    assert result["classes"][1]["fp"] == 0
    assert result["summary"]["things"]["pq"] == pytest.approx(1 / 1.5)
    assert result["pq"] == pytest.approx((96 / 120 + 1 / 1.5) / 2)
    by_plane = metrics.panoptic(pred_c, pred_i, gc, gi, things=[1], per_plane=True)
    assert by_plane["classes"][2]["tp"] == 3
    assert by_plane["classes"][1]["fn"] == 3


def test_single_layer_form_and_errors():
    labels = np.array([[0, 1, 1], [2, 2, 3]], dtype=np.uint16)
    original = labels.copy()
    cls, inst = metrics.labels_to_panoptic(labels, {1: 5, 2: 5, 3: 6})
    assert cls.tolist() == [[0, 5, 5], [5, 5, 6]]
    assert np.array_equal(inst, labels)
    assert np.array_equal(labels, original)
    with pytest.raises(ValueError, match="have no class: ids 3"):
        metrics.labels_to_panoptic(labels, {1: 5, 2: 5})
    with pytest.raises(ValueError, match=r"\[0.5, 1\)"):
        metrics.panoptic(cls, inst, cls, inst, things=[5], iou_threshold=0.3)
    with pytest.raises(ValueError, match="stuff and things share"):
        metrics.panoptic(cls, inst, cls, inst, things=[5], stuff=[5, 6])
    with pytest.raises(ValueError, match="same shape"):
        metrics.panoptic(cls, inst, cls[:1], inst[:1], things=[5])


def test_panoptic_table_csv_and_evaluate(tmp_path):
    gc = np.array([[1, 1, 0, 2], [1, 1, 0, 2]], dtype=np.uint8)
    gi = np.array([[4, 4, 0, 0], [4, 4, 0, 0]], dtype=np.uint8)
    result = metrics.evaluate(
        gc,
        gc,
        mode="panoptic",
        panoptic_options={"pred_instance": gi, "gt_instance": gi, "things": [1]},
    ).result
    header, rows = metrics.results_table(result)
    assert header == ["class", "kind", *metrics.PANOPTIC_KEYS]
    assert [r[:2] for r in rows] == [
        [1, "thing"],
        [2, "stuff"],
        ["all", "mean"],
        ["things", "mean"],
        ["stuff", "mean"],
    ]
    path = metrics.write_csv(result, tmp_path / "pq.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "class,kind,pq,sq,rq,tp,fp,fn,iou_sum"
    assert lines[3] == "all,mean,1.0,1.0,1.0,2,0,0,2.0"
    with pytest.raises(ValueError, match="must give"):
        metrics.evaluate(gc, gc, mode="panoptic", panoptic_options={"things": [1]})


def test_seglab_evaluate_panoptic(tmp_path, capsys):
    from napari_seglab.cli import main

    rng = np.random.default_rng(3)
    pc, pi, gc, gi = random_case(rng, (2, 8, 8))
    for name, array in (("pc", pc), ("pi", pi), ("gc", gc), ("gi", gi)):
        np.save(tmp_path / f"{name}.npy", array)
    args = ["evaluate", str(tmp_path / "pc.npy"), str(tmp_path / "gc.npy"), "--mode", "panoptic"]
    paths = [
        "--pred-instances",
        str(tmp_path / "pi.npy"),
        "--gt-instances",
        str(tmp_path / "gi.npy"),
    ]
    options = ["--things", "1", "2", "--ignore-label", "4", "--quiet"]
    assert main([*args, *paths, *options, "--csv", str(tmp_path / "pq.csv")]) == 0
    expected = metrics.panoptic(pc, pi, gc, gi, things=[1, 2], ignore_label=4)
    header, rows = metrics.results_table(expected)
    lines = (tmp_path / "pq.csv").read_text().splitlines()
    assert lines[0] == ",".join(header)
    assert len(lines) == len(rows) + 1
    assert lines[-3].split(",")[:3] == ["all", "mean", repr(expected["pq"])]
    assert "things" in capsys.readouterr().out
    assert main([*args, *paths[:2], *options]) != 0
    assert "--mode panoptic needs --gt-instances" in capsys.readouterr().err
    assert main([*args[:3], "--things", "1"]) != 0
    assert "--things need --mode panoptic" in capsys.readouterr().err
