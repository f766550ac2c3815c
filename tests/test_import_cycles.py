"""No import cycles anywhere in napari_seglab.

The graph is read from the source with ``ast``, not from what happens to be
imported at run time: every ``import`` and ``from ... import`` counts,
including those inside functions and ``if TYPE_CHECKING:`` blocks (an import
moved into a function to dodge a cycle is still a cycle). An edge goes to the
module that holds the imported name: ``from . import x`` points at the
submodule ``x`` when there is one, else at the package's ``__init__``.
Importing ``pkg.sub`` does not add an edge to ``pkg`` (Python runs
``pkg/__init__`` first, but a package importing its own submodules is the
normal layout); a submodule importing names *from* its package's
``__init__`` does add one, and closes a real cycle when that ``__init__``
imports the submodule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

import napari_seglab

PACKAGE = "napari_seglab"
ROOT = Path(napari_seglab.__file__).resolve().parent

#: Cycles known in modules outside this test's owner's reach, as (importer, imported)
#: edges to ignore. Each entry is a bug to fix; empty the list as they are.
ALLOWED_EDGES: set[tuple[str, str]] = set()


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{module name: file}`` for every module under ``root`` (packages by their ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is one of ``modules``."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = module.split(".")[0]
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    target = _resolve(alias.name, modules)
                    if target:
                        found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            if base.split(".")[0] != top:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else _resolve(base, modules)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = module_files() if modules is None else modules
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for the message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    frontier = [(start, [start])]
    while frontier:  # breadth-first: the shortest way back to the start
        node, path = frontier.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return [*path, start]
            if child not in seen:
                seen.add(child)
                frontier.append((child, [*path, child]))
    return component  # pragma: no cover - a component always holds a cycle


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [cycle_in(c, graph) for c in strongly_connected(graph) if len(c) > 1]


def without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in targets if (a, b) not in ALLOWED_EDGES} for a, targets in graph.items()}


def test_no_import_cycles():
    graph = without_allowed(import_graph())
    found = cycles(graph)
    assert not found, "Import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_allowed_edges_are_still_needed():
    """An allowed edge that no longer exists (or closes no cycle) must leave the list."""
    graph = import_graph()
    stale = [edge for edge in sorted(ALLOWED_EDGES) if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"Remove from ALLOWED_EDGES (no such import any more): {stale}"


def test_graph_sees_every_kind_of_import():
    """The graph includes imports in functions and TYPE_CHECKING blocks, relative and absolute."""
    graph = import_graph()
    assert set(module_files()) == set(graph)
    # sam.loading imports load_decoder at module level; sam.model is imported under
    # TYPE_CHECKING by sam.embedding; sam.loading imports sam.download inside load_model.
    assert "napari_seglab.sam.decoder_files" in graph["napari_seglab.sam.loading"]
    assert "napari_seglab.sam.model" in graph["napari_seglab.sam.embedding"]
    assert "napari_seglab.sam.download" in graph["napari_seglab.sam.loading"]
    # ``from .. import __version__`` is an edge to the top-level package.
    assert PACKAGE in graph["napari_seglab.sam.decoder_files"]
    # ``from .finetune import ...`` in sam/__init__ points at the sub-package.
    assert "napari_seglab.sam.finetune" in graph["napari_seglab.sam"]


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        # a.x imports b, b imports a.x inside a function: a cycle.
        (
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from . import b\n",
                "pkg/b.py": "def f():\n    from .a import g\n",
            },
            [["pkg.a", "pkg.b", "pkg.a"]],
        ),
        # Only under TYPE_CHECKING: still a cycle.
        (
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from .b import B\n",
                "pkg/b.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.a import A\n",
            },
            [["pkg.a", "pkg.b", "pkg.a"]],
        ),
        # A package importing its submodules, which import each other one way: no cycle.
        (
            {
                "pkg/__init__.py": "from .a import A\nfrom .b import B\n",
                "pkg/a.py": "from .b import B\n",
                "pkg/b.py": "import numpy\n",
            },
            [],
        ),
        # A submodule importing a name from its package's __init__, which imports it: a cycle.
        (
            {
                "pkg/__init__.py": "from .a import A\nVERSION = 1\n",
                "pkg/a.py": "from . import VERSION\n",
            },
            [["pkg", "pkg.a", "pkg"]],
        ),
        # ``from .. import sub`` in a nested package resolves to the sibling submodule.
        (
            {
                "pkg/__init__.py": "",
                "pkg/sub/__init__.py": "",
                "pkg/sub/x.py": "from .. import y\n",
                "pkg/y.py": "from .sub import x\n",
            },
            [["pkg.sub.x", "pkg.y", "pkg.sub.x"]],
        ),
    ],
)
def test_cycle_finder_on_small_packages(tmp_path, sources, expected):
    for name, text in sources.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = module_files(tmp_path / "pkg")
    assert cycles(import_graph(modules)) == expected
