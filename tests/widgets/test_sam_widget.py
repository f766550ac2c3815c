"""SAM prompting widget in a real viewer: click, preview, commit two objects, undo one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.interactions import (
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import Qt

from napari_seglab.data import nuclei_2d, nuclei_3d
from napari_seglab.sam import PromptSegmenter, build_tiny_sam


@dataclass
class MouseEvent:
    """The fields napari's layer mouse bindings read from a vispy mouse event."""

    type: str
    position: tuple
    modifiers: list = field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [0, 1])


def click(layer, position, modifiers=()):
    """Press and release the mouse at ``position`` (world coordinates) on ``layer``."""
    for kind, callbacks in (
        ("mouse_press", mouse_press_callbacks),
        ("mouse_release", mouse_release_callbacks),
    ):
        event = MouseEvent(kind, tuple(position), list(modifiers))
        event.dims_displayed = list(range(len(position)))[-2:]
        callbacks(layer, ReadOnlyWrapper(event, exceptions=("handled",)))


def press_key(layer, key: str) -> None:
    """Run the layer's binding for ``key`` as napari's key handler does."""
    layer.keymap[coerce_keybinding(key)](layer)


def open_widget(viewer, qtbot, image):
    viewer.add_image(image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    widget.set_model(build_tiny_sam(seed=0))
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.points_layer is not None
    return widget


def wait_for_prediction(qtbot, widget):
    qtbot.waitUntil(
        lambda: widget.prediction is not None and widget._worker is None, timeout=30000
    )


def test_click_commit_two_objects_and_undo(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image)
    assert "Shift+click" in widget.help_label.text()
    points = widget.points_layer

    click(points, (40, 50))
    wait_for_prediction(qtbot, widget)
    first = widget.prediction
    assert len(first.scores) == 3
    assert "Proposals" in widget.scores_label.text()
    assert widget.preview_layer.data.any()

    click(points, (70, 20), modifiers=["Shift"])  # negative point
    assert points.features["positive"].tolist() == [True, False]
    face = np.asarray(points.face_color)
    assert not np.allclose(face[0], face[1])
    qtbot.waitUntil(
        lambda: widget.prediction is not first and widget._worker is None, timeout=30000
    )
    assert not np.array_equal(widget.prediction.logits, first.logits)

    # Cycle the proposals: the preview follows.
    shown = widget.preview_layer.data.copy()
    before = widget.proposal
    qtbot.mouseClick(widget.next_button, Qt.MouseButton.LeftButton)
    assert widget.proposal == (before + 1) % len(widget.prediction.scores)
    expected = widget.prediction.mask_at(widget.proposal)
    np.testing.assert_array_equal(widget.preview_layer.data > 0, expected)
    assert len(widget.prediction.scores) == 1 or not np.array_equal(shown > 0, expected)

    qtbot.mouseClick(widget.commit_button, Qt.MouseButton.LeftButton)
    labels = viewer.layers["SAM labels"]
    assert set(np.unique(labels.data)) == {0, 1}
    assert len(points.data) == 0  # prompts cleared for the next object
    assert not widget.preview_layer.data.any()
    object_one = labels.data == 1

    click(points, (20, 80))
    wait_for_prediction(qtbot, widget)
    press_key(points, "Enter")  # the key binding of the SAM points layer
    assert widget.prediction is None
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 1, object_one)  # existing labels preserved

    labels.undo()
    assert set(np.unique(labels.data)) == {0, 1}
    np.testing.assert_array_equal(labels.data == 1, object_one)


def test_stack_prompting_uses_current_plane_and_propagates(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = nuclei_3d(shape=(6, 48, 48), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, stack)
    viewer.dims.set_current_step(0, 3)
    qtbot.waitUntil(lambda: widget.cache.has(_key(widget, stack, 3), widget.model), timeout=30000)
    click(widget.points_layer, (3, 24, 24))
    wait_for_prediction(qtbot, widget)
    assert widget._prediction_plane == 3
    preview = widget.preview_layer.data
    assert preview[3].any()
    assert not preview[[0, 1, 2, 4, 5]].any()

    widget.proposal = int(np.argmax([m.sum() for m in widget.prediction.masks]))
    widget.propagate()
    qtbot.waitUntil(lambda: "SAM labels" in viewer.layers, timeout=30000)
    labels = viewer.layers["SAM labels"]
    assert labels.data.shape == stack.shape
    assert (labels.data[3] == 1).any()


def _key(widget, stack, plane):
    from napari_seglab.sam.embedding import embedding_key

    return embedding_key(widget.model, widget._source.plane(plane))


def test_large_encoder_on_cpu_shows_warning(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    model = build_tiny_sam(
        seed=0,
        encoder_embed_dim=1024,
        encoder_depth=1,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(0,),
    )
    widget.set_model(model)
    assert widget.warning_label.isVisibleTo(widget)
    assert "CPU" in widget.warning_label.text()


def test_box_prompt_and_escape(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image)
    widget.box_layer.add_rectangles(np.array([[20.0, 30.0], [60.0, 80.0]]))
    wait_for_prediction(qtbot, widget)
    direct = PromptSegmenter(widget.model)
    direct.set_image(image)
    expected = direct.predict(box=(20, 30, 60, 80), multimask=False)
    assert len(widget.prediction.scores) == 1
    np.testing.assert_array_equal(widget.preview_layer.data > 0, expected.mask)
    press_key(widget.points_layer, "Escape")
    assert widget.prediction is None
    assert len(widget.box_layer.data) == 0
    assert not widget.preview_layer.data.any()
