"""SAM prompting latency measures keep what the user sees: real clicks in a shown viewer.

The preview is redrawn only where it changed and repaints are held while a
quick prediction runs (``_widgets/_preview.py``); these tests check that the
preview still equals the session's mask, that what is drawn equals a full
redraw, that rapid clicks end on the preview of all their prompts, and that
held repaints always resume.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from _canvas import NO_MODIFIER, SHIFT, canvas_pos, click, show_viewer
from qtpy.QtCore import Qt

from napari_seglab.data import nuclei_2d, nuclei_3d
from napari_seglab.sam import PromptSegmenter


@pytest.fixture(scope="module")
def tiny_sam(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


def open_widget(viewer, qtbot, image, model):
    show_viewer(viewer, qtbot)
    viewer.add_image(image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    widget.set_model(model)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    viewer.reset_view()
    qtbot.wait(20)
    return widget


def settled(qtbot, widget, previous=None):
    """Wait until a new prediction is shown and the window repaints again."""
    layers = widget.prompt_layers
    qtbot.waitUntil(
        lambda: (
            widget.session.prediction is not None
            and widget.session.prediction is not previous
            and not widget.busy
            and not layers.hold.held
        ),
        timeout=30000,
    )
    qtbot.wait(30)
    return widget.session.prediction


def canvas_pixels(viewer) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def test_preview_equals_mask_and_full_redraw_after_each_click(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((128, 128), n_objects=10, seed=4).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    layers = widget.prompt_layers
    previous = None
    masks = []
    for position in ((40, 50), (90, 30), (64, 100)):
        click(viewer, qtbot, position)
        previous = settled(qtbot, widget, previous)
        mask = widget.session.mask()
        masks.append(mask)
        np.testing.assert_array_equal(layers.preview.data > 0, mask)
        assert layers.preview.data.max() <= 1
    assert len({m.tobytes() for m in masks}) > 1  # the clicks changed the mask
    assert layers.painter.partial_updates > 0  # redrawn through the partial path
    assert layers.hold.holds > 0
    assert not layers.hold.held
    # The layer list's thumbnail follows a moment later.
    qtbot.waitUntil(lambda: np.asarray(layers.preview.thumbnail)[..., 3].any(), timeout=3000)
    # What the canvas shows equals a redraw of the whole preview layer.
    partial = canvas_pixels(viewer)
    layers.preview.refresh()
    qtbot.wait(30)
    np.testing.assert_array_equal(partial, canvas_pixels(viewer))
    # Removing every prompt clears the preview (the old mask's region is cleared).
    layers.points.data = np.zeros((0, 2))
    qtbot.waitUntil(lambda: widget.session.prediction is None and not widget.busy, timeout=30000)
    assert not layers.preview.data.any()


def test_rapid_clicks_end_on_the_preview_of_all_prompts(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    click(viewer, qtbot, (40, 50))
    first = settled(qtbot, widget)
    for position in ((20, 20), (70, 30), (50, 80)):  # faster than the prompt thread
        click(viewer, qtbot, position)
    settled(qtbot, widget, first)
    prompts = widget.session.prompts()
    assert len(prompts.points) == 4
    direct = PromptSegmenter(tiny_sam)
    direct.set_image(image)
    expected = direct.predict(**prompts.predict_kwargs())
    np.testing.assert_array_equal(
        widget.prompt_layers.preview.data > 0, expected.mask_at(int(expected.best))
    )


def test_stack_preview_moves_between_planes(make_napari_viewer, qtbot, tiny_sam):
    viewer = make_napari_viewer()
    stack = nuclei_3d(shape=(8, 64, 64), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, stack, tiny_sam)
    widget.form.neighbours.value = False
    preview = widget.prompt_layers.preview
    viewer.dims.set_current_step(0, 2)
    click(viewer, qtbot, (2, 30, 30))
    first = settled(qtbot, widget)
    np.testing.assert_array_equal(preview.data[2] > 0, widget.session.mask())
    widget.session.clear_prompts()
    viewer.dims.set_current_step(0, 5)
    click(viewer, qtbot, (5, 40, 24))
    settled(qtbot, widget, first)
    assert widget.session.prediction_plane == 5
    np.testing.assert_array_equal(preview.data[5] > 0, widget.session.mask())
    assert not np.delete(preview.data, 5, axis=0).any()


def test_held_repaints_resume_without_a_result(make_napari_viewer, qtbot, tiny_sam):
    """A prompt change that brings no preview (no model yet) still lets the window repaint."""
    viewer = make_napari_viewer()
    image = nuclei_2d((64, 64), n_objects=4, seed=2).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    layers = widget.prompt_layers
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws = []
    canvas.events.draw.connect(lambda event: draws.append(event))
    widget.session.model = None  # the widget ignores prompt changes without a model
    click(viewer, qtbot, (30, 30))
    assert layers.hold.held
    held_draws = len(draws)
    qtbot.wait(int(layers.hold.max_hold * 1000) + 200)
    assert not layers.hold.held
    assert len(draws) > held_draws  # the new point was drawn after all


def test_a_click_asks_once_and_a_drag_adds_nothing(make_napari_viewer, qtbot, tiny_sam):
    """The prediction is asked for on release, before napari adds the point: once per click."""
    viewer = make_napari_viewer()
    image = nuclei_2d((96, 96), n_objects=8, seed=1).image
    widget = open_widget(viewer, qtbot, image, tiny_sam)
    layers = widget.prompt_layers
    asked = []
    request = widget.request_prediction
    widget.request_prediction = lambda plane: (asked.append(plane), request(plane))
    previous = None
    for n, position in enumerate(((40, 50), (60, 20)), start=1):
        click(viewer, qtbot, position, SHIFT if n == 2 else NO_MODIFIER)
        assert len(asked) == n  # not a second time when napari adds the point
        previous = settled(qtbot, widget, previous)
        assert layers._pending is None
        np.testing.assert_allclose(widget.session.prompts().points, layers.points.data)
        assert widget.session.prompts().positive.tolist() == [True, False][:n]
    # A drag in add mode pans the view: no point, no prompt, no request.
    native = viewer.window._qt_viewer.canvas.native
    start, end = canvas_pos(viewer, (30, 30)), canvas_pos(viewer, (70, 70))
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, NO_MODIFIER, start)
    for k in range(1, 6):
        qtbot.mouseMove(native, start + (end - start) * (k / 5))
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, NO_MODIFIER, end)
    qtbot.wait(50)
    assert len(layers.points.data) == 2
    assert len(widget.session.prompts().points) == 2
    assert len(asked) == 2
    assert layers._pending is None
