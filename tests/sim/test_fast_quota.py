"""The limited-key engine (sim.fast_quota) equals the SimPy model run for run and request
for request, over random cells: every browser-era profile, mode and c, in-flight caps on
either key, random 429/5xx, resets, truncated bodies, stalls and timeouts (runs that meet a
timeout are handed to SimPy), constant latencies (ties at one instant) and drawn ones."""

from __future__ import annotations

import dataclasses
import fcntl
from pathlib import Path
from typing import IO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.fast_quota as fq
from sim import Constant, ConstantInt, Quota, RunConfig, load_scenario, simulate
from sim.dists import Uniform, UniformInt
from sim.engines import pick_engine
from sim.errors import UserError
from sim.fast_quota import check_quota_engine, quota_fits, simulate_quota
from sim.scenario import Scenario
from sim.upstream import PROFILES, ErrorShape
from tests.conftest import assert_same_run

_PROFILES = sorted(PROFILES)


@st.composite
def _quota(draw: st.DrawFn, *, tts: bool) -> Quota:
    fault = st.sampled_from([0.0, 0.0, 0.05, 0.3])
    return Quota(
        max_inflight=draw(st.integers(0, 4)),
        p_429=draw(fault),
        p_5xx=draw(fault),
        status_5xx=draw(st.sampled_from([500, 503, 400] if not tts else [500, 502])),
        retry_after_s=draw(st.sampled_from([None, 0.0, 1.0, 2.5])),
        p_reset=draw(st.sampled_from([0.0, 0.0, 0.05])),
        p_truncate=draw(st.sampled_from([0.0, 0.0, 0.05])),
        p_stall=draw(st.sampled_from([0.0, 0.0, 0.0, 0.02])),
        stall_s=draw(st.sampled_from([40.0, 900.0])),
    )


@st.composite
def cells(draw: st.DrawFn) -> tuple[Scenario, RunConfig]:
    """A random limited-key cell (small: 1-6 outlines)."""
    name = draw(st.sampled_from(["default", "tts-heavy", "content-heavy", "burst-429"]))
    sc = load_scenario(name, upstream=draw(st.sampled_from(_PROFILES)))
    n = draw(st.integers(1, 6))
    changes: dict[str, object] = {
        "outlines": n,
        "quota_llm": draw(_quota(tts=False)),
        "quota_tts": draw(_quota(tts=True)),
        "request_timeout_s": draw(st.sampled_from([60.0, 300.0])),
    }
    if draw(st.booleans()):  # constant latencies: many requests at one instant
        changes |= {
            "content": Constant(draw(st.sampled_from([4.0, 10.0]))),
            "actions": Constant(draw(st.sampled_from([2.0, 4.0]))),
            "tts": Constant(draw(st.sampled_from([1.0, 2.0]))),
            "content_by_type": {},
        }
    else:
        changes["tts"] = Uniform(0.5, 3.0)
    clips = draw(st.sampled_from([ConstantInt(0), ConstantInt(1), UniformInt(0, 4)]))
    sc = sc.replace(speech_actions=clips, **changes)
    if draw(st.booleans()):
        sc = sc.with_client(provider_errors=ErrorShape.DIRECT)
    mode = draw(st.sampled_from(["serial", "hybrid", "pipelined"]))
    c = 1 if mode == "serial" else draw(st.integers(1, 6))
    tts_c = draw(st.sampled_from([None, None, 1, 3]))
    return sc, RunConfig.of(mode, c, tts_concurrency=tts_c)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=cells(), seed=st.integers(0, 50), first=st.integers(0, 20))
def test_equals_simpy_run_for_run_and_request_for_request(
    cell: tuple[Scenario, RunConfig], seed: int, first: int
) -> None:
    sc, cfg = cell
    assert quota_fits(sc, cfg)
    _, diff = check_quota_engine(sc, cfg, 12, seed=seed, first_run=first)
    assert diff is None, diff


@pytest.mark.parametrize("upstream", _PROFILES)
@pytest.mark.parametrize(("mode", "c"), [("serial", 1), ("pipelined", 3), ("hybrid", 4)])
def test_the_bench_quota_cell_equals_simpy(upstream: str, mode: str, c: int) -> None:
    base = load_scenario("default", upstream=upstream)
    sc = base.replace(
        quota_llm=dataclasses.replace(base.quota_llm, max_inflight=2, p_429=0.02),
        quota_tts=dataclasses.replace(base.quota_tts, max_inflight=3),
    )
    n, diff = check_quota_engine(sc, RunConfig.of(mode, c), 30, seed=4)
    assert diff is None, diff
    assert n > 30 * 10  # requests were compared


def test_a_timeout_hands_the_run_to_simpy() -> None:
    sc = load_scenario("default").replace(
        quota_llm=Quota(max_inflight=2, p_stall=0.2, stall_s=400.0)
    )
    got = simulate_quota(sc, RunConfig.of("pipelined", 3), 20, seed=1)
    assert got.simpy_runs  # some runs met a stalled answer (400 s > the 300 s timeout)
    res = got.results()
    assert sum(r.timeouts for r in res) > 0
    ref = simulate(sc, RunConfig.of("pipelined", 3), reps=20, seed=1, engine="simpy")
    for a, b in zip(ref, res, strict=True):
        assert_same_run(a, b)


