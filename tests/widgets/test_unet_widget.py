"""The U-Net dock widget in a real viewer: train with a live plot, predict, suggest, cancel."""

from __future__ import annotations

# MONAI (and through it torchvision and triton) must load before the first viewer: importing
# triton after napari created its OpenGL context segfaults under Mesa's llvmpipe (two LLVM
# copies in one process), which is what Xvfb gives us here.
import re

import monai.networks.nets  # noqa: F401
import numpy as np
import pytest
from _quit import quit_when_running, run_and_quit
from qtpy.QtCore import Qt

from napari_seglab import data
from napari_seglab.unet import SegmentationModel, predict, probabilities_to_labels

DISPLAY_NAME = "U-Net train / predict"
ANGLE = np.deg2rad(20)
ROTATION = np.array(
    [[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]]
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def open_widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", DISPLAY_NAME)
    return widget


def wait_done(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


def small_settings(widget, epochs=3):
    widget.patch_size.value = "32 32"
    widget.epochs.value = epochs
    widget.batch_size.value = 2
    widget.augment.value = False
    widget.device.value = "cpu"
    widget.learning_rate.value = 0.003


def snapshot(viewer):
    return [(layer.name, type(layer).__name__, np.array(layer.data)) for layer in viewer.layers]


def assert_same_layers(viewer, before):
    after = snapshot(viewer)
    assert [(n, t) for n, t, _ in after] == [(n, t) for n, t, _ in before]
    for (_, _, a), (_, _, b) in zip(after, before):
        np.testing.assert_array_equal(a, b)


def test_train_plot_predict_then_cancel_second_training(make_napari_viewer, qtbot, tmp_path):
    sample = data.nuclei_2d(shape=(96, 96), n_objects=10, seed=4)
    viewer = make_napari_viewer()
    # Anisotropic, translated and rotated: every new layer must land on the image's grid.
    geometry = {"scale": (0.5, 0.8), "translate": (10.0, -5.0), "affine": ROTATION}
    viewer.add_image(sample.image, name="nuclei", **geometry)
    viewer.add_labels(sample.semantic, name="annotation", **geometry)
    widget = open_widget(viewer)
    assert widget.image_combo.value is viewer.layers["nuclei"]
    assert widget.labels_combo.value is viewer.layers["annotation"]
    small_settings(widget, epochs=3)

    widget.train_button.click()
    assert not widget.train_button.isEnabled()
    assert widget.cancel_button.isEnabled()
    wait_done(qtbot, widget)

    assert widget.plot.epochs == [1, 2, 3]
    assert all(np.isfinite(widget.plot.losses))
    assert widget.plot.dices[-1] is not None
    assert len(widget.plot.loss_axes.lines) == 1  # the matplotlib curve was drawn
    assert len(widget.plot.loss_axes.lines[0].get_xdata()) == 3
    model = widget.model
    assert isinstance(model, SegmentationModel)
    assert model.classes == (0, 1)
    assert model.spacing == (0.5, 0.8)
    assert "3 epochs" in widget.model_info.text()
    assert widget.progress.value() == 100

    # 2D suggestions: as many tiles as asked, even beyond the patch-sized grid (9 tiles).
    widget.suggest_k.value = 12
    widget.suggest_button.click()
    wait_done(qtbot, widget)
    assert widget.suggestions.count() == 12
    # Each tile is outlined on the image's grid: the outline's corners, taken to the world,
    # are the world positions of the tile's corner pixels' outer edges.
    outlines = viewer.layers["U-Net suggested tiles"]
    assert len(outlines.data) == 12
    first = widget.suggestions.item(0).data(Qt.ItemDataRole.UserRole)
    r0, c0, r1, c1 = first.box
    image = viewer.layers["nuclei"]
    for corner_data in ([r0 - 0.5, c0 - 0.5], [r1 - 0.5, c1 - 0.5]):
        world_outline = outlines.data_to_world(
            outlines.data[0][np.argmin(np.abs(outlines.data[0] - corner_data).sum(axis=1))]
        )
        np.testing.assert_allclose(world_outline, image.data_to_world(corner_data), atol=1e-6)
    # MC dropout on a model without dropout: said at once, nothing started.
    widget.mc_passes.value = 2
    widget.suggest_button.click()
    assert widget._worker is None
    assert "dropout" in widget.status.text()
    assert widget.suggestions.count() == 12
    widget.mc_passes.value = 0

    widget.probability_layer.value = True
    widget.instances.value = "watershed"
    widget.predict_button.click()
    wait_done(qtbot, widget)
    labels_layer = viewer.layers["nuclei U-Net"]
    expected = probabilities_to_labels(predict(model, sample.image, device="cpu"), model.classes)
    np.testing.assert_array_equal(labels_layer.data, expected)
    assert viewer.layers["nuclei U-Net objects"].data.shape == (96, 96)
    probability = viewer.layers["nuclei U-Net P(label 1)"]
    image_layer = viewer.layers["nuclei"]
    for added in (labels_layer, viewer.layers["nuclei U-Net objects"], probability):
        np.testing.assert_allclose(added.scale, (0.5, 0.8))
        np.testing.assert_allclose(added.translate, (10.0, -5.0))
        np.testing.assert_allclose(added.affine.affine_matrix, image_layer.affine.affine_matrix)
        for point in ((0, 0), (95, 0), (40, 77)):
            np.testing.assert_allclose(
                added.data_to_world(point), image_layer.data_to_world(point), atol=1e-9
            )
    assert probability.data.dtype == np.float32
    assert float(probability.data.max()) <= 1.0

    # Save and load through the widget: same predictions.
    widget.save_model(tmp_path / "unet.pt")
    widget.load_model(tmp_path / "unet.pt")
    assert widget.model is not model
    np.testing.assert_array_equal(
        predict(widget.model, sample.image, device="cpu"),
        predict(model, sample.image, device="cpu"),
    )

    # A prediction cancelled right away adds no layer, even if it had finished meanwhile.
    before = snapshot(viewer)
    widget.predict_button.click()
    widget.cancel_button.click()
    wait_done(qtbot, widget)
    assert_same_layers(viewer, before)
    assert "no layer changed" in widget.status.text()

    # A second, long training cancelled right away: no layer changes.
    widget.epochs.value = 10_000
    widget.train_button.click()
    widget.cancel_button.click()
    wait_done(qtbot, widget)
    assert_same_layers(viewer, before)
    assert widget.train_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert len(widget.plot.epochs) <= 1
    assert "cancelled" in widget.status.text()
    assert widget.model is not None  # the loaded model, or the best epoch of the cancelled run


def test_time_budget_only_progress_and_cancel_keeps_best_epoch(make_napari_viewer, qtbot):
    sample = data.nuclei_2d(shape=(64, 64), n_objects=6, seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="nuclei")
    viewer.add_labels(sample.semantic, name="annotation")
    widget = open_widget(viewer)
    small_settings(widget, epochs=0)
    widget.time_budget.value = 600
    fractions = []

    def cancel_after_second_epoch(event):
        fractions.append(event.fraction)
        if event.epoch == 2:
            widget.cancel_button.click()

    widget.train_button.click()
    widget._worker.yielded.connect(cancel_after_second_epoch)
    wait_done(qtbot, widget)
    assert len(fractions) >= 2
    assert all(f is not None and 0 < f < 1 for f in fractions)  # elapsed / budget
    # The bar says how much of the budget is spent, not just a percentage stuck near 0.
    assert re.fullmatch(r"\d+ s of 600 s", widget.progress.format())
    assert "best epoch so far is kept" in widget.status.text()
    assert widget.model is not None
    assert [h["epoch"] for h in widget.model.history] == widget.plot.epochs

    # Closing the dock while training stops the job; nothing reaches the closed widget.
    model = widget.model
    widget.train_button.click()
    worker = widget._worker
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert widget.jobs.closed
    assert widget.model is model


def test_sparse_3d_training_then_suggestions_jump_to_plane(make_napari_viewer, qtbot):
    sample = data.nuclei_3d(shape=(8, 48, 48), n_objects=5, seed=2)
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="stack", scale=sample.spacing)
    sparse = np.full(sample.labels.shape, 0, np.uint8)
    sparse[3] = sample.semantic[3] + 1  # plane 3 annotated: 1 background, 2 nuclei
    viewer.add_labels(sparse, name="sparse", scale=sample.spacing)
    widget = open_widget(viewer)
    small_settings(widget, epochs=1)
    widget.use_ignore.value = True
    widget.ignore_value.value = 0
    widget.architecture.value = "unet"

    widget.patch_size.value = "8 32 32"  # a 3D network on the 8-plane stack
    widget.train_button.click()
    wait_done(qtbot, widget)
    assert widget.model is not None
    assert widget.model.classes == (1, 2)

    widget.suggest_k.value = 3
    before = snapshot(viewer)
    widget.suggest_button.click()
    wait_done(qtbot, widget)
    assert_same_layers(viewer, before)  # suggestions do not touch layers
    assert widget.suggestions.count() == 3
    item = widget.suggestions.item(0)
    plane = item.data(0x0100).plane  # Qt.UserRole
    assert item.text().startswith(f"plane {plane}")
    widget.suggestions.itemClicked.emit(item)
    assert viewer.dims.current_step[0] == plane


def test_errors_become_notifications_and_change_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.uint16), name="flat")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="empty")
    widget = open_widget(viewer)
    small_settings(widget, epochs=1)
    before = snapshot(viewer)

    widget.predict_button.click()  # no model yet
    assert widget._worker is None
    widget.train_button.click()  # a single class: the worker reports the error
    wait_done(qtbot, widget)
    assert "single class" in widget.status.text()
    assert widget.model is None
    assert_same_layers(viewer, before)
    assert widget.train_button.isEnabled()


