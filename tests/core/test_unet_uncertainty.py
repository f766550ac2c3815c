"""Active-learning suggestions (predictive entropy) of napari_seglab.unet."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seglab import data
from napari_seglab.jobs import JobCancelled, run_to_end
from napari_seglab.unet import Suggestion, predict, suggest_events, suggest_slices, train
from napari_seglab.unet.uncertainty import predictive_entropy, tile_grid

TINY = {"channels": [4, 8, 16]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_3d():
    sample = data.nuclei_3d(shape=(8, 32, 32), n_objects=4)
    return train(
        sample.image,
        sample.semantic,
        network_kwargs={**TINY, "dropout": 0.3},
        patch_size=(8, 32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
    )


def test_entropy_is_zero_when_sure_and_log_c_when_unsure():
    probs = np.zeros((2, 2, 3), np.float32)
    probs[0, 0] = 1.0
    probs[:, 1] = 0.5
    entropy = predictive_entropy(probs)
    np.testing.assert_allclose(entropy[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(entropy[1], np.log(2), rtol=1e-5)


def test_planes_ranked_by_entropy_most_uncertain_first(model_3d):
    probs = np.zeros((2, 6, 4, 4), np.float32)
    probs[0] = 1.0  # certain everywhere ...
    for plane, p in ((4, 0.5), (1, 0.7), (2, 0.9)):  # ... except these planes
        probs[0, plane], probs[1, plane] = p, 1 - p
    image = np.zeros((6, 4, 4), np.uint16)
    suggestions = suggest_slices(model_3d, image, k=3, probabilities=probs)
    assert [s.plane for s in suggestions] == [4, 1, 2]
    assert all(isinstance(s, Suggestion) and s.axis == 0 for s in suggestions)
    assert suggestions[0].score == pytest.approx(np.log(2), rel=1e-5)
    assert suggestions[0].describe().startswith("plane 4")
    # already annotated planes are skipped
    assert [
        s.plane for s in suggest_slices(model_3d, image, k=2, probabilities=probs, exclude=[4])
    ] == [1, 2]


def test_suggest_on_a_real_prediction_covers_valid_planes(model_3d):
    image = data.nuclei_3d(shape=(8, 32, 32), n_objects=4, seed=2).image
    suggestions = suggest_slices(model_3d, image, k=5, device="cpu")
    assert len(suggestions) == 5
    scores = [s.score for s in suggestions]
    assert scores == sorted(scores, reverse=True)
    assert len({s.plane for s in suggestions}) == 5
    probs = predict(model_3d, image, device="cpu")
    per_plane = predictive_entropy(probs).mean(axis=(1, 2))
    assert suggestions[0].plane == int(np.argmax(per_plane))


def test_mc_dropout_averages_stochastic_passes(model_3d):
    image = data.nuclei_3d(shape=(8, 32, 32), n_objects=4, seed=2).image
    a = suggest_slices(model_3d, image, k=8, mc_dropout=3, device="cpu")
    b = suggest_slices(model_3d, image, k=8, device="cpu")
    assert len(a) == 8
    assert {s.plane for s in a} == set(range(8))
    assert [s.score for s in a] != [s.score for s in b]
    # dropout sampling was switched off again afterwards
    np.testing.assert_array_equal(
        predict(model_3d, image, device="cpu"), predict(model_3d, image, device="cpu")
    )


def test_mc_dropout_without_dropout_layers_is_a_clear_error():
    sample = data.nuclei_2d(shape=(32, 32), n_objects=3)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs=TINY,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
    )
    with pytest.raises(ValueError, match="dropout"):
        suggest_slices(model, sample.image, mc_dropout=2, device="cpu")


def test_2d_tiles_ranked_with_boxes():
    sample = data.nuclei_2d(shape=(64, 96), n_objects=6)
    model = train(
        sample.image,
        sample.semantic,
        network_kwargs=TINY,
        patch_size=(32, 32),
        max_epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
    )
    probs = np.zeros((2, 64, 96), np.float32)
    probs[0] = 1.0
    probs[:, 32:64, 64:96] = 0.5
    suggestions = suggest_slices(model, sample.image, k=3, probabilities=probs)
    assert suggestions[0].box == (32, 64, 64, 96)
    assert suggestions[0].center == (48.0, 80.0)
    assert len(suggestions) == 3
    every = suggest_slices(model, sample.image, k=100, tile_size=(32, 32), device="cpu")
    assert len(every) == 6  # 2 x 3 tiles cover the image
    # Without a tile size, the patch-sized tiles shrink until there are k of them.
    many = suggest_slices(model, sample.image, k=10, probabilities=probs)
    assert len(many) == 10
    assert len({s.box for s in many}) == 10
    assert many[0].score == pytest.approx(np.log(2), rel=1e-5)


def test_tile_grid_covers_the_image_once():
    for k in (1, 6, 7, 50):
        tiles = tile_grid((64, 96), (32, 32), k, shrink=True)
        assert len(tiles) >= k
        cover = np.zeros((64, 96), int)
        for r0, c0, r1, c1 in tiles:
            cover[r0:r1, c0:c1] += 1
        assert (cover == 1).all()
    assert len(tile_grid((64, 96), (32, 32), 50)) == 6  # no shrinking unless asked
    assert len(tile_grid((2, 2), (32, 32), 9, shrink=True)) == 4  # single pixels at most


def test_suggest_events_reports_progress_over_all_passes_and_cancels(model_3d):
    image = data.nuclei_3d(shape=(8, 32, 32), n_objects=4, seed=2).image
    events = []
    suggestions = run_to_end(
        suggest_events(model_3d, image, k=2, mc_dropout=2, device="cpu", batch_size=1),
        events.append,
    )
    assert len(suggestions) == 2
    assert {e.stage for e in events} == {"mc dropout"}
    assert [e.done for e in events] == list(range(1, len(events) + 1))
    assert events[-1].done == events[-1].total
    with pytest.raises(JobCancelled):
        suggest_slices(model_3d, image, k=2, device="cpu", cancel=lambda: True)


def test_bad_arguments():
    probs = np.full((2, 4, 4, 4), 0.5, np.float32)
    with pytest.raises(ValueError, match="k >= 1"):
        suggest_slices(None, None, k=0, probabilities=probs)
    with pytest.raises(ValueError, match="axis"):
        suggest_slices(None, None, axis=3, probabilities=probs)
