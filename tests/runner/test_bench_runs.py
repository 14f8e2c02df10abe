"""``bench``'s generation-runs section: SimPy, the heap engine and, where it applies, the
compiled engine, in its JSON and its lines (speed itself is never asserted; the real world's
column is stubbed here: tests/runner/test_runs_port.py covers the port)."""

from __future__ import annotations

from typing import Any

import pytest

from runner.experiments import bench
from runner.world import runs_port
from sim import runs_nb


def _section(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(runs_port, "run_runs_real", lambda sc, cfg, seed: None)
    return bench.run_runs_bench(0.0)  # each engine: a warm-up call and one timed call


def test_the_compiled_engine_is_a_third_column_where_it_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _section(monkeypatch)
    assert out["runs_per_cell"] == 8
    for key in ("simpy_per_s", "fast_per_s", "compiled_per_s"):
        assert out[key] > 0
    assert out["fast_over_simpy"] == out["fast_per_s"] / out["simpy_per_s"]
    assert out["compiled_over_simpy"] == out["compiled_per_s"] / out["simpy_per_s"]
    lines = out["lines"]
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "SimPy model",
        "heap engine",
        "compiled engine",
        "real world, virtual clock (/v1)",
    ]
    assert f"({out['compiled_over_simpy']:.1f}x SimPy, " in lines[3]


def test_where_the_compiled_engine_does_not_apply_its_column_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runs_nb, "nb_fits", lambda sc, cfg: False)
    out = _section(monkeypatch)
    assert out["compiled_per_s"] is None and out["compiled_over_simpy"] is None
    assert out["fast_per_s"] > 0
    assert out["lines"][3] == (
        "  compiled engine:                   does not apply (sim.runs_nb.nb_fits)"
    )


def test_rates_are_cpu_time_in_rounds_the_order_rotating_the_warm_up_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    calls: list[str] = []

    def fn(name: str, cost_s: float, items: int) -> Any:
        def one() -> int:
            # each one's first call (the warm-up) costs 100 s: it must not count
            clock[0] += 100.0 if name not in calls else cost_s
            calls.append(name)
            return items

        return one

    monkeypatch.setattr(bench.time, "process_time", lambda: clock[0])
    rates = bench._rotating_rates({"a": fn("a", 1.0, 2), "b": fn("b", 0.25, 1)}, min_s=2.0)
    # a round gives each 0.5 CPU s at least: a one call (1 s), b two (0.5 s)
    assert calls == ["a", "b"] + ["a", "b", "b", "b", "b", "a"] * 2
    assert rates == {"a": pytest.approx(8 / 4.0), "b": pytest.approx(8 / 2.0)}
