"""Shared helpers for the tests."""

from __future__ import annotations

import math

import pytest

from sim import Constant, ConstantInt, Quota, RetryPolicy, RunResult, Scenario


def const_scenario(
    n: int = 4,
    content: float = 20.0,
    actions: float = 5.0,
    tts: float = 2.0,
    clips: int = 2,
    **kw: object,
) -> Scenario:
    """A scenario with constant latencies (closed forms apply)."""
    return Scenario(
        name="const",
        outlines=n,
        scene_types=("slide",),
        speech_actions=ConstantInt(clips),
        content=Constant(content),
        actions=Constant(actions),
        tts=Constant(tts),
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


__all__ = ["Quota", "RetryPolicy", "assert_same_run", "const_scenario", "log_key", "pytest"]
