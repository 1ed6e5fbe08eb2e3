"""The package's shape holds: imports run one way between folders, no cycle, small modules and functions.

``MAY_IMPORT`` is the table in docs/architecture.md ("What may import what"):
a folder may import the base modules, itself, and the folders listed for it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "embedlib"
# Every folder may import these; they import only each other.
BASE = {"errors", "rules", "options", "redaction", "backoff"}
MAY_IMPORT = {
    "db": set(),
    "encode": set(),
    "testing": {"db", "encode"},
    "store": {"db", "encode"},
    "source": {"db"},
    "plan": {"db", "encode", "source", "store"},
    "query": {"db", "encode", "source", "store"},
    "run": {"db", "encode", "source", "store", "plan", "query"},
    "cli": {"db", "encode", "source", "store", "plan", "query", "run", "testing"},
}
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return found


def imports(tree: ast.Module) -> set[str]:
    """The embedlib modules ``tree`` imports, at any depth, except under ``if TYPE_CHECKING``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "embedlib":
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "embedlib"}
    return found


def folder(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE or parts[1] == "__main__":
        return "base"
    return parts[1]


def resolved(module: str, known: dict[str, ast.Module]) -> str | None:
    """``module`` if it is one (``from a import b`` of a module b), else the module an imported
    name lives in (``a.b.Name`` -> ``a.b``)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def test_folders_import_only_what_the_architecture_allows():
    known = modules()
    wrong = []
    for name, tree in known.items():
        source = folder(name)
        for imported in imports(tree):
            target_module = resolved(imported, known)
            if target_module is None or target_module == "embedlib":
                continue
            target = folder(target_module)
            if source == "base" and name not in ("embedlib", "embedlib.__main__"):
                allowed = target == "base"
            else:
                allowed = target in {"base", source} | MAY_IMPORT.get(source, set(MAY_IMPORT))
            if not allowed:
                wrong.append(f"{name} imports {target_module}")
    assert wrong == []


def test_no_import_cycle():
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, tree in known.items():
        for imported in imports(tree):
            target = resolved(imported, known)
            if target and target != name and target != "embedlib":
                graph[name].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for after in sorted(graph[node]):
            if state.get(after) == 1:
                cycles.append(" -> ".join([*path[path.index(after) :], after]))
            elif after not in state:
                visit(after, [*path, after])
        state[node] = 2

    for name in sorted(known):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("limit", [MAX_MODULE_LINES])
def test_modules_stay_small(limit):
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > limit
    }
    assert long == {}


def test_functions_stay_short():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
