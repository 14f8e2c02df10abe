"""The public API is what ``__all__`` says, and every name in it exists."""

import importlib
from pathlib import Path

import pytest

MODULES = [
    "sim",
    "sim.dists",
    "sim.scenario",
    "sim.draws",
    "sim.provider",
    "sim.schema",
    "sim.model",
    "sim.fast",
    "sim.analytic",
    "sim.rules",
    "sim.catalog",
    "sim.upstream",
    "sim.qoe",
    "sim.limiter",
    "sim.errors",
    "runner",
    "runner.report.qoe_report",
    "runner.world.fake_provider",
    "runner.world.pipeline",
    "runner.world.run",
    "runner.cli.commands",
    "runner.experiments.bench",
    "runner.experiments.conform",
    "runner.experiments.traces",
    "runner.world.wire",
    "runner.report.upstream",
    "runner.report.findings",
    "runner.store.folders",
    "runner.world.bare",
    "runner.cli.argtypes",
    "runner.experiments.replications",
    "runner.store.counts",
    "runner.world.failures",
    "runner.store.stamps",
    "runner.cli.errors",
    "runner.store.cells",
    "runner.report.recommendation",
    "runner.report.adaptive_verdict",
    "runner.report.figures",
    "runner.report.sections",
    "runner.report.labels",
    "runner.store.runs_cells",
    "runner.experiments.runs_sweep",
    "runner.report.runs_recommendation",
    "runner.report.runs_report",
    "runner.cli.runs_cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name):
    mod = importlib.import_module(name)
    assert hasattr(mod, "__all__"), f"{name} has no __all__"
    for attr in mod.__all__:
        assert hasattr(mod, attr), f"{name}.__all__ names missing {attr}"


def test_top_level_api():
    import runner
    import sim

    assert {
        "simulate",
        "simulate_many",
        "load_scenario",
        "Scenario",
        "RunResult",
        "runs_frame",
    } <= set(sim.__all__)
    assert {"run_classroom", "create_app", "ServerThread"} <= set(runner.__all__)


def test_no_submodule_shadows_a_public_name():
    """``runner.<name>`` stays the public object even after every submodule is imported (a
    submodule named like a public name would replace it on the package)."""
    import runner

    for f in sorted((Path(runner.__file__).parent).glob("*.py")):
        if f.stem != "__init__":
            importlib.import_module(f"runner.{f.stem}")
    for name, mod in runner._WHERE.items():
        want = getattr(importlib.import_module(f"runner.{mod}"), name)
        assert getattr(runner, name) is want, f"runner.{name} is shadowed"
