"""SAM dock tools (refine selected label, refine all, segment everything) in a real viewer.

A shown napari viewer, the real dock, a tiny random SAM (``make_tiny_sam``), real
button clicks and a real Ctrl+Z key press on the canvas. What is checked is what
an annotator relies on: one undo step per write, ids kept, rejected objects and
other objects untouched, Reject and Cancel changing nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("napari")

from _canvas import SHIFT, click, key, show_viewer
from qtpy.QtCore import Qt

from napari_seglab._widgets.sam_tools_everything import EVERYTHING_LAYER, added_objects
from napari_seglab.data import nuclei_2d, nuclei_3d
from napari_seglab.sam import (
    EmbeddingCache,
    PromptSegmenter,
    SamInput,
    refine_all,
    refine_object,
    segment_everything,
)

WIDGET = "SAM prompting"
LEFT = Qt.MouseButton.LeftButton
CTRL = Qt.KeyboardModifier.ControlModifier
#: Small, permissive segment-everything settings: a tiny random model finds objects fast.
QUICK = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def tiny_sam(one_torch_thread, make_tiny_sam):
    return make_tiny_sam(seed=3)


@pytest.fixture(scope="module")
def sample():
    return nuclei_2d((96, 96), n_objects=8, seed=1)


def open_tools(viewer, qtbot, image, labels, model):
    """The dock on ``image`` with ``labels`` as its target; returns (dock widget, tools panel)."""
    show_viewer(viewer, qtbot)
    viewer.add_image(image, name="cells")
    target = None if labels is None else viewer.add_labels(labels.copy(), name="objects")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", WIDGET)
    widget.set_model(model)
    widget.form.image.value = viewer.layers["cells"]
    widget.form.target.value = target
    return widget, widget.tools_panel


def press(qtbot, tools, button, timeout=20000):
    qtbot.mouseClick(button, LEFT)
    qtbot.waitUntil(lambda: not tools.busy, timeout=timeout)


def undo_key(viewer, qtbot, layer):
    """A real Ctrl+Z on the canvas with ``layer`` selected (napari's own undo binding)."""
    viewer.layers.selection.active = layer
    key(viewer, qtbot, Qt.Key.Key_Z, CTRL)


def test_refine_all_one_undo_step_keeps_ids_and_rejected_objects(
    make_napari_viewer, qtbot, tiny_sam, sample
):
    original = sample.labels.astype(np.int32)
    # The core with no thresholds gives each object's overlap; the median splits them
    # into accepted and rejected so both kinds are checked.
    segmenter = PromptSegmenter(tiny_sam, EmbeddingCache(max_items=2))
    # (A random model's predicted IoU may be negative: -1 is the spin box's lowest.)
    free = refine_all(segmenter, sample.image, original, min_score=-1.0, min_overlap=0.0)
    min_overlap = round(float(np.median([r.overlap for r in free.records])), 2)  # spin box
    expected = refine_all(
        segmenter, sample.image, original, min_score=-1.0, min_overlap=min_overlap
    )
    assert expected.accepted
    assert expected.rejected

    viewer = make_napari_viewer()
    _widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    tools.refine_form.min_score.value = -1.0
    tools.refine_form.min_overlap.value = min_overlap
    press(qtbot, tools, tools.refine_all_button)

    np.testing.assert_array_equal(labels.data, expected.labels)
    assert not np.array_equal(labels.data, original)
    assert set(np.unique(labels.data)) <= set(np.unique(original))  # ids kept
    for record in expected.rejected:  # rejected objects untouched, pixel for pixel
        object_id = record.object_id
        np.testing.assert_array_equal(labels.data == object_id, original == object_id)
    text = tools.status.text()
    assert f"{len(expected.accepted)} accepted, {len(expected.rejected)} rejected" in text

    undo_key(viewer, qtbot, labels)  # ONE undo step takes the whole run back
    np.testing.assert_array_equal(labels.data, original)


def test_refine_selected_label_changes_only_that_object(
    make_napari_viewer, qtbot, tiny_sam, sample
):
    original = sample.labels.astype(np.int32)
    viewer = make_napari_viewer()
    _widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    ids = [int(i) for i in np.unique(original) if i]
    changed = None
    for object_id in ids:  # the first object the tiny model changes at all
        labels.selected_label = object_id
        press(qtbot, tools, tools.refine_button)
        if not np.array_equal(labels.data, original):
            changed = object_id
            break
    assert changed is not None, tools.status.text()
    diff = labels.data != original
    assert np.all((original[diff] == changed) | (labels.data[diff] == changed))
    others = (original != changed) & (original != 0)
    np.testing.assert_array_equal(labels.data[others], original[others])  # no neighbour eaten
    assert f"Label {changed} refined" in tools.status.text()
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    labels.selected_label = max(ids) + 5  # not in the layer: a clear message, nothing written
    press(qtbot, tools, tools.refine_button)
    assert f"Label {max(ids) + 5}" in tools.status.text()
    np.testing.assert_array_equal(labels.data, original)


def set_everything(tools, **settings):
    for name, value in {**QUICK, **settings}.items():
        getattr(tools.everything_form, name).value = value


def test_segment_everything_preview_accept_undo_reject(
    make_napari_viewer, qtbot, tiny_sam, sample
):
    original = np.zeros((96, 96), np.int32)
    original[5:20, 5:20] = 7  # an existing object, kept (no overwrite)
    viewer = make_napari_viewer()
    widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    set_everything(tools)
    press(qtbot, tools, tools.everything_button)
    preview = viewer.layers[EVERYTHING_LAYER]
    assert preview.data.max() > 0
    assert preview not in [layer for _, layer in widget._labels_choices()]  # never a target
    found = preview.data.copy()
    np.testing.assert_array_equal(
        found, segment_everything(tiny_sam, sample.image, **QUICK).labels
    )

    qtbot.mouseClick(tools.accept_button, LEFT)
    assert EVERYTHING_LAYER not in viewer.layers
    new = labels.data > 7
    assert new.any()
    np.testing.assert_array_equal(labels.data == 7, original == 7)  # old object untouched
    expected_ids = {int(i) + 7 for i in np.unique(found[(found > 0) & (original == 0)])}
    assert set(np.unique(labels.data[new]).tolist()) == expected_ids
    undo_key(viewer, qtbot, labels)
    np.testing.assert_array_equal(labels.data, original)

    press(qtbot, tools, tools.everything_button)
    assert EVERYTHING_LAYER in viewer.layers
    qtbot.mouseClick(tools.reject_button, LEFT)
    assert EVERYTHING_LAYER not in viewer.layers
    np.testing.assert_array_equal(labels.data, original)


def test_segment_everything_visible_plane_of_a_stack_into_a_new_layer(
    make_napari_viewer, qtbot, tiny_sam
):
    stack = nuclei_3d((6, 64, 64), (8.0, 1.0, 1.0), n_objects=4, seed=2).image
    viewer = make_napari_viewer()
    widget, tools = open_tools(viewer, qtbot, stack, None, tiny_sam)
    viewer.dims.set_current_step(0, 2)
    set_everything(tools, points_per_side=4)
    press(qtbot, tools, tools.everything_button)
    preview = viewer.layers[EVERYTHING_LAYER].data
    assert preview.shape == (6, 64, 64)
    assert preview[2].any()
    assert not np.delete(preview, 2, axis=0).any()
    tools.accept_everything()
    labels = viewer.layers["SAM labels"]
    assert widget.form.target.value is labels
    assert labels.data[2].any()
    assert not np.delete(labels.data, 2, axis=0).any()


def test_cancel_leaves_layers_unchanged(make_napari_viewer, qtbot, tiny_sam, sample):
    original = sample.labels.astype(np.int32)
    viewer = make_napari_viewer()
    _widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    names = [layer.name for layer in viewer.layers]
    set_everything(tools, points_per_side=64)  # 4096 prompts: long enough to cancel
    qtbot.mouseClick(tools.everything_button, LEFT)
    qtbot.waitUntil(lambda: "segment everything" in tools.status.text(), timeout=20000)
    qtbot.mouseClick(tools.cancel_button, LEFT)
    qtbot.waitUntil(lambda: not tools.busy, timeout=20000)
    assert "Cancelled" in tools.status.text()
    assert [layer.name for layer in viewer.layers] == names
    np.testing.assert_array_equal(labels.data, original)

    qtbot.mouseClick(tools.refine_all_button, LEFT)
    qtbot.mouseClick(tools.cancel_button, LEFT)
    qtbot.waitUntil(lambda: not tools.busy, timeout=20000)
    np.testing.assert_array_equal(labels.data, original)
    assert tools.everything_button.isEnabled()
    assert not tools.cancel_button.isEnabled()


def test_added_objects_new_ids_above_max_and_background_only():
    target = np.array([[0, 3], [0, 0]], np.uint8)
    new = np.array([[1, 1], [2, 0]], np.int32)
    indices, values = added_objects(target, new)
    out = target.copy()
    out[indices] = values
    np.testing.assert_array_equal(out, [[4, 3], [5, 0]])
    indices, values = added_objects(target, new, overwrite=True)
    out = target.copy()
    out[indices] = values
    np.testing.assert_array_equal(out, [[4, 4], [5, 0]])
    with pytest.raises(ValueError, match="do not fit"):
        added_objects(np.full((1, 1), 255, np.uint8), np.ones((1, 1), np.int32))
    with pytest.raises(ValueError, match="shape"):
        added_objects(target, new[:1])


def test_refine_selected_label_uses_the_clicked_corrective_points(
    make_napari_viewer, qtbot, tiny_sam, sample
):
    original = sample.labels.astype(np.int32)
    viewer = make_napari_viewer()
    widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    qtbot.mouseClick(widget.start_button, LEFT)
    viewer.reset_view()
    qtbot.wait(20)
    object_id = int(original[np.nonzero(original)][0])
    rows, cols = np.nonzero(original == object_id)
    centre = (float(rows.mean()), float(cols.mean()))
    beside = (centre[0], centre[1] + (10 if centre[1] < 48 else -10))  # towards the middle
    click(viewer, qtbot, beside, SHIFT)  # a negative corrective point
    qtbot.waitUntil(lambda: len(widget.session.prompts().points) == 1, timeout=5000)
    prompts = widget.session.prompts()
    points, positive = prompts.points.copy(), prompts.positive.copy()
    qtbot.waitUntil(lambda: not widget.busy, timeout=20000)

    labels.selected_label = object_id
    press(qtbot, tools, tools.refine_button)
    segmenter = PromptSegmenter(tiny_sam, EmbeddingCache(max_items=2))
    expected = refine_object(
        segmenter,
        original,
        object_id,
        points=points,
        point_labels=positive.astype(int),
        image=sample.image,
    )
    assert not positive[0]
    alone = refine_object(segmenter, original, object_id, image=sample.image)
    assert not np.array_equal(alone.mask, expected.mask)  # the point made a difference
    np.testing.assert_array_equal(labels.data == object_id, expected.mask)
    assert not widget.session.has_prompts  # the corrective points are used up
    assert len(widget.prompt_layers.points.data) == 0
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)


