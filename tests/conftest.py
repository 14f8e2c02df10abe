"""Shared helpers for the tests."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sim import Constant, ConstantInt, Quota, RetryPolicy, RunResult, Scenario, profile
from sim.upstream import NO_RETRY, ErrorShape, Handoff

# The port's rules before upstream profiles (scenebench main up to 6ad8a24): the route
# retries of pr660 with a loop scene's clips at c, applied by the client to the provider's own
# 429 (the ``direct`` shape), no foreground first scene, content-first hand-off, no
# hadContentFailure status. The older tests keep their closed forms under it;
# tests/sim/test_upstream.py covers the profiles.
LEGACY = dataclasses.replace(
    profile("pr660"),
    upstream="pr660",
    tts_at_concurrency=True,
    foreground_first_scene=False,
    handoff=Handoff.CONTENT_FIRST,
    content_failure_pauses=False,
    provider_errors=ErrorShape.DIRECT,
)


def const_scenario(
    n: int = 4,
    content: float = 20.0,
    actions: float = 5.0,
    tts: float = 2.0,
    clips: int = 2,
    **kw: object,
) -> Scenario:
    """A scenario with constant latencies (closed forms apply), under :data:`LEGACY` unless
    ``client`` is given; ``retry_llm`` / ``retry_tts`` set the client's budgets."""
    client = kw.pop("client", LEGACY)
    retries = {k: kw.pop(k) for k in ("retry_llm", "retry_tts") if k in kw}
    client = dataclasses.replace(client, **retries)  # type: ignore[arg-type]
    return Scenario(
        name="const",
        outlines=n,
        scene_types=("slide",),
        speech_actions=ConstantInt(clips),
        content=Constant(content),
        actions=Constant(actions),
        tts=Constant(tts),
        client=client,
        **kw,
    )  # type: ignore[arg-type]


def assert_same_run(a: RunResult, b: RunResult, *, ignore: tuple[str, ...] = ("world",)) -> None:
    """Field-by-field equality, NaN equal to NaN."""
    ra, rb = a.row(), b.row()
    for k in ra:
        if k in ignore:
            continue
        x, y = ra[k], rb[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        assert x == y, f"{k}: {x!r} != {y!r} (classroom {a.classroom})"


def log_key(r: object) -> tuple[object, ...]:
    return (r.step, r.order, r.clip, r.attempt)  # type: ignore[attr-defined]


def legacy(sc: Scenario) -> Scenario:
    """``sc`` under :data:`LEGACY` (a built-in scenario as the older tests knew it)."""
    return sc.replace(client=LEGACY)


__all__ = [
    "LEGACY",
    "NO_RETRY",
    "Quota",
    "RetryPolicy",
    "assert_same_run",
    "const_scenario",
    "legacy",
    "log_key",
    "pytest",
]


def swept(spec, **kw):
    """``run_sweep`` then the report, as ``scenebench sweep`` does (the experiment returns its
    folder; rendering is the report layer's): the folder."""
    from runner.experiments.sweep import run_sweep
    from runner.report.sections import render_results

    d = run_sweep(spec, **kw)
    if (d / "runs.parquet").exists():
        render_results(d)
    return d
