"""SAM 2 in the SAM prompting widget: in the model list, click, commit, undo (real viewer)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("napari")

from _canvas import click, key, show_viewer
from qtpy.QtCore import Qt

from napari_seglab.data import nuclei_2d
from napari_seglab.sam.sam2_model import Sam2Embedding


@pytest.fixture(scope="module")
def tiny_sam2(one_torch_thread, tiny_sam2_models):
    """The real Hiera-tiny config with random weights at a 64-px input (shared, conftest)."""
    return tiny_sam2_models(image_size=64)


def test_sam2_model_is_offered_then_click_and_commit(make_napari_viewer, qtbot, tiny_sam2):
    viewer = make_napari_viewer()
    show_viewer(viewer, qtbot)
    image = nuclei_2d((80, 96), n_objects=6, seed=4).image
    viewer.add_image(image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
    choices = list(widget.form.model.choices)
    assert choices[:4] == ["vit_b", "vit_l", "vit_h", "medsam"]
    assert choices[4:] == [
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
    ]

    widget.set_model(tiny_sam2, source="sam2 test model")
    assert "sam2.1_hiera_t" in widget.model_label.text()
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    viewer.reset_view()
    qtbot.wait(20)

    click(viewer, qtbot, (40, 50))
    qtbot.waitUntil(
        lambda: widget.session.prediction is not None and not widget.busy, timeout=60000
    )
    prediction = widget.session.prediction
    assert len(prediction.scores) == 3
    assert isinstance(widget.session.segmenter.embedding, Sam2Embedding)
    shown = widget.prompt_layers.preview.data.astype(bool)
    assert shown.shape == image.shape
    assert shown.any()

    key(viewer, qtbot, Qt.Key.Key_Return)  # commit through the points layer's key binding
    labels = viewer.layers["SAM labels"]
    np.testing.assert_array_equal(labels.data == 1, shown)
    assert set(np.unique(labels.data)) == {0, 1}

    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo step
    assert not labels.data.any()
