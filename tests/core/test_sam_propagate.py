"""3D propagation through a synthetic stack.

Recovering an object needs a segmenter that actually segments; random-weight
SAMs do not and no weights can be downloaded here. The quality test therefore
uses a *mask oracle*: a classical segmenter with the same interface as
``PromptSegmenter`` (threshold the plane, keep the connected components under
the positive points). It exercises everything ``propagate`` owns: the prompts
derived from the neighbour plane, both directions, and stopping where the
object ends (a second object beyond a gap must not be swallowed). A tiny SAM
then checks the same code path end-to-end with the real segmenter and cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from napari_seglab.jobs import JobCancelled, run_to_end  # noqa: E402
from napari_seglab.sam import (  # noqa: E402
    EmbeddingCache,
    PromptSegmenter,
    SamInput,
    propagate,
    propagate_steps,
)


@dataclass
class OraclePrediction:
    mask: np.ndarray
    scores: np.ndarray
    best: int = 0
    logits: None = None


class ThresholdOracle:
    """Segments bright structures under the positive points (same API as PromptSegmenter)."""

    def __init__(self) -> None:
        self.prompts: list[dict] = []
        self.planes: list[int] = []

    def set_image(self, source: SamInput, plane: int) -> None:
        self.planes.append(plane)
        self.components, _ = ndi.label(source.plane(plane)[..., 0] > 100)

    def predict(self, points, labels, box, mask_input, multimask):
        self.prompts.append({"points": points, "box": box, "mask_input": mask_input})
        ids = {self.components[int(r), int(c)] for (r, c), lab in zip(points, labels) if lab == 1}
        ids.discard(0)
        mask = np.isin(self.components, list(ids)) if ids else np.zeros_like(self.components, bool)
        return OraclePrediction(mask, np.array([1.0 if mask.any() else 0.0]))


def ellipsoid(shape, centre, radii):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


@pytest.fixture(scope="module")
def scene():
    shape = (32, 64, 64)
    target = ellipsoid(shape, (14, 30, 34), (7.5, 14, 11))  # planes 7..21
    beyond = ellipsoid(shape, (27, 30, 34), (3.5, 10, 10))  # planes 24..30, after a gap
    aside = ellipsoid(shape, (14, 10, 8), (6, 5, 5))  # same planes, elsewhere
    rng = np.random.default_rng(0)
    image = 40.0 + 160.0 * ndi.gaussian_filter((target | beyond | aside).astype(float), 1.0)
    image += rng.normal(0, 8, shape)
    return np.clip(image, 0, 255).astype(np.uint8), target


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_propagation_recovers_the_object_and_stops_at_its_end(scene):
    image, target = scene
    oracle = ThresholdOracle()
    result = propagate(image, 14, target[14], segmenter=oracle)
    assert result.shape == image.shape
    assert result.dtype == bool
    assert dice(result, target) >= 0.9
    planes = np.flatnonzero(result.any(axis=(1, 2)))
    assert planes.min() >= 6
    assert planes.max() <= 22
    # Each plane was prompted from its neighbour: box around and point inside it.
    first = oracle.prompts[0]
    (row, col), (r0, c0, r1, c1) = first["points"][0], first["box"]
    assert target[14, row, col]
    assert r0 <= row <= r1
    assert c0 <= col <= c1
    assert first["mask_input"].shape == target[14].shape  # seed mask used as mask prompt
    assert set(oracle.planes) >= {13, 15}


def test_steps_cover_both_directions_and_report_the_stop(scene):
    image, target = scene
    steps = propagate_steps(image, 14, target[14], segmenter=ThresholdOracle())
    events = []
    result = run_to_end(steps, events.append)
    assert {e.stage for e in events} == {"propagating"}
    assert [e.done for e in events] == list(range(1, len(events) + 1))
    assert {e.direction for e in events} == {1, -1}
    stops = [e for e in events if not e.accepted]
    assert len(stops) == 2
    assert all(e.score == 0.0 or e.iou < 0.3 for e in stops)  # object ended: nothing / sliver
    assert np.flatnonzero(result.any(axis=(1, 2))).size == sum(e.accepted for e in events) + 1


def test_cancel_and_limits(scene):
    image, target = scene
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled) as cancelled:
        propagate(image, 14, target[14], segmenter=ThresholdOracle(), cancel=cancel)
    only_seed = cancelled.value.partial  # the volume so far: the seed plane only
    assert np.flatnonzero(only_seed.any(axis=(1, 2))).tolist() == [14]
    near = propagate(image, 14, target[14], segmenter=ThresholdOracle(), max_planes=2)
    assert np.flatnonzero(near.any(axis=(1, 2))).tolist() == [12, 13, 14, 15, 16]
    with pytest.raises(ValueError, match="seed mask is empty"):
        propagate(image, 14, np.zeros((64, 64), bool), segmenter=ThresholdOracle())
    with pytest.raises(ValueError, match="plane shape"):
        propagate(image, 14, np.ones((8, 8), bool), segmenter=ThresholdOracle())
    with pytest.raises(ValueError, match="out of range"):
        propagate(image, 40, target[14], segmenter=ThresholdOracle())


def test_propagation_with_a_tiny_sam_uses_the_cache(scene, make_tiny_sam):
    image, target = scene
    small = image[10:19, ::2, ::2]
    seed = target[14, ::2, ::2]
    model = make_tiny_sam(seed=4)
    calls = []
    model.sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    segmenter = PromptSegmenter(model, EmbeddingCache(max_items=16))
    result = propagate(small, 4, seed, segmenter=segmenter, min_score=-np.inf, min_iou=0.0)
    assert result.shape == small.shape
    np.testing.assert_array_equal(result[4], seed)
    visited = len(calls)
    assert 1 <= visited <= small.shape[0] - 1
    # Propagating again from the same plane embeds nothing new.
    again = propagate(small, 4, seed, segmenter=segmenter, min_score=-np.inf, min_iou=0.0)
    assert len(calls) == visited
    np.testing.assert_array_equal(again, result)
