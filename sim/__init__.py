"""The model world: scenario spec, keyed draws, provider rules, SimPy model, analytic bounds."""

from .dists import (
    Constant,
    ConstantInt,
    Empirical,
    EmpiricalInt,
    Exponential,
    Gamma,
    LogNormal,
    Uniform,
    UniformInt,
)
from .fast import simulate_fast
from .model import clamp_concurrency, effective_tts_concurrency, simulate, simulate_many
from .scenario import (
    MODES,
    STEPS,
    Quota,
    RetryPolicy,
    Scenario,
    ScenarioError,
    builtin_names,
    load_scenario,
    scenario_from_mapping,
)
from .schema import SCHEMA_VERSION, RequestRecord, RunResult, requests_frame, runs_frame

__all__ = [
    "MODES",
    "SCHEMA_VERSION",
    "STEPS",
    "Constant",
    "ConstantInt",
    "Empirical",
    "EmpiricalInt",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Quota",
    "RequestRecord",
    "RetryPolicy",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Uniform",
    "UniformInt",
    "builtin_names",
    "clamp_concurrency",
    "effective_tts_concurrency",
    "load_scenario",
    "requests_frame",
    "runs_frame",
    "scenario_from_mapping",
    "simulate",
    "simulate_fast",
    "simulate_many",
]
