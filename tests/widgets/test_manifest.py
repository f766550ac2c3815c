"""The plugin as napari sees it: manifest, five dock widgets, sample data."""

from __future__ import annotations

import numpy as np
import pytest
from npe2 import PluginManager
from qtpy.QtWidgets import QWidget

from napari_seglab import data

WIDGETS = {
    "SAM prompting": "SamPromptWidget",
    "U-Net train / predict": "UNetWidget",
    "CRF refinement": "CrfWidget",
    "Evaluation": "EvaluationWidget",
    "SAM decoder fine-tuning": "SamFinetuneWidget",
    "Batch prediction": "BatchWidget",
}


def test_manifest_is_discovered_and_valid():
    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-seglab")
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == set(WIDGETS)
    assert {s.key for s in manifest.contributions.sample_data} == {"nuclei_2d", "nuclei_3d"}
    patterns = {p for r in manifest.contributions.readers for p in r.filename_patterns}
    assert {"*.nii", "*.nii.gz"} <= patterns


@pytest.mark.parametrize("display_name", list(WIDGETS))
def test_each_widget_docks_through_the_manifest(make_napari_viewer, display_name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-seglab", display_name)
    assert isinstance(widget, QWidget)
    assert type(widget).__name__ == WIDGETS[display_name]
    assert dock.isVisible() or not viewer.window._qt_window.isVisible()


def test_sample_data_opens_with_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-seglab", "nuclei_3d")
    image, labels = viewer.layers
    expected = data.nuclei_3d()
    assert image.data.shape == (32, 128, 128)
    assert np.array_equal(labels.data, expected.labels)
    assert tuple(image.scale) == expected.spacing
    assert type(labels).__name__ == "Labels"


MAIN_BUTTONS = {
    "SAM prompting": "load_button",
    "U-Net train / predict": "train_button",
    "CRF refinement": "apply_button",
    "Evaluation": "evaluate_button",
    "SAM decoder fine-tuning": "start_button",
    "Batch prediction": "run_button",
}


def test_all_six_docks_fit_a_900_px_window_and_reach_their_main_button(make_napari_viewer, qtbot):
    """Issue 17: with all six docked (not tabified) the window stays within 900 px."""
    from _canvas import show_viewer
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer()
    sample = data.nuclei_2d(shape=(64, 64), n_objects=3, seed=1)
    viewer.add_image(sample.image, name="nuclei")
    viewer.add_labels(sample.labels, name="masks")
    show_viewer(viewer, qtbot, 1280, 900)
    widgets = {}
    for name in WIDGETS:
        _, widgets[name] = viewer.window.add_plugin_dock_widget(
            "napari-seglab", name, tabify=False
        )
    qtbot.wait(200)
    window = viewer.window._qt_window
    assert window.height() <= 900
    assert window.minimumSizeHint().height() <= 900
    for name, widget in widgets.items():
        button = getattr(widget, MAIN_BUTTONS[name])
        area = widget.findChild(QScrollArea)
        assert area.isVisible(), name
        assert area.height() > 0, name
        area.ensureWidgetVisible(button)
        qtbot.wait(20)
        assert button.isEnabled(), name
        assert button.isVisible(), name
        assert not button.visibleRegion().isEmpty(), name
    assert window.height() <= 900
