"""The house's rules, read from the source: no import loop between the project's modules (imports
inside functions included), imports point down between packages, no module over 400 lines, and an
import inside a function says why it waits there."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vocabulary", "trainer", "sweep", "reports")
MAX_LINES = 400
# package -> the project packages it may import (imports point down: sweep -> trainer, never back)
ALLOWED = {"vocabulary": set(), "trainer": {"vocabulary"}, "reports": {"vocabulary"},
           "sweep": {"vocabulary", "trainer", "reports"}}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, ast.stmt, bool]]:
    """(imported project module, the statement, inside a function?) for each import of path."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names]
            else:
                visit(child, inner)
                continue
            if isinstance(child, ast.ImportFrom) and child.module == "__future__":
                continue
            if _is_type_checking_block(node):
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append((target, child, in_function))
    visit(tree, False)
    return found


def _is_type_checking_block(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for t, _, _ in imports_of(name, path, known)} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_finds_a_loop_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_loop_between_the_projects_modules():
    edges = graph()
    assert len(edges) > 40 and any(edges.values())
    cycle = find_cycle(edges)
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_imports_point_down_between_packages():
    wrong = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
             if b.split(".")[0] != a.split(".")[0] and b.split(".")[0] not in ALLOWED[a.split(".")[0]]]
    assert not wrong, wrong


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by what its parts do"


def test_an_import_inside_a_function_says_why_it_waits():
    silent = []
    known = set(modules())
    for name, path in modules().items():
        text = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    same_line = "#" in text[node.end_lineno - 1]
                    line_above = text[node.lineno - 2].strip().startswith("#")
                    if not (same_line or line_above):
                        silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert known and not silent, f"imports inside functions with no reason given: {silent}"