def test_ux_messages_name_the_fix_before_any_dialog(make_napari_viewer, qtbot, monkeypatch):
    sample = data.nuclei_2d(shape=(96, 96), n_objects=20, seed=5)
    assert len(np.unique(sample.labels)) > 17  # more values than a U-Net has classes
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="nuclei")
    viewer.add_labels(sample.labels, name="objects")  # instance labels: one value per nucleus
    widget = open_widget(viewer)
    small_settings(widget, epochs=1)
    before = snapshot(viewer)

    dialogs = []
    monkeypatch.setattr(
        "napari_seglab._widgets.unet.QFileDialog.getSaveFileName",
        lambda *args, **kwargs: dialogs.append(args) or ("", ""),
    )
    widget.save_button.click()  # no model: said at once, no file dialog
    assert dialogs == []
    assert "No model to save" in widget.status.text()

    widget.train_button.click()
    wait_done(qtbot, widget)
    assert "distinct values" in widget.status.text()
    assert widget.binary.text in widget.status.text()  # names the checkbox that fixes it
    assert widget.model is None
    widget.binary.value = True
    widget.train_button.click()
    wait_done(qtbot, widget)
    assert widget.model is not None
    assert widget.model.classes == (0, 1)
    assert_same_layers(viewer, before)


def test_dock_fits_a_900_px_screen_and_follows_the_layer_list(make_napari_viewer, qtbot):
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 900)
    viewer.add_image(np.zeros((32, 32), np.float32), name="first")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seglab", DISPLAY_NAME)
    QApplication.processEvents()
    # Menu bar, dock title and status bar need about 100 px of a 900 px screen.
    assert dock.minimumSizeHint().height() <= 800
    assert window.height() <= 900
    assert not any(section.isExpanded() for section in widget.sections.values())

    for section in widget.sections.values():  # everything open: the content scrolls
        section.expand(animate=False)
    QApplication.processEvents()
    assert dock.minimumSizeHint().height() <= 800
    assert window.height() <= 900
    for button in (widget.train_button, widget.predict_button, widget.suggest_button):
        widget.scroll.ensureWidgetVisible(button)
        QApplication.processEvents()
        assert not button.visibleRegion().isEmpty()
    # Progress and status stay below the scrolling part, inside the window.
    for line in (widget.progress, widget.status):
        assert line.isVisible()
        bottom = line.mapTo(window, QPoint(0, line.height())).y()
        assert bottom <= window.height()

    # Layer choices follow the viewer (napari calls reset_choices).
    viewer.add_image(np.ones((32, 32), np.float32), name="second")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="painted")
    assert [layer.name for layer in widget.image_combo.choices] == ["first", "second"]
    assert [layer.name for layer in widget.labels_combo.choices] == ["painted"]
    viewer.layers.remove("first")
    assert [layer.name for layer in widget.image_combo.choices] == ["second"]
    assert widget.image_combo.value is viewer.layers["second"]


