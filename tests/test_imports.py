"""The library's layering: no import cycle anywhere in `vlmlib`, and the core
never imports the tiny profile.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vlmlib

PACKAGE_DIR = Path(vlmlib.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_vlmlib_modules(path: Path, known: set[str]) -> set[str]:
    """Every vlmlib module `path` imports: at the top, inside functions, or under TYPE_CHECKING."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from vlmlib import data` imports the module vlmlib.data;
            # `from vlmlib.data import X` imports vlmlib.data
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        imported |= {name for name in names if name in known}
    return imported


def build_import_graph() -> dict[str, set[str]]:
    """Return {module: the vlmlib modules it imports}, parents of a package left out (importing
    `vlmlib.tiny.assets` runs `vlmlib.tiny` first; that edge is Python's, not ours)."""
    paths = {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        targets = _imported_vlmlib_modules(path, known) - {name, "vlmlib"}
        graph[name] = {target for target in targets if not name.startswith(target + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_vlmlib_has_no_import_cycle():
    assert find_cycle(build_import_graph()) is None, " -> ".join(find_cycle(build_import_graph()))


def test_core_modules_never_import_the_tiny_profile():
    graph = build_import_graph()
    core = [
        name for name in graph if not name.startswith("vlmlib.tiny") and name not in {"vlmlib.cli"}
    ]
    offenders = {
        name: sorted(t for t in graph[name] if t.startswith("vlmlib.tiny")) for name in core
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}
