"""The core is napari-free: importing it must not load napari, Qt or magicgui."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import napari_seglab

GUI_PREFIXES = ("napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "magicgui", "superqt")


def core_modules() -> list[str]:
    """Every module of the package except the Qt widgets."""
    names = ["napari_seglab"]
    for info in pkgutil.walk_packages(napari_seglab.__path__, "napari_seglab."):
        if "._widgets" not in info.name:
            names.append(info.name)
    return names


def loaded_after_import(modules: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def gui_modules(loaded: list[str]) -> list[str]:
    return [
        m for m in loaded if m.split(".")[0] in GUI_PREFIXES and not m.startswith("napari_seglab")
    ]


def test_package_import_loads_no_qt_napari_or_torch():
    loaded = loaded_after_import(["napari_seglab"])
    assert gui_modules(loaded) == []
    assert "torch" not in loaded, "torch must be imported lazily by the modules that need it"


def test_every_core_module_imports_without_gui():
    modules = core_modules()
    assert {"napari_seglab.device", "napari_seglab.imaging", "napari_seglab.data"} <= set(modules)
    assert gui_modules(loaded_after_import(modules)) == []


def test_gui_prefix_filter_detects_qt():
    # Guard against a filter that can never fire: the widget package does load Qt.
    loaded = loaded_after_import(["napari_seglab._widgets._placeholder"])
    assert "qtpy" in gui_modules(loaded)
