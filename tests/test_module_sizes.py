"""Small modules with one job: no core module over 500 lines, no widget module over 400."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_seglab"
CORE_LIMIT = 500
WIDGET_LIMIT = 400


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        limit = WIDGET_LIMIT if relative.parts[0] == "_widgets" else CORE_LIMIT
        yield pytest.param(path, limit, id=str(relative))


@pytest.mark.parametrize(("path", "limit"), list(_modules()))
def test_module_is_small(path, limit):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= limit, f"{path.name} has {lines} lines; split it by job (limit {limit})."


def test_the_limits_see_every_module():
    assert len(list(_modules())) > 50
