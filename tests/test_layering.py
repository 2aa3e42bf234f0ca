"""The import graph of the package against the layering documented in docs/layering.md."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "layering.md"


def _folders() -> dict[str, str]:
    """Package name -> folder, as setup.py maps them (``shiftpu.compiler`` is ``compiler/``, ...)."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FOLDERS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FOLDERS")


def _layering() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(module prefix -> part, part -> the parts it may import) from the table in docs/layering.md."""
    block = re.search(r"<!-- BEGIN layering -->\n(.*?)<!-- END layering -->", DOC.read_text(), re.S)
    assert block, f"{DOC}: no layering table"
    prefixes: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for line in block.group(1).splitlines()[2:]:
        part, modules, may = (cell.strip() for cell in line.strip().strip("|").split("|"))
        allowed[part] = {p.strip() for p in may.split(",") if p.strip()}
        prefixes.update((m, part) for m in re.findall(r"`([\w.]+)`", modules))
    return prefixes, allowed


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    out: dict[str, Path] = {}
    for package, folder in _folders().items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of a shiftpu module, at any depth, outside ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "shiftpu")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "shiftpu":  # `from shiftpu import x`: x may be a module
                found.extend((node.lineno, f"shiftpu.{a.name}") for a in node.names)
            elif node.module.split(".")[0] == "shiftpu":
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _part(module: str, prefixes: dict[str, str]) -> str | None:
    """The part of a module: the longest documented prefix it falls under (``shiftpu`` alone: the package root)."""
    best = max((p for p in prefixes if module == p or module.startswith(p + ".")), key=len, default=None)
    if best == "shiftpu" and module != "shiftpu":
        return None  # a module directly in the package is named in the table, or unplaced
    return None if best is None else prefixes[best]


def test_the_documented_layering_has_no_cycle():
    _, allowed = _layering()
    assert set().union(*allowed.values()) <= set(allowed), "the table names a part it does not define"
    try:
        order = list(TopologicalSorter(allowed).static_order())
    except CycleError as e:
        pytest.fail(f"docs/layering.md: the parts import each other in a cycle: {e.args[1]}")
    assert order[0] == "base" and order[-1] == "app"


def test_every_module_has_a_part():
    prefixes, _ = _layering()
    unplaced = [m for m in _modules() if _part(m, prefixes) is None]
    assert not unplaced, f"modules docs/layering.md places in no part: {unplaced}"


def test_imports_follow_the_documented_layering():
    prefixes, allowed = _layering()
    violations = []
    for module, path in _modules().items():
        part = _part(module, prefixes)
        for line, target in _imports(ast.parse(path.read_text(), str(path))):
            other = _part(target, prefixes)
            if other is not None and other != part and other not in allowed[part]:
                violations.append(f"{path.relative_to(ROOT)}:{line}: {part} imports {target} ({other})")
    assert not violations, "imports docs/layering.md does not allow:\n" + "\n".join(violations)


def test_the_checker_sees_what_it_must():
    tree = ast.parse("from shiftpu import toolchain\n"
                     "def f():\n    from shiftpu.sw.executor import Executor\n"
                     "if TYPE_CHECKING:\n    from shiftpu.compiler.ir import ConvOp\n"
                     "else:\n    import shiftpu.hw.top\n"
                     "import numpy\n")
    assert _imports(tree) == [(1, "shiftpu.toolchain"), (3, "shiftpu.sw.executor"), (7, "shiftpu.hw.top")]
    prefixes, _ = _layering()
    assert [_part(m, prefixes) for m in ("shiftpu", "shiftpu.errors", "shiftpu.compiler.quant.qat", "shiftpu.demo",
                                         "shiftpu.cli.main", "shiftpu.arch.isa")] == [
        "base", "base", "compiler", "app", "app", "arch"]
