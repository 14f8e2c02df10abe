"""The layers by role, enforced on the import graph (not on a table).

Every module's imports of the project's own code — at the top or inside a function — go
downward only::

    runner.cli  →  runner.report, runner.experiments  →  runner.world, runner.store  →  sim

``runner.report`` and ``runner.experiments`` are peers (neither imports the other): an
experiment returns data and writes it through ``runner.store``; a report reads it back.
``runner.world`` (the fake provider, the port) knows nothing of folders, experiments or
reports, and ``sim`` nothing of ``runner``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "sim": {"sim"},
    "runner.store": {"sim", "runner.store"},
    "runner.world": {"sim", "runner.world"},
    "runner.experiments": {"sim", "runner.world", "runner.store", "runner.experiments"},
    "runner.report": {"sim", "runner.store", "runner.report"},
    "runner.cli": {
        "sim",
        "runner.world",
        "runner.store",
        "runner.experiments",
        "runner.report",
        "runner.cli",
    },
    "runner": {"runner"},  # the lazy public __init__ names any layer
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(dotted: str) -> str:
    parts = dotted.split(".")
    if parts[0] == "sim":
        return "sim"
    if len(parts) >= 2 and f"runner.{parts[1]}" in ALLOWED:
        return f"runner.{parts[1]}"
    return "runner"


def _imports(path: Path) -> list[str]:
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out += [f"{base}.{a.name}" if not node.module else base for a in node.names]
    return [m for m in out if m.split(".")[0] in {"sim", "runner"}]


def _violations() -> list[str]:
    bad = []
    for path in sorted(
        [*ROOT.joinpath("sim").rglob("*.py"), *ROOT.joinpath("runner").rglob("*.py")]
    ):
        src = _layer(_module_name(path))
        for target in _imports(path):
            dst = _layer(target)
            if dst not in ALLOWED[src] and not (src == "runner" and dst.startswith("runner")):
                bad.append(f"{_module_name(path)} ({src}) imports {target} ({dst})")
    return bad


def test_imports_go_downward_only() -> None:
    assert _violations() == []


def test_every_runner_module_sits_in_a_role_folder() -> None:
    flat = [p.name for p in ROOT.joinpath("runner").glob("*.py") if p.name != "__init__.py"]
    assert flat == [], f"modules outside a role folder: {flat}"


def test_the_checker_sees_a_violation() -> None:
    """The rule can fail: an upward import is reported."""
    assert "runner.report" not in ALLOWED["runner.experiments"]
    assert _layer("runner.report.figures") == "runner.report"
    assert _layer("runner.experiments.sweep") == "runner.experiments"
