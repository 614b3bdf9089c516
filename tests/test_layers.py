"""The package keeps the shape ARCHITECTURE.md draws: imports point down the layers,
never up, never sideways within a layer, and never in a circle.

Every import counts, including those inside functions: the store that once ran the
whole pipeline did so through imports inside its methods."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import scdrugmap

PACKAGE_DIR = Path(scdrugmap.__file__).parent

# Lowest first. A package may import packages of lower layers only.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "progress", "version", "provenance"}),
    frozenset({"data"}),
    frozenset({"store"}),
    frozenset({"embed", "classify"}),
    frozenset({"finetune", "zeroshot", "report"}),
    frozenset({"predict"}),
    frozenset({"workflows"}),
    frozenset({"serve"}),
    frozenset({"cli"}),
)
BASE = LAYERS[0]
# The doors translate and call the workflows; they run no operation themselves.
DOORS_MAY_IMPORT = {
    "cli": BASE | {"workflows", "serve"},
    "serve": BASE | {"workflows", "report", "store", "data"},
}
ROOT = "scdrugmap"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The project module an imported name lives in (a module, or its package)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """Project modules `module` imports anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.startswith(ROOT))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source == ROOT or source.startswith(ROOT + "."):
                for alias in node.names:
                    found.add(_resolve(f"{source}.{alias.name}"))
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _unit(module: str) -> str:
    """The layer unit of a module: its top package under scdrugmap, or ROOT itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _layer(unit: str) -> int:
    for rank, units in enumerate(LAYERS):
        if unit in units:
            return rank
    raise AssertionError(
        f"scdrugmap.{unit} belongs to no layer: add it to LAYERS here and to ARCHITECTURE.md"
    )


def test_every_module_imports() -> None:
    for module in MODULES:
        importlib.import_module(module)


def test_every_package_has_a_layer() -> None:
    for module in MODULES:
        if _unit(module) != ROOT:
            _layer(_unit(module))


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        unit = _unit(module)
        if unit == ROOT:
            continue
        for target in targets:
            other = _unit(target)
            if other == unit:
                continue
            if other == ROOT:
                wrong.append(f"{module} imports the package root (the public API, the top)")
            elif _layer(other) >= _layer(unit):
                where = "the same layer" if _layer(other) == _layer(unit) else "a higher layer"
                wrong.append(f"{module} imports {target}: {other} is in {where} than {unit}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("door", sorted(DOORS_MAY_IMPORT))
def test_the_cli_and_the_service_only_call_the_workflows(door: str) -> None:
    allowed = DOORS_MAY_IMPORT[door]
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _unit(module) == door
        for target in targets
        if _unit(target) not in allowed | {door}
    )
    assert not wrong, "\n".join(wrong)


def test_the_public_api_is_the_top() -> None:
    """`scdrugmap` itself exposes the workflows' API and the base modules, nothing else."""
    assert {_unit(t) for t in GRAPH[ROOT]} <= BASE | {"workflows"}


def test_no_import_circle() -> None:
    circles = _strongly_connected(GRAPH)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in circles)


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    """The checks above would pass on an empty graph; show they find what they look for."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert [sorted(c) for c in _strongly_connected(graph)] == [["a", "b", "c"]]
    assert "scdrugmap.store.storage" in GRAPH
    assert _layer(_unit("scdrugmap.store.storage")) < _layer(_unit("scdrugmap.embed.runner"))


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that reach one another (Tarjan), iteratively so depth is no limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def test_every_layer_unit_exists() -> None:
    units = {_unit(m) for m in MODULES} - {ROOT}
    declared = set().union(*LAYERS)
    assert declared <= units, f"layers name packages that do not exist: {declared - units}"


def test_edges_are_found_inside_functions() -> None:
    """The workflow that embeds imports the embed package inside no function, the API class
    lazily from the root: both must be seen."""
    assert "scdrugmap.embed.build" in GRAPH["scdrugmap.workflows.embed"]
    assert any(_unit(t) == "workflows" for t in GRAPH[ROOT])
