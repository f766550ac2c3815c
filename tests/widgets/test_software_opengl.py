"""torch + software OpenGL in one process (napari on Xvfb or a laptop without GPU drivers)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True)
QApplication.processEvents()
viewer.window.add_plugin_dock_widget("napari-seglab", "SAM prompting")
import torchvision  # pulls torch._dynamo, which would load triton's LLVM
import segment_anything, monai.networks.nets
print("alive")
viewer.close()
"""


def test_docking_a_widget_then_importing_torchvision_does_not_crash():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alive" in proc.stdout
