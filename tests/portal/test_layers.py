"""The layers point one way (docs/architecture.md, "Layers and packages"): core at the bottom, then
connections, then graphsync, with portal as the shell on top; no cycle between product modules,
and no domain module importing the Celery tasks that call it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = ("core", "connections", "graphsync", "portal")
OUTSIDE = ("devtools", "emulator", "bench", "tests")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _product_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in LAYERS
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import that runs, TYPE_CHECKING left out."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, top))
                found.extend((f"{child.module}.{alias.name}", top) for alias in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


def _layer(module: str) -> str:
    return module.split(".", 1)[0]


def test_no_module_imports_a_higher_layer_or_a_tool_outside_the_product():
    wrong = []
    for module, path in _product_modules().items():
        own = LAYERS.index(_layer(module))
        for imported, _top in _imports(path):
            top_package = _layer(imported)
            if top_package in OUTSIDE or (
                top_package in LAYERS and LAYERS.index(top_package) > own
            ):
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_imports_of_product_modules_sit_at_module_level():
    # An import inside a function that dodges a cycle is still a cycle. Django's AppConfig.ready
    # is the one place that imports late, because models are not loaded before it.
    late = []
    for module, path in _product_modules().items():
        if module.endswith(".apps"):
            continue
        for imported, top in _imports(path):
            if not top and _layer(imported) in LAYERS:
                late.append(f"{module} imports {imported} inside a function")
    assert late == []


def test_no_cycle_between_product_modules():
    modules = _product_modules()
    graph = {
        module: {
            imported
            for imported, top in _imports(path)
            if top and imported in modules and imported != module
        }
        for module, path in modules.items()
    }
    # A package's __init__ re-exporting its submodules is not a cycle of meaning.
    for module in graph:
        graph[module] = {m for m in graph[module] if not module.startswith(f"{m}.")}

    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert cycles == []


def test_domain_modules_never_import_celery_tasks():
    # Tasks call the domain; the domain asks for work by task name (core.queue).
    wrong = [
        f"{module} imports {imported}"
        for module, path in _product_modules().items()
        if not module.endswith(".tasks")
        for imported, _top in _imports(path)
        if imported.endswith(".tasks") and _layer(imported) in LAYERS
    ]
    assert wrong == []
