"""The error policy of the command line: a user error (``sim.errors.UserError``, from however
deep) is one line and exit 2; any other exception is a bug and keeps its traceback."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import runner.experiments.replications
import sim
from runner.cli.commands import main
from runner.cli.errors import ProviderUnreachable, UsageError
from sim.errors import UserError
from sim.rules import ScenarioError

ROOT = Path(__file__).resolve().parents[2]
SIM = ["sim", "--mode", "pipelined", "--concurrency", "3", "--reps", "5"]


def test_the_family():
    assert issubclass(UserError, ValueError)
    assert issubclass(ScenarioError, UserError) and issubclass(UsageError, UserError)
    assert not issubclass(ProviderUnreachable, UserError)
    assert sim.UserError is UserError and sim.ScenarioError is ScenarioError
    from sim.scenario import ScenarioError as from_scenario

    assert from_scenario is ScenarioError


def test_a_user_error_from_deep_inside_is_one_line_exit_2(capsys):
    # the check is in runner.world.run.run, below the command line
    rc = main(["run", "--clock", "virtual", "--base-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [
        "scenebench: error: base_url: only with clock='wall' (a virtual clock needs the "
        "in-process provider)"
    ]


def test_a_user_error_raised_by_the_model_is_one_line_exit_2(monkeypatch, capsys):
    def bad(*_a, **_k):
        raise UserError("reps: must be >= 1, got 0")

    import sim.engines

    monkeypatch.setattr(sim.engines, "simulate", bad)
    assert main(SIM) == 2
    assert capsys.readouterr().err == "scenebench: error: reps: must be >= 1, got 0\n"


@pytest.mark.parametrize("exc", [ValueError("boom"), ZeroDivisionError("boom"), KeyError("boom")])
def test_any_other_exception_propagates(monkeypatch, exc):
    def broken(*_a, **_k):
        raise exc

    monkeypatch.setattr(runner.experiments.replications, "simulate_summary", broken)
    with pytest.raises(type(exc), match="boom"):
        main(SIM)


def test_a_bug_exits_1_with_its_traceback():
    code = (
        "import sys, runner.experiments.replications\n"
        "def broken(*a, **k):\n    raise ValueError('boom from numpy')\n"
        "runner.experiments.replications.simulate_summary = broken\n"
        "from runner.cli.commands import main\n"
        f"sys.exit(main({SIM!r}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "Traceback" in p.stderr and "ValueError: boom from numpy" in p.stderr


def test_the_cli_knows_the_limiter_policies():
    from runner.cli.argtypes import POLICIES
    from sim.limiter import POLICIES as MODEL

    assert POLICIES == MODEL


# the `raise ValueError` left in sim/ and runner/: internal invariants, not user input
KEPT = {
    ("sim/draws.py", "__init__"),  # Draws' classroom range: callers validate seed and ids first
    ("sim/qoe.py", "qoe_us"),  # array shapes from the worlds, not from a user
}


def _valueerror_raises() -> set[tuple[str, str]]:
    """(file, innermost function) of every ``raise ValueError`` in sim/ and runner/."""
    found = set()
    for f in sorted([*(ROOT / "sim").rglob("*.py"), *(ROOT / "runner").rglob("*.py")]):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        funcs = [
            (n.lineno, n.end_lineno or n.lineno, n.name)
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in ast.walk(tree):
            exc = node.exc if isinstance(node, ast.Raise) else None
            target = exc.func if isinstance(exc, ast.Call) else exc
            if isinstance(target, ast.Name) and target.id == "ValueError":
                inner = min(
                    ((e - s, name) for s, e, name in funcs if s <= node.lineno <= e),
                    default=(0, "<module>"),
                )
                found.add((f.relative_to(ROOT).as_posix(), inner[1]))
    return found


def test_every_raise_valueerror_left_is_intentional():
    assert _valueerror_raises() == KEPT