def test_the_engine_rule_routes_only_covered_cells() -> None:
    sc = load_scenario("low-quota")
    assert pick_engine(sc, RunConfig.of("pipelined", 3), 500) == "fast_quota"
    assert pick_engine(sc, RunConfig.of("pipelined", 3, tenants=3), 500) == "simpy"
    assert pick_engine(sc, RunConfig.of("pipelined", 3, adaptive="aimd"), 500) == "simpy"
    rpm = sc.replace(quota_llm=Quota(max_inflight=2, rpm=60.0))
    assert pick_engine(rpm, RunConfig.of("pipelined", 3), 500) == "simpy"
    assert pick_engine(load_scenario("default"), RunConfig.of("pipelined", 3), 500) == "fast"
    with pytest.raises(UserError, match="limited-key engine"):
        simulate_quota(rpm, RunConfig.of("serial", 1), 10)


@pytest.mark.parametrize("stall", [False, True])
def test_the_sweeps_columns_equal_simpys_runs_frame(stall: bool) -> None:
    """What the sweep reads of this engine (its columns) is SimPy's runs frame, also when some
    runs were handed to SimPy (stalls beyond the request timeout)."""
    import pandas as pd

    from sim.schema import runs_frame

    sc = load_scenario("low-quota")
    if stall:
        sc = sc.replace(quota_llm=dataclasses.replace(sc.quota_llm, p_stall=0.1, stall_s=400.0))
    cfg = RunConfig.of("pipelined", 3)
    got = simulate_quota(sc, cfg, 40, seed=6, first_run=5)
    assert bool(got.simpy_runs) == stall
    cols = got.runs.frame()
    model = runs_frame(simulate(sc, cfg, reps=40, seed=6, run_id=5, engine="simpy"))
    pd.testing.assert_frame_equal(cols, model[list(cols.columns)])


def test_a_log_too_small_at_first_is_grown_and_the_runs_computed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled loop's request log starts at a guessed size; when the runs log more, the
    engine runs them again with room for all: the same records as SimPy's."""
    import sim.fast_quota as fq

    monkeypatch.setattr(fq, "_LOG_ROWS_PER_RUN", 1)
    sc = load_scenario("low-quota")
    _, diff = check_quota_engine(sc, RunConfig.of("pipelined", 3), 6, seed=2)
    assert diff is None, diff


def test_zero_waits_draw_every_table_first() -> None:
    """With an honoured Retry-After of 0 a caller can retry at the instant it was answered
    (a round then reads beyond its next attempt): every table is drawn up front, and the
    runs still equal SimPy's."""
    base = load_scenario("default").with_client(provider_errors=ErrorShape.DIRECT)
    sc = base.replace(outlines=4, quota_llm=Quota(max_inflight=1, p_429=0.3, retry_after_s=0.0))
    _, diff = check_quota_engine(sc, RunConfig.of("pipelined", 3), 8, seed=3)
    assert diff is None, diff


def test_only_a_process_first_call_takes_the_compile_lock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The compiled loop's first call in a process runs under the lock file (exclusive: a
    second open of the file cannot lock it meanwhile), so concurrent processes compile it
    once; the calls after it take no lock."""
    ops: list[int] = []
    excluded: list[bool] = []
    lock = tmp_path / "loop.lock"
    real = fcntl.flock

    def flock(f: IO[bytes], op: int) -> None:
        real(f, op)
        ops.append(op)
        if op == fcntl.LOCK_EX:
            with open(lock, "a+b") as other:
                try:
                    real(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    excluded.append(True)

    monkeypatch.setattr(fq._LOCK, "loaded", False)
    monkeypatch.setattr(fq._LOCK, "path", lambda: lock)
    monkeypatch.setattr(fcntl, "flock", flock)
    base = load_scenario("default")
    sc = base.replace(outlines=2, quota_llm=dataclasses.replace(base.quota_llm, max_inflight=1))
    for _ in range(2):
        simulate_quota(sc, RunConfig.of("pipelined", 2), 3, seed=4)
    assert ops == [fcntl.LOCK_EX, fcntl.LOCK_UN]
    assert excluded == [True]
    assert fq._LOCK.loaded


_STALE_CHILD = """
import sys
import sim.fast_quota_codes as codes
codes.RS_OK = int(sys.argv[1])  # as if the code had been edited since the cache was written
from sim import fast_quota_loop as fl
before = fl.codes_compiled_in()
stale = fl.recompile_if_stale([fl.codes_compiled_in])
print(before[13], stale, fl.codes_compiled_in()[13], fl.recompile_if_stale([]))
"""


def test_a_code_changed_since_the_cache_was_written_is_found_and_compiled_again(
    tmp_path: Path,
) -> None:
    """numba's cache is keyed on the loop's file only, so a code changed in
    sim.fast_quota_codes would leave the cached loop with the old one: recompile_if_stale sees
    the compiled-in codes differ from the module's and compiles again (in a cache folder of
    the test's own, on the small function that carries the codes)."""
    import os
    import subprocess
    import sys

    from sim.fast_quota_codes import RS_OK

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def child(code: int) -> list[str]:
        cmd = [sys.executable, "-c", _STALE_CHILD, str(code)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    assert child(RS_OK) == [str(RS_OK), "False", str(RS_OK), "False"]  # cached as it is
    assert child(RS_OK + 40) == [str(RS_OK), "True", str(RS_OK + 40), "False"]  # stale, redone
    assert child(RS_OK + 40) == [str(RS_OK + 40), "False", str(RS_OK + 40), "False"]  # saved
