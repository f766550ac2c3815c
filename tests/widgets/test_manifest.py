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
