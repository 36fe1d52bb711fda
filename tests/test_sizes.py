"""Modules of a few hundred lines, functions that fit on a screen (STYLE.md habit 12).

A function's size is its lines, docstring and comments included, except the lines of
literal tables (a dict, list, tuple or set written out over several lines: the OpenAPI
document, the template variables), which read as data, not as steps.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pxeserver"
MODULE_LINES = 450
FUNCTION_LINES = 60
TABLES = (ast.Dict, ast.List, ast.Tuple, ast.Set)


def function_sizes(path: Path) -> list[tuple[int, str]]:
    """(lines that are not tables, where) of every function in ``path``."""
    source = path.read_text()
    tree = ast.parse(source)
    table_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, TABLES) and node.end_lineno and node.end_lineno > node.lineno:
            table_lines.update(range(node.lineno, node.end_lineno + 1))
    sizes = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
            span = set(range(node.lineno, node.end_lineno + 1))
            sizes.append((len(span - table_lines), f"{path}:{node.lineno} {node.name}"))
    return sizes


def test_no_module_is_over_a_few_hundred_lines() -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 40
    assert {str(p): n for p, n in sizes.items() if n > MODULE_LINES} == {}


def test_no_function_is_over_a_screen() -> None:
    sizes = [s for p in PACKAGE.rglob("*.py") for s in function_sizes(p)]
    assert len(sizes) > 300
    assert [s for s in sizes if s[0] > FUNCTION_LINES] == []


def test_tables_and_docstrings_do_not_count_but_code_does(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    table = "\n".join(f"        'k{i}': {i}," for i in range(100))
    path = tmp_path / "m.py"
    path.write_text(
        f'def long():\n{body}\n\n\ndef table():\n    """Doc.\n\n    More.\n    """\n'
        f"    # why\n    return {{\n{table}\n    }}\n"
    )
    assert sorted(function_sizes(path)) == [(6, f"{path}:65 table"), (62, f"{path}:1 long")]
