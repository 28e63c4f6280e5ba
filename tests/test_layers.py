"""The architecture, checked: every import in the package points down the layers, and none forms a cycle.

    cli ─┬─> api ─┬─> engine ──┬─> kernel ──> costs
         │        └─> cluster ─┘      sources ─┘
         ├─> render, bench (beside the CLI)
         └─> costs (``shapes`` needs nothing else)

``errors`` sits under everything. Imports inside functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "conv1x1_cli"

# What each layer (a top-level module or subpackage of conv1x1_cli) may import, besides itself.
ALLOWED = {
    "__init__": {"costs", "errors", "api"},
    "__main__": {"cli"},
    "cli": {"api", "render", "bench", "costs", "sources", "errors"},
    "render": {"costs", "errors"},
    "bench": {"api", "kernel", "costs", "sources", "errors"},
    "api": {"engine", "cluster", "costs", "errors"},
    "cluster": {"engine", "sources", "costs", "errors"},
    "engine": {"kernel", "sources", "costs", "errors"},
    "kernel": {"costs", "errors"},
    "sources": {"errors"},
    "costs": {"errors"},
    "errors": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The conv1x1_cli modules that ``path`` imports anywhere in it (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("conv1x1_cli")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            if origin.startswith("conv1x1_cli"):
                # `from . import kernel` imports a module; `from .stack import Stack` a name of one
                found |= {f"{origin}.{alias.name}" for alias in node.names} & MODULES.keys()
                found.add(origin)
    return found - {name}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


GRAPH = {module: imported_modules(path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    layer = layer_of(module)
    upward = sorted(
        imported
        for imported in GRAPH[module]
        if layer_of(imported) != layer and layer_of(imported) not in ALLOWED[layer] and imported != "conv1x1_cli"
    )
    assert not upward, f"{module} ({layer}) imports {upward}, which its layer may not"


def test_no_module_imports_itself_round_a_cycle():
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done or module not in GRAPH:
            return
        path.append(module)
        for imported in sorted(GRAPH[module]):
            if imported != "conv1x1_cli" and not module.startswith(imported + "."):  # a package's own __init__
                visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph really is read: the kernel's own imports are found, and an upward one would show."""
    assert "conv1x1_cli.costs.packing" in GRAPH["conv1x1_cli.kernel"]
    assert "conv1x1_cli.kernel" in GRAPH["conv1x1_cli.engine.stack"]  # imported lazily, inside a function
    assert "api" not in ALLOWED["engine"] and "cli" not in ALLOWED["render"]


@pytest.mark.parametrize("modules", ["conv1x1_cli", "conv1x1_cli.costs", "conv1x1_cli.cli", "conv1x1_cli.errors"])
def test_light_modules_import_neither_numpy_nor_numba(modules):
    code = f"import sys, {modules}; print('numba' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
