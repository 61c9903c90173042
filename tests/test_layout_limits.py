"""Size limits on the code: no module in edge/, convert/, training/ or benchmarks/ over 300 lines, and no
function (or method) there over 60 lines, counted by `ast` from its `def` (decorators excluded) to its last line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("edge", "convert", "training", "benchmarks")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def function_lines(source: str) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function and method, nested ones included."""
    return [(n.lineno, n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_packages_have_modules():
    assert len(modules()) > 20  # the walk finds the code (a moved folder would make the limits pass vacuously)


def test_no_module_over_the_line_limit():
    over = []
    for p in modules():
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            over.append(f"{p.relative_to(REPO)} {n} lines")
    assert not over, f"{len(over)} modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(over)


def test_no_function_over_the_line_limit():
    over = [f"{p.relative_to(REPO)}:{line} {name}() {n} lines" for p in modules()
            for line, name, n in function_lines(p.read_text(encoding="utf-8")) if n > MAX_FUNCTION_LINES]
    assert not over, f"{len(over)} functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(over)


def test_a_function_is_counted_from_def_to_its_last_line():
    body = "    x = 1\n" * 60
    assert function_lines("@decorator\ndef f():\n" + body) == [(2, "f", 61)]
    assert function_lines("class C:\n    async def g(self):\n        pass\n") == [(2, "g", 2)]
