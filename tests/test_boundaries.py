"""Imports flow one way: every package keeps to DESIGN.md's table, the hub's layers keep their
order (HQ.md), and no modules import each other in a circle. Every import counts: at the top,
inside a function, under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "drivers", "edge", "hub", "provisioning")

# DESIGN.md, "The packages": what each package may import of ours.
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "drivers": set(),
    "edge": {"protocol", "drivers"},
    "hub": {"protocol"},
    "provisioning": {"protocol"},
}
# Fleet-level tools stand above edge and hub and may use both; nothing below imports them.
# (``demo_history`` writes a chain's history into a hub for the demo and the console's tests.)
FLEET_TOOLS = {"provisioning.demo_fleet", "provisioning.bench_drain",
               "provisioning.demo_history"}

# The hub's layers, lowest first: a module may import its own layer and the layers below.
HUB_LAYERS: list[set[str]] = [
    {"core"},
    {"stores"},
    {"members"},
    {"ledger"},
    {"campaigns"},
    {"projections"},
    {"notify"},
    {"auth"},
    {"reports"},
    {"automation"},
    {"config"},
    {"sync"},
    {"app"},
    {"api"},
    {"cli", "bench", "bench_scope", "extensions", "campaign_push", "users_cli", "backup",
     "bench_rfm", "bench_segments", "bench_journeys", "messages_cli", "bench_reports",
     "bench_pages"},
]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module imported) for every import of ours in ``path``, wherever it stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent[:len(parent) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base] if base else parent)
            # ``from hub.members import directory`` imports hub.members.directory.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def _resolve(name: str) -> str:
    """The module ``name`` is, or the package it is part of."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _hub_layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for level, names in enumerate(HUB_LAYERS):
        if part in names:
            return level
    raise AssertionError(f"{module} is in no hub layer: add it to HUB_LAYERS")


def _graph() -> dict[str, set[str]]:
    return {m: {_resolve(n) for _line, n in _imports(m, p)} for m, p in MODULES.items()}


def test_the_scan_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    """The checks below mean something only if the scan finds these kinds of import."""
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from hub.app import Hub\ndef f():\n    from edge import service\n"
                     "    import drivers.printer\n    from . import schema\n")
    found = {n for _l, n in _imports("hub.core.probe", probe)}
    assert found == {"hub.app", "edge.service", "drivers.printer", "hub.core.schema"}


def test_packages_import_only_what_design_allows() -> None:
    wrong = []
    for module, path in MODULES.items():
        package = module.split(".")[0]
        allowed = ALLOWED[package] | {package}
        if module in FLEET_TOOLS:
            allowed |= {"edge", "hub"}
        for line, name in _imports(module, path):
            if name.split(".")[0] not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            elif _resolve(name) in FLEET_TOOLS and module not in FLEET_TOOLS:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports the fleet tool {name}")
    assert wrong == []


def test_hub_layers_import_only_downwards() -> None:
    wrong = []
    for module, path in MODULES.items():
        if not module.startswith("hub.") or module == "hub":
            continue
        level = _hub_layer(module)
        for line, name in _imports(module, path):
            target = _resolve(name)
            if target.startswith("hub.") and _hub_layer(target) > level:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({HUB_LAYERS[level]}) imports"
                             f" {name} ({HUB_LAYERS[_hub_layer(target)]})")
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    graph = {m: {t for t in targets if t.split(".")[0] == package}
             for m, targets in _graph().items() if m.split(".")[0] == package}
    nodes = list(graph)
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w == v or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    assert cycles == []
