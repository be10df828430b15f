"""The package's shape (docs/architecture.md): every import resolves, the import graph has no cycle, and
imports only go down the layers. Imports inside functions count as much as module-level ones."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "workbench"

# What each part of the package may import (docs/architecture.md, "the layer rule"). Parts are the
# first component below ``workbench`` (a subpackage, or a top-level module such as ``cli``).
ALLOWED = {
    "common": set(),
    "model": {"common"},
    "metrics": {"common"},
    "tracking": {"common"},
    "data": {"common", "model"},
    "train": {"common", "model", "data", "metrics", "tracking"},
    "eval": {"common", "model", "data", "metrics", "tracking"},
    # the shapes world is a demo above the product: it registers its oracle with eval (an entry point) and
    # makes the sample data; data and eval never import it
    "shapes": {"common", "model", "metrics", "data", "eval"},
    "export": {"common", "model", "tracking"},
    # curation (``data split``, ``data caption``): raw footage into captioned clips, before data check; it reads
    # videos through data and measures captions with the model's tokenizer
    "curate": {"common", "model", "data"},
    # user interfaces (the human review's web app): they read what the stages wrote, never a model
    "review": {"common", "tracking"},
    "commands": {"common", "model", "data", "metrics", "tracking", "shapes", "train", "eval", "export", "curate",
                 "review"},
    "cli": {"common", "commands", "console"},
    "console": set(),
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Workbench modules imported anywhere in ``path`` (``from a import b`` counts b when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("workbench") and name in modules:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_workbench_import_resolves():
    """Also the ones inside functions, which only run on some code paths."""
    missing = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{name}: from {node.module} import {alias.name}")
    assert not missing, missing


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_imports_follow_the_layer_rule():
    graph = _graph()
    parts = {_part(m) for m in graph}
    assert parts <= set(ALLOWED), f"a new part of the package needs a row in ALLOWED: {parts - set(ALLOWED)}"
    wrong = defaultdict(list)
    for module, deps in graph.items():
        for dep in deps:
            if _part(dep) != _part(module) and _part(dep) not in ALLOWED[_part(module)] | {"__init__"}:
                wrong[module].append(dep)
    assert not wrong, dict(wrong)


def test_commands_do_not_import_each_other():
    graph = _graph()
    crossing = {m: sorted(d for d in deps if d.startswith("workbench.commands.") and d != m)
                for m, deps in graph.items() if m.startswith("workbench.commands.")}
    assert not {m: d for m, d in crossing.items() if d}
