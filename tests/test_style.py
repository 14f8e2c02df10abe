"""The project's style rules that a linter does not check, and the linters themselves.

Functions stay short (SimPy's median is five lines): none in ``sim/`` or ``runner/`` is
over 80 lines. ruff and mypy --strict run here too, so a red lint is a red suite."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def _functions() -> list[tuple[str, int]]:
    """(``path:line name``, length in lines) of every function and method."""
    out = []
    for pkg in ("sim", "runner"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    where = f"{f.relative_to(ROOT)}:{node.lineno} {node.name}"
                    out.append((where, node.end_lineno - node.lineno + 1))
    return out


def test_the_walk_sees_the_functions() -> None:
    names = {w.split()[-1] for w, _ in _functions()}
    assert len(names) > 300 and {"simulate", "after_attempt", "main"} <= names


def test_no_function_over_80_lines() -> None:
    long = [f"{w} ({n} lines)" for w, n in _functions() if n > MAX_LINES]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    lint = _tool("ruff", "check", "sim", "runner", "tests")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _tool("ruff", "format", "--check", "sim", "runner", "tests")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.heavy
def test_mypy_strict_is_clean() -> None:
    res = _tool("mypy")
    assert res.returncode == 0, res.stdout + res.stderr
