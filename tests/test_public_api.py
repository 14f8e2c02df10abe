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
        "RunConfig",
        "pick_engine",
        "load_scenario",
        "Scenario",
        "RunResult",
        "runs_frame",
    } <= set(sim.__all__)
    assert {"run", "run_async", "create_app", "ServerThread"} <= set(runner.__all__)
    # the public API only: no figure captions or plotting helpers at the top
    assert not {"HOLLOW_CAPTION", "plot_marked"} & set(runner.__all__)


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


@pytest.mark.parametrize("pkg", ["sim", "runner"])
def test_each_public_name_points_at_the_module_that_defines_it(pkg):
    """The packages' lazy maps name the defining module, not one that re-exports the name."""
    import re

    package = importlib.import_module(pkg)
    root = Path(package.__file__).parent
    for name, mod in package._WHERE.items():
        src = (root / (mod.replace(".", "/") + ".py")).read_text()
        defined = rf"^(def |class |async def ){name}\b|^{name}(: [^=]+)? ="
        assert re.search(defined, src, re.M), f"{pkg}.{name} is not defined in {pkg}.{mod}"


def test_scenario_error_is_a_user_error_defined_with_it():
    from sim import errors, rules, scenario

    assert errors.ScenarioError.__module__ == "sim.errors"
    assert rules.ScenarioError is scenario.ScenarioError is errors.ScenarioError
    assert issubclass(errors.ScenarioError, errors.UserError)
