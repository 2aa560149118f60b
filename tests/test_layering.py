"""The package's layering, read from the source: no import cycles (imports inside functions count), models never
import the engine, the losses never import the models, nothing below the models imports them."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "pdfnet"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """pdfnet modules ``path`` imports anywhere in its source (top level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pdfnet")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("pdfnet"):
                continue
            found.add(target)
            for alias in node.names:  # 'from . import anything' imports a submodule
                if (PACKAGE.parent / (target.replace(".", "/") + f"/{alias.name}.py")).is_file():
                    found.add(f"{target}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # An import of a.b.c also runs a and a.b (their __init__); count what the source names.
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_layers_import_only_downwards():
    graph = _graph()
    for name, imported in graph.items():
        if name.startswith("pdfnet.models"):
            assert not {m for m in imported if m.startswith(("pdfnet.engine", "pdfnet.lean", "pdfnet.build",
                                                            "pdfnet.losses", "pdfnet.cli", "pdfnet.data"))}, name
        if name.startswith("pdfnet.losses"):
            assert not {m for m in imported if m.startswith(("pdfnet.models", "pdfnet.engine", "pdfnet.lean"))}, name
        if name in ("pdfnet.config", "pdfnet.registry", "pdfnet.variants", "pdfnet.ops", "pdfnet.device"):
            assert imported <= {"pdfnet.registry", "pdfnet.variants", "pdfnet"}, (name, imported)
        if name.startswith("pdfnet.lean"):
            assert not {m for m in imported if m.startswith(("pdfnet.engine", "pdfnet.build", "pdfnet.cli"))}, name
