"""The model world: scenario spec, keyed draws, provider rules, SimPy model, analytic bounds.

Names are imported on first use (PEP 562), so ``import sim`` — and the command line's
``--help`` — stay light; ``from sim import simulate`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Constant": "dists",
    "ConstantInt": "dists",
    "Empirical": "dists",
    "EmpiricalInt": "dists",
    "Exponential": "dists",
    "Gamma": "dists",
    "LogNormal": "dists",
    "Uniform": "dists",
    "UniformInt": "dists",
    "simulate_fast": "fast",
    "clamp_concurrency": "rules",
    "simulate": "engines",
    "pick_engine": "engines",
    "RunConfig": "config",
    "Policy": "rules",
    "ClockKind": "rules",
    "CallMachine": "rules",
    "MODES": "rules",
    "STEPS": "scenario",
    "Quota": "scenario",
    "RetryPolicy": "rules",
    "Scenario": "scenario",
    "ScenarioError": "errors",
    "UserError": "errors",
    "builtin_names": "catalog",
    "load_scenario": "scenario",
    "scenario_from_mapping": "scenario",
    "Mode": "rules",
    "RunStatus": "rules",
    "Step": "rules",
    "parse_knob": "rules",
    "SCHEMA_VERSION": "schema",
    "RequestRecord": "schema",
    "RunResult": "schema",
    "requests_frame": "schema",
    "runs_frame": "schema",
    "DEFAULT_PROFILE": "upstream",
    "PROFILES": "upstream",
    "ClientProfile": "upstream",
    "profile": "upstream",
    "profile_names": "upstream",
    "Playback": "qoe",
    "QoERule": "qoe",
    "qoe_us": "qoe",
    "RUNS_PROFILE": "upstream",
    "RunsConfig": "runs_config",
    "RunsSettings": "runs_config",
    "simulate_runs": "runs",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