def test_layers_from_a_channel_image_keep_its_spatial_transform():
    from napari.layers import Image, Labels

    from napari_seglab._widgets.unet_parts import source_geometry

    source = Image(
        np.zeros((2, 5, 6)), scale=(9, 0.5, 0.8), translate=(3, 10, -5), shear=(0, 0, 0.2)
    )
    labels = Labels(np.zeros((5, 6), np.uint8), **source_geometry(source, 2, channel_axis=0))
    for point in ((0, 0), (4, 5), (2, 3)):
        np.testing.assert_allclose(
            labels.data_to_world(point), source.data_to_world((1, *point))[1:]
        )


UNET_QUIT_SCRIPT = """
import time

import monai.networks.nets  # noqa: F401  (before napari's OpenGL context, see the module)
import napari
from qtpy.QtCore import QTimer

from napari_seglab.data import nuclei_2d

sample = nuclei_2d(shape=(64, 64), n_objects=4, seed=1)
viewer = napari.Viewer(show=True)
viewer.add_image(sample.image, name="cells")
viewer.add_labels(sample.labels, name="masks")
_, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "U-Net train / predict")
widget.patch_size.value = "32 32"
widget.batch_size.value = 2
widget.augment.value = False
widget.device.value = "cpu"
widget.epochs.value = 0
widget.time_budget.value = 600
widget.train_button.click()
assert widget.jobs.running("unet"), "training did not start"
""" + quit_when_running("unet")


def test_quitting_napari_during_training_exits_cleanly(tmp_path):
    """The whole application quits while U-Net training runs (issue 17): exit status 0."""
    run_and_quit(UNET_QUIT_SCRIPT, tmp_path)
