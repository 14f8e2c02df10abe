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
from .qoe import Playback, QoERule, qoe_us
from .rules import Mode, RunStatus, Step, parse_knob
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
from .upstream import DEFAULT_PROFILE, PROFILES, ClientProfile, profile, profile_names

__all__ = [
    "DEFAULT_PROFILE",
    "MODES",
    "PROFILES",
    "SCHEMA_VERSION",
    "STEPS",
    "ClientProfile",
    "Constant",
    "ConstantInt",
    "Empirical",
    "EmpiricalInt",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Mode",
    "Playback",
    "QoERule",
    "Quota",
    "RequestRecord",
    "RetryPolicy",
    "RunResult",
    "RunStatus",
    "Scenario",
    "ScenarioError",
    "Step",
    "Uniform",
    "UniformInt",
    "builtin_names",
    "clamp_concurrency",
    "effective_tts_concurrency",
    "load_scenario",
    "parse_knob",
    "profile",
    "profile_names",
    "qoe_us",
    "requests_frame",
    "runs_frame",
    "scenario_from_mapping",
    "simulate",
    "simulate_fast",
    "simulate_many",
]