def test_refine_all_on_a_stack_visible_plane_or_every_plane(make_napari_viewer, qtbot, tiny_sam):
    sample = nuclei_3d((6, 64, 64), (8.0, 1.0, 1.0), n_objects=4, seed=2)
    original = sample.labels.astype(np.int32)
    viewer = make_napari_viewer()
    _widget, tools = open_tools(viewer, qtbot, sample.image, original, tiny_sam)
    labels = viewer.layers["objects"]
    viewer.dims.set_current_step(0, 2)
    tools.refine_form.min_score.value = -1.0
    tools.refine_form.min_overlap.value = 0.0
    segmenter = PromptSegmenter(tiny_sam, EmbeddingCache(max_items=8))
    options = {"min_score": -1.0, "min_overlap": 0.0}

    press(qtbot, tools, tools.refine_all_button)  # "visible plane" (the default)
    rgb_plane = SamInput(sample.image).plane(2)  # the stack's normalisation, as the dock
    plane = refine_all(segmenter, rgb_plane, original[2], rgb=True, **options)
    np.testing.assert_array_equal(labels.data[2], plane.labels)
    np.testing.assert_array_equal(np.delete(labels.data, 2, 0), np.delete(original, 2, 0))
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    tools.refine_form.stack.value = "every plane"
    press(qtbot, tools, tools.refine_all_button)
    whole = refine_all(segmenter, sample.image, original, **options)
    assert {r.plane for r in whole.records} > {2}
    np.testing.assert_array_equal(labels.data, whole.labels)
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    tools.refine_form.stack.value = "propagation"
    press(qtbot, tools, tools.refine_all_button)
    carried = refine_all(segmenter, sample.image, original, through="propagation", **options)
    assert not np.array_equal(carried.labels, whole.labels)  # the mode reached the core
    np.testing.assert_array_equal(labels.data, carried.labels)
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)

    tools.refine_form.stack.value = "visible plane"
    object_id = int(np.max(original[2]))
    labels.selected_label = object_id
    press(qtbot, tools, tools.refine_button)
    expected = refine_object(
        segmenter, original[2], object_id, image=SamInput(rgb_plane, rgb=True)
    )
    np.testing.assert_array_equal(labels.data[2] == object_id, expected.mask)
    np.testing.assert_array_equal(np.delete(labels.data, 2, 0), np.delete(original, 2, 0))
    others = original[2] != object_id
    np.testing.assert_array_equal(
        labels.data[2][others & (original[2] > 0)], original[2][others & (original[2] > 0)]
    )


