"""The public API is what ``__all__`` says, and every name in it exists."""

import importlib

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
    "runner",
    "runner.qoe_report",
    "runner.server",
    "runner.pipeline",
    "runner.run",
    "runner.cli",
    "runner.bench",
    "runner.conform",
    "runner.traces",
    "runner.wire",
    "runner.upstream_report",
    "runner.findings",
    "runner.results",
    "runner.bare",
    "runner.argtypes",
    "runner.summary",
    "runner.counts",
    "runner.failures",
    "runner.provenance",
    "runner.cells",
    "runner.recommend",
    "runner.adaptive_verdict",
    "runner.figures",
    "runner.report",
    "runner.labels",
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