def test_segment_everything_all_planes_linked_and_preview_gone_with_the_dock(
    make_napari_viewer, qtbot, tiny_sam
):
    stack = nuclei_3d((3, 64, 64), (16.0, 1.0, 1.0), n_objects=4, seed=2).image
    viewer = make_napari_viewer()
    original = np.zeros((3, 64, 64), np.int32)
    _widget, tools = open_tools(viewer, qtbot, stack, original, tiny_sam)
    set_everything(tools, points_per_side=4, all_planes=True)
    press(qtbot, tools, tools.everything_button)
    preview = viewer.layers[EVERYTHING_LAYER].data
    np.testing.assert_array_equal(
        preview, segment_everything(tiny_sam, stack, **QUICK | {"points_per_side": 4}).labels
    )
    assert all(preview[z].any() for z in range(3))
    qtbot.mouseClick(tools.accept_button, LEFT)
    labels = viewer.layers["objects"]
    np.testing.assert_array_equal(labels.data, preview)  # empty target: ids + 0
    labels.undo()
    assert not labels.data.any()

    press(qtbot, tools, tools.everything_button)
    assert EVERYTHING_LAYER in viewer.layers
    viewer.window.remove_dock_widget("all")  # closing the dock removes its preview
    qtbot.wait(50)
    assert EVERYTHING_LAYER not in viewer.layers
    assert "objects" in viewer.layers
