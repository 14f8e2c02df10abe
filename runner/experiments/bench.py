"""``scenebench bench``: speeds measured side by side in one run, reported with ratios.

Never asserted in tests (the machines are noisy); docs/cli.md quotes its output.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.config import RunConfig
from sim.engines import pick_engine, simulate
from sim.fast import simulate_fast
from sim.scenario import Scenario, load_scenario

from ..world.run import frozen_gc, run

__all__ = ["run_bench"]


def _rate(fn: Callable[[], int], min_s: float) -> tuple[float, int]:
    """Items per second of ``fn`` (which returns how many it did), repeated for ``min_s``."""
    fn()  # warm-up
    done = 0
    t0 = time.perf_counter()
    while True:
        done += fn()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return done / dt, done


def quota_scenario(base: Scenario) -> Scenario:
    """The default classroom with quotas that make 429s and retries happen at c = 3."""
    return base.replace(
        quota_llm=dataclasses.replace(base.quota_llm, max_inflight=2, p_429=0.02),
        quota_tts=dataclasses.replace(base.quota_tts, max_inflight=3),
        name=f"{base.name}+quota",
    )


PINNED_COMMIT = "6ad8a24"  # the model's pace before upstream profiles (issue 24's reference)
# (name, quota cell?, mode, c): the model cells timed in both trees, on the ``default`` scenario
PINNED_CELLS = (
    ("default pipelined c=3", False, "pipelined", 3),
    ("default serial", False, "serial", 1),
    ("default+quota pipelined c=3", True, "pipelined", 3),
)
# Times the cells in the tree at argv[1] (first on sys.path): CPU seconds per classroom of
# the SimPy model over ``reps`` classrooms, one seed per round; prints {cell: classrooms/s}.
# The pinned tree has ``simulate_many(sc, mode, c, reps, seed=)``; this one ``simulate_simpy``.
_PINNED_CHILD = """
import dataclasses, json, sys, time
sys.path.insert(0, sys.argv[1])
from sim.scenario import load_scenario
try:  # the pinned tree's entry point
    from sim.model import simulate_many
except ImportError:  # this tree's: the SimPy engine with a RunConfig (since 2c0f63b)
    from sim.config import RunConfig
    from sim.model import simulate_simpy
    def simulate_many(sc, mode, c, reps, seed):
        return simulate_simpy(sc, RunConfig.of(mode, c), reps, seed=seed)
cells, reps = json.loads(sys.argv[2]), int(sys.argv[3])
AUTO, AUTO_REPS = " [auto]", int(sys.argv[4])
REQ, PER = " [requests/s]", " [requests/classroom]"
base = load_scenario("default")
quota = base.replace(
    quota_llm=dataclasses.replace(base.quota_llm, max_inflight=2, p_429=0.02),
    quota_tts=dataclasses.replace(base.quota_tts, max_inflight=3),
)
out = {}
for name, q, mode, c in cells:
    sc = quota if q else base
    simulate_many(sc, mode, c, 10, seed=99)
    t0 = time.process_time()
    runs = simulate_many(sc, mode, c, reps, seed=1)
    spent = time.process_time() - t0
    requests = sum(r.requests for r in runs)
    out[name] = reps / spent
    out[name + REQ] = requests / spent
    out[name + PER] = requests / reps
if sys.argv[5] == "now":  # this tree: the model as simulate and the sweep run it (the rule)
    from sim.engines import simulate
    from sim.config import RunConfig
    from sim.fast_quota import warm_up
    warm_up()  # the limited-key engine's compiled loop, compiled or loaded once: not timed
for name, q, mode, c in cells if sys.argv[5] == "now" else ():
    sc = quota if q else base
    t0 = time.process_time()
    simulate(sc, RunConfig.of(mode, c), seed=1, reps=AUTO_REPS)
    out[name + AUTO] = AUTO_REPS / (time.process_time() - t0)
print(json.dumps(out))
"""


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def _pinned_tree(root: Path, dest: Path) -> str | None:
    """Extract the pinned commit's ``sim/`` into ``dest``; a reason when it cannot."""
    if not (root / ".git").exists():
        return f"not run from a git checkout ({root} has no .git)"
    try:
        got = _git(root, "archive", "--format=tar", PINNED_COMMIT, "sim")
    except OSError as e:
        return f"git is not available ({e})"
    if got.returncode != 0:
        err = got.stderr.decode(errors="replace").strip().splitlines()
        return f"git archive {PINNED_COMMIT} failed: {err[-1] if err else got.returncode}"
    with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return None


ROUNDS = 3  # alternations of the two trees; each tree's best round is kept
AUTO = " [auto]"  # a cell's key for this tree's rate on the engine rule's pick
# a cell's keys for its provider requests per CPU second, and per classroom: each tree's
# ``default`` scenario has its own client rules, so a classroom is not the same work in both
REQ, PER = " [requests/s]", " [requests/classroom]"
AUTO_REPS = 2_000  # runs per cell there: what the sweep's cells have


def _time_tree(tree: Path, reps: int, tag: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cells = json.dumps(PINNED_CELLS)
    args = [str(tree), cells, str(reps), str(AUTO_REPS), tag]
    cmd = [sys.executable, "-c", _PINNED_CHILD, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=tree)
    rates: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rates


def run_pinned_bench(*, quick: bool = False) -> dict[str, Any]:
    """The SimPy model's per-classroom rate in this tree against commit ``6ad8a24`` on the same
    cells, timed in this run: each tree in its own subprocess, alternated :data:`ROUNDS` times,
    the best round of each kept (CPU time, so a shared machine biases both alike); and this
    tree's rate on the engine the rule picks for :data:`AUTO_REPS` runs (what the sweep does)."""
    root = Path(__file__).resolve().parents[2]
    reps = 40 if quick else 400
    with tempfile.TemporaryDirectory(prefix="scenebench-pinned-") as tmp:
        reason = _pinned_tree(root, Path(tmp))
        if reason is not None:
            line = f"  model now vs {PINNED_COMMIT}: skipped, {reason}"
            return {"skipped": reason, "lines": [line]}
        best: dict[str, dict[str, float]] = {"old": {}, "now": {}}
        for _ in range(ROUNDS):
            for tag, tree in (("old", Path(tmp)), ("now", root)):
                for cell, rate in _time_tree(tree, reps, tag).items():
                    best[tag][cell] = max(rate, best[tag].get(cell, 0.0))
    cells: dict[str, dict[str, Any]] = {
        name: {
            "old_per_s": best["old"][name],
            "now_per_s": best["now"][name],
            "ratio": best["now"][name] / best["old"][name],
            "auto_engine": _auto_engine(name),
            "auto_per_s": best["now"][name + AUTO],
            "auto_ratio": best["now"][name + AUTO] / best["old"][name],
            **_per_request(best, name),
        }
        for name, *_ in PINNED_CELLS
    }
    ratios = [c["ratio"] for c in cells.values()]
    lines = [
        f"SimPy model now vs commit {PINNED_COMMIT} (same cells, each tree in a subprocess, "
        f"alternated {ROUNDS} times, best round; CPU time, {reps} classrooms per round)"
    ]
    for name, c in cells.items():
        lines.append(
            f"  {name:<30} {c['now_per_s']:>7,.0f} vs {c['old_per_s']:>7,.0f} classrooms/s  "
            f"({c['ratio']:.2f}x)"
        )
    lines.append(
        "the same, per provider request (each tree's own `default` rules: a classroom's "
        "requests differ)"
    )
    for name, c in cells.items():
        lines.append(
            f"  {name:<30} {c['now_requests_per_s']:>7,.0f} vs {c['old_requests_per_s']:>7,.0f} "
            f"requests/s  ({c['per_request_ratio']:.2f}x; {c['now_requests_per_classroom']:.1f} vs "
            f"{c['old_requests_per_classroom']:.1f} requests per classroom)"
        )
    lines.append(
        f"the model as simulate and the sweep run it now ({AUTO_REPS:,} classrooms, the "
        f"engine rule's pick) vs commit {PINNED_COMMIT}'s SimPy model, same cells"
    )
    for name, c in cells.items():
        lines.append(
            f"  {name:<30} {c['auto_per_s']:>7,.0f} vs {c['old_per_s']:>7,.0f} classrooms/s  "
            f"({c['auto_ratio']:.1f}x, {c['auto_engine']})"
        )
    return {
        "commit": PINNED_COMMIT,
        "reps": reps,
        "cells": cells,
        "min_ratio": min(ratios),
        "min_auto_ratio": min(c["auto_ratio"] for c in cells.values()),
        "lines": lines,
    }


def _per_request(best: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    """A pinned cell's work-normalised figures: provider requests per CPU second in each tree,
    their ratio, and each tree's requests per classroom (the work its rules give a classroom)."""
    old, now = best["old"], best["now"]
    return {
        "old_requests_per_s": old[name + REQ],
        "now_requests_per_s": now[name + REQ],
        "per_request_ratio": now[name + REQ] / old[name + REQ],
        "old_requests_per_classroom": old[name + PER],
        "now_requests_per_classroom": now[name + PER],
    }


def _auto_engine(name: str) -> str:
    """The engine the rule picks for a pinned cell at :data:`AUTO_REPS` runs."""
    _, quota, mode, c = next(cell for cell in PINNED_CELLS if cell[0] == name)
    base = load_scenario("default")
    sc = quota_scenario(base) if quota else base
    return pick_engine(sc, RunConfig.of(mode, c), AUTO_REPS)


SOAK_REQUESTS = 80_000  # the default soak: ratios only (memory needs >= 200,000); a stall
# of either server or the client weighs half what it did at 40,000 on a route's ratio
SOAK_REQUESTS_QUICK = 8_000


def run_load_bench(*, quick: bool = False, soak_requests: int | None = None) -> dict[str, Any]:
    """2,000 concurrent sleeping requests on each route (OpenMAIC's TTS route, OpenAI's chat,
    Anthropic's messages), then a soak of the fake provider beside a bare app, interleaved
    (:func:`runner.experiments.load.run_soak`)."""
    from .load import ALL_ROUTES, run_load, run_soak

    out: dict[str, Any] = {}
    bursts = {
        "tts": run_load(connections=2000, per_connection=1, latency_s=1.0),
        "chat": run_load(connections=2000, per_connection=1, latency_s=1.0, target="chat"),
        "messages": run_load(connections=2000, per_connection=1, latency_s=1.0, target="messages"),
    }
    n = soak_requests or (SOAK_REQUESTS_QUICK if quick else SOAK_REQUESTS)
    # chunks of about 2,500 requests, a third of them per route
    soak = run_soak(n, rounds=max(4, n // 7_500), routes=ALL_ROUTES)
    sd = out["soak"] = soak.to_dict()
    for tag, (fake, bare) in bursts.items():
        for key, r in ((f"burst_{tag}_fake", fake), (f"burst_{tag}_bare", bare)):
            out[key] = {
                "requests": r.requests,
                "seconds": r.seconds,
                "statuses": {str(k): v for k, v in r.statuses.items()},
                "non_200": sum(v for k, v in r.statuses.items() if k != 200),
                "added_p50_ms": r.added_p50_ms,
                "added_p99_ms": r.added_p99_ms,
            }
    out["burst_all_answered"] = all(
        out[f"burst_{t}_fake"]["non_200"] == 0 and out[f"burst_{t}_fake"]["requests"] == 2000
        for t in bursts
    )
    lines = [
        f"load (servers in their own processes, thin HTTP/1.1 client in another; load average "
        f"{_load(sd['load_avg_before'])} before, {_load(sd['load_avg_after'])} after the soak)"
    ]
    for tag, (bf, bb) in bursts.items():
        route = _BURST_ROUTES[tag]
        lines.append(
            f"  2,000 requests in flight at once, {route} (each sleeps 1 s): fake provider "
            f"{bf.statuses} in {bf.seconds:.2f} s, added p50 {bf.added_p50_ms:.0f} ms / "
            f"p99 {bf.added_p99_ms:.0f} ms; bare ASGI app {bb.statuses} in "
            f"{bb.seconds:.2f} s, added p50 {bb.added_p50_ms:.0f} / p99 "
            f"{bb.added_p99_ms:.0f} ms"
        )
    lines.append(
        f"  all 2,000 answered 200 on every route: {'yes' if out['burst_all_answered'] else 'NO'}"
    )
    lines.append(
        f"  soak, zero latency, 100 connections, {soak.requests:,} requests to the fake provider "
        f"(a third per route) and the same to the bare app, interleaved in {soak.rounds} rounds; "
        "a route's ratio to the bare app given its requests (then given the TTS route's):"
    )
    lines += _soak_lines(soak, sd)
    flat = sd["memory_flat"]
    verdict = (
        "not checked (half the soak under 100,000)"
        if flat is None
        else ("flat" if flat else "NOT flat")
    )
    lines.append(
        f"  fake provider resident memory: {sd['rss_start_mb']:.0f} MB at start, "
        f"{sd['rss_half_mb']:.0f} MB after {sd['rss_half_at']:,}, {sd['rss_end_mb']:.0f} MB "
        f"after {soak.requests:,} requests: {verdict} ({sd['memory_bound']})"
    )
    out["lines"] = lines
    return out


def _soak_lines(soak: Any, sd: dict[str, Any]) -> list[str]:
    """The soak's line per route on the fake provider, then the bare app's per route's
    requests (``soak``: :class:`runner.experiments.load.Soak`; ``sd``: its ``to_dict``)."""
    rows: list[tuple[str, str, Any, str]] = [
        ("fake provider, OpenMAIC's TTS route", "fake_tts", soak.tts, "tts"),
        ("fake provider, POST /v1/chat/completions", "fake_chat", soak.chat, "chat"),
        ("fake provider, POST /v1/messages", "fake_messages", soak.messages, "messages"),
        ("bare ASGI app, the TTS route's requests", "bare", soak.bare, ""),
        ("bare ASGI app, the chat requests", "bare_chat", soak.bare_chat, ""),
        ("bare ASGI app, the messages requests", "bare_messages", soak.bare_messages, ""),
    ]
    out = []
    for name, key, r, route in rows:
        if r is None:
            continue
        ratio = ""
        if route == "tts":
            ratio = f"  ({sd['tts_over_bare']:.3f} x bare)"
        elif route:
            ratio = f"  ({sd[route + '_over_bare']:.3f} x bare; {sd[route + '_over_bare_tts']:.3f})"
        out.append(
            f"    {name:<41} {r.rps:>7,.0f} req/s{ratio}, added p50 {r.added_p50_ms:.1f} / "
            f"p99 {r.added_p99_ms:.1f} ms, non-200: {sd['non_200'][key]}"
        )
    return out


_BURST_ROUTES = {
    "tts": "OpenMAIC's TTS route",
    "chat": "POST /v1/chat/completions",
    "messages": "POST /v1/messages",
}


def _load(avg: list[float]) -> str:
    return " / ".join(f"{x:.1f}" for x in avg)


def run_floor_bench(*, quick: bool = False) -> dict[str, Any]:
    """The harness's added time per request next to a bare httpx -> uvicorn request, measured
    interleaved in one run (:func:`runner.experiments.floor.measure_floor`)."""
    from .floor import measure_floor

    f = measure_floor(rounds=3 if quick else 7)
    ms = 1e3
    lines = [
        f"wall-clock floor (real ms per request beyond the {f.call_s * ms:.0f} ms asked; "
        f"medians of {f.rounds} interleaved rounds; providers in their own processes)",
        f"  harness (real pipeline -> fake provider):     {f.harness_s * ms:.3f} ms",
        f"  bare httpx -> bare uvicorn app, same sleep:   {f.bare_s * ms:.3f} ms",
        f"  difference (what the harness adds):           {f.diff_s * ms:+.3f} ms "
        f"({'within' if f.diff_s <= 0.0005 else 'OVER'} the 0.5 ms budget)",
        f"  bare round trip, zero latency:                {f.bare_rtt_s * ms:.3f} ms "
        f"(harness minus it: {(f.harness_s - f.bare_rtt_s) * ms:+.3f} ms)",
    ]
    return {**f.to_dict(), "lines": lines}


def runs_engine_cells(quick: bool = False) -> list[tuple[str, Scenario, Any]]:
    """Generation-runs cells (issue 22) the two engines are timed on: many runs sharing one
    limited LLM key at a low and a high load, the ``runs`` profile, upstream's server caps."""
    from sim.runs import RunsConfig

    base = load_scenario("default", upstream="runs")
    n = 50 if quick else 200
    return [
        (
            f"{n} runs at 10/h, LLM key 3 in flight, c = 3",
            base.with_quota(llm_inflight=3),
            RunsConfig(concurrency=3, runs=n, arrival_per_hour=10.0),
        ),
        (
            f"{n // 4} runs at 120/h, LLM key 4 in flight, TTS 3, c = 4",
            base.with_quota(llm_inflight=4, tts_inflight=3),
            RunsConfig(concurrency=4, runs=n // 4, arrival_per_hour=120.0),
        ),
    ]


def run_runs_engines_bench(*, quick: bool = False) -> dict[str, Any]:
    """Runs cells per second, SimPy model vs the heap engine (:mod:`sim.runs_fast`) and the
    compiled engine (:mod:`sim.runs_nb`), on the same cells in one process: each round runs
    every cell (a new block of draws each round) on the three engines, the order rotating;
    CPU time summed per engine."""
    from sim.runs import simulate_runs

    rounds = 2 if quick else 4
    engines = ("simpy", "fast", "compiled")
    cells: list[dict[str, Any]] = []
    for name, sc, cfg in runs_engine_cells(quick):
        simulate_runs(sc, cfg, 0, "fast")  # warm-up (imports, caches)
        simulate_runs(sc, cfg, 0, "compiled")  # (its loop compiled or loaded from the cache)
        spent = dict.fromkeys(engines, 0.0)
        requests = 0
        for i in range(rounds):
            c = dataclasses.replace(cfg, run_id=i + 1)
            for engine in engines[i % 3 :] + engines[: i % 3]:
                t0 = time.process_time()
                res = simulate_runs(sc, c, 0, engine)
                spent[engine] += time.process_time() - t0
            requests += len(res.log)
        cells.append(
            {
                "cell": name,
                "runs": cfg.n_runs,
                "requests_per_cell": requests / rounds,
                "simpy_cells_per_s": rounds / spent["simpy"],
                "fast_cells_per_s": rounds / spent["fast"],
                "compiled_cells_per_s": rounds / spent["compiled"],
                "fast_over_simpy": spent["simpy"] / spent["fast"],
                "compiled_over_simpy": spent["simpy"] / spent["compiled"],
            }
        )
    lines = [
        f"generation runs cells (--upstream runs), SimPy vs heap engine vs compiled engine, "
        f"CPU time, {rounds} rounds, the order rotating, the same cells"
    ]
    for c in cells:
        lines.append(
            f"  {c['cell']} (~{c['requests_per_cell']:,.0f} requests): SimPy "
            f"{c['simpy_cells_per_s']:.2f} cells/s, heap {c['fast_cells_per_s']:.2f} cells/s "
            f"({c['fast_over_simpy']:.1f}x), compiled {c['compiled_cells_per_s']:.2f} cells/s "
            f"({c['compiled_over_simpy']:.1f}x)"
        )
    return {"cells": cells, "lines": lines}


def quota_engine_cells() -> list[tuple[str, Scenario, RunConfig]]:
    """Limited-key cells the limited-key engine and SimPy are timed on (issue 24): the quota
    cell above in both loop shapes, and a sweep-grid cell (both keys at 2 in flight)."""
    from .sweep import apply_quota

    base = load_scenario("default")
    quota = quota_scenario(base)
    return [
        ("default+quota pipelined c=3", quota, RunConfig.of("pipelined", 3)),
        ("default+quota serial", quota, RunConfig.of("serial", 1)),
        ("default quota 2 pipelined c=5", apply_quota(base, 2), RunConfig.of("pipelined", 5)),
    ]


def run_quota_engine_bench(*, quick: bool = False) -> dict[str, Any]:
    """Classrooms per CPU second on limited-key cells, SimPy vs the limited-key engine
    (:mod:`sim.fast_quota`), in one process: each round runs every cell on both engines with
    the same runs (a new seed each round), the order alternating; CPU time summed, in two parts
    per engine: the model (SimPy's results; the engine's columns) and the frame the sweep
    saves from them (:func:`runner.experiments.sweep._sim_frame`: ``runs_frame`` of SimPy's
    results, the engine's ``frame()``). The ratio is taken to the same point on both sides: a
    sweep's cell (model and frame), and the model alone."""
    from sim.fast_quota import simulate_quota, warm_up

    reps = 500 if quick else 2000
    rounds = 2 if quick else 4
    compile_s, cached = warm_up()  # the compiled loop's one-off cost, outside the ratios
    cells = [_quota_cell(name, sc, cfg, reps, rounds) for name, sc, cfg in quota_engine_cells()]
    lines = [
        f"limited-key engine (sim.fast_quota) vs SimPy on quota cells, CPU time, {rounds} "
        f"rounds alternating, {reps} classrooms per cell and call (per round SimPy 1 call, the "
        f"engine {ENGINE_CALLS}); a sweep's cell (the model and the frame the sweep saves, on "
        "both sides), in brackets the model alone"
    ]
    how = "loaded from numba's cache" if cached else "compiled: no cache yet"
    lines.append(f"  the engine's compiled loop, once per process: {compile_s:.2f} s ({how})")
    for c in cells:
        lines.append(
            f"  {c['cell']:<30} SimPy {c['simpy_per_s']:>7,.0f}/s, fast_quota "
            f"{c['fast_quota_per_s']:>8,.0f}/s  ({c['fast_quota_over_simpy']:.1f}x) "
            f"[{c['model_over_simpy']:.1f}x]"
        )
    # the engine's rate grows with the runs it steps together (a call's fixed cost is spread):
    # the first cell once more at 5x the runs per call, against that cell's SimPy rate above
    big = reps * 5
    name, sc, cfg = quota_engine_cells()[0]
    t0 = time.process_time()
    simulate_quota(sc, cfg, big, seed=999).runs.frame()
    big_rate = big / (time.process_time() - t0)
    ratio = big_rate / cells[0]["simpy_per_s"]
    lines.append(
        f"  {name}, {big:,} runs per call: fast_quota {big_rate:,.0f}/s ({ratio:.1f}x SimPy above)"
    )
    large = {"cell": name, "reps": big, "fast_quota_per_s": big_rate, "over_simpy": ratio}
    ratios = [c["fast_quota_over_simpy"] for c in cells]
    return {
        "cells": cells,
        "min_ratio": min(ratios),
        "large_batch": large,
        "compile_s": compile_s,
        "compile_cached": cached,
        "lines": lines,
    }


ENGINE_CALLS = 5  # the engine's cells per round of _quota_cell, each with its own seed


def _quota_cell(name: str, sc: Scenario, cfg: RunConfig, reps: int, rounds: int) -> dict[str, Any]:
    """One cell of :func:`run_quota_engine_bench`: CPU seconds per engine and part, summed over
    the rounds, and the rates and ratios from them. Per round SimPy runs the cell once and the
    engine :data:`ENGINE_CALLS` times (the first on SimPy's seed, the rest on seeds of their
    own): a SimPy cell takes 20-50x an engine call, and a few ms of the machine's noise in a
    round weigh on a short measure most."""
    spent = {(e, part): 0.0 for e in ("simpy", "fast_quota") for part in ("model", "frame")}
    # warm-up, untimed: each engine once at the cell's size (a process's first call of a size
    # maps its arrays: the engine's first 2,000-run call after a small one took ~35% longer,
    # with ~2,500 page faults against ~0 after; a sweep's worker runs many cells)
    for engine in ("simpy", "fast_quota"):
        _quota_run(sc, cfg, reps, 10_000, engine)
    calls = {"simpy": 1, "fast_quota": ENGINE_CALLS}
    for i in range(rounds):
        for engine in ("simpy", "fast_quota") if i % 2 == 0 else ("fast_quota", "simpy"):
            for k in range(calls[engine]):
                model_s, frame_s = _quota_run(sc, cfg, reps, 100 + i + 1000 * k, engine)
                spent[engine, "model"] += model_s
                spent[engine, "frame"] += frame_s
    runs = {e: reps * rounds * n for e, n in calls.items()}
    per_s = {e: runs[e] / (spent[e, "model"] + spent[e, "frame"]) for e in calls}
    model_per_s = {e: runs[e] / spent[e, "model"] for e in calls}
    return {
        "cell": name,
        "reps": reps,
        "rounds": rounds,
        "calls_per_round": calls,
        "cpu_s": {f"{e}_{part}": v for (e, part), v in spent.items()},
        "simpy_per_s": per_s["simpy"],
        "fast_quota_per_s": per_s["fast_quota"],
        "fast_quota_over_simpy": per_s["fast_quota"] / per_s["simpy"],
        "model_over_simpy": model_per_s["fast_quota"] / model_per_s["simpy"],
    }


def _quota_run(
    sc: Scenario, cfg: RunConfig, reps: int, seed: int, engine: str
) -> tuple[float, float]:
    """CPU seconds of one quota cell on ``engine``: the model, then the frame a sweep saves."""
    from sim.fast_quota import simulate_quota
    from sim.schema import runs_frame

    t0 = time.process_time()
    if engine == "simpy":
        res: Any = simulate(sc, cfg, reps=reps, seed=seed, engine=engine)
        t1 = time.process_time()
        runs_frame(res)
    else:
        res = simulate_quota(sc, cfg, reps, seed=seed).runs
        t1 = time.process_time()
        res.frame()
    return t1 - t0, time.process_time() - t1


def run_bench(
    *, quick: bool = False, load: bool = True, soak_requests: int | None = None
) -> dict[str, Any]:
    base = load_scenario("default")
    quota = quota_scenario(base)
    min_s = 0.5 if quick else 2.0
    batch = 100 if quick else 500
    fast_batch = 20_000 if quick else 100_000
    out: dict[str, Any] = {}

    cfg = RunConfig.of("pipelined", 3)
    probe = simulate(quota, cfg, reps=200, seed=1, engine="simpy")
    out["quota_cell_429_per_run"] = sum(r.http_429 for r in probe) / len(probe)
    out["quota_cell_retries_per_run"] = sum(r.retries for r in probe) / len(probe)

    seed = [0]

    def simpy_quota() -> int:
        seed[0] += 1
        simulate(quota, cfg, reps=batch, seed=seed[0], engine="simpy")
        return batch

    def simpy_free() -> int:
        seed[0] += 1
        simulate(base, cfg, reps=batch, seed=seed[0], engine="simpy")
        return batch

    def fast_free() -> int:
        seed[0] += 1
        simulate_fast(base, cfg, fast_batch, seed=seed[0])  # the columns, not RunResults
        return fast_batch

    def virtual_real() -> int:
        seed[0] += 1
        run(quota, cfg, clock="virtual", seed=seed[0])
        return 1

    out["simpy_quota_per_s"], _ = _rate(simpy_quota, min_s)
    out["simpy_free_per_s"], _ = _rate(simpy_free, min_s)
    out["fast_free_per_s"], _ = _rate(fast_free, min_s)
    out["virtual_real_per_s"], _ = _rate(virtual_real, min_s)
    out["fast_over_simpy"] = out["fast_free_per_s"] / out["simpy_free_per_s"]
    out["simpy_over_virtual_real"] = out["simpy_quota_per_s"] / out["virtual_real_per_s"]
    out["lines"] = [
        "scenebench bench (one process, one core; classrooms of the default scenario, "
        "10 scenes, pipelined, c = 3)",
        f"  SimPy model, quotas active (LLM 2 in flight + 2% random 429, TTS 3 in flight; "
        f"{out['quota_cell_429_per_run']:.1f} 429s and "
        f"{out['quota_cell_retries_per_run']:.1f} retries per run): "
        f"{out['simpy_quota_per_s']:,.0f} classrooms/s",
        f"  SimPy model, quota-free:                 {out['simpy_free_per_s']:,.0f} classrooms/s",
        f"  vectorised exact path, quota-free:       {out['fast_free_per_s']:,.0f} "
        f"classrooms/s  ({out['fast_over_simpy']:.0f}x SimPy)",
        f"  real pipeline, virtual clock, quotas:    {out['virtual_real_per_s']:,.1f} "
        f"classrooms/s  (SimPy is {out['simpy_over_virtual_real']:.0f}x faster)",
    ]
    out["model_vs_pinned"] = run_pinned_bench(quick=quick)
    out["lines"] += out["model_vs_pinned"]["lines"]
    out["floor"] = run_floor_bench(quick=quick)
    out["lines"] += out["floor"]["lines"]
    out["runs"] = run_runs_bench(min_s)  # generation runs (issue 22)
    out["lines"] += out["runs"]["lines"]
    if load:
        out["load"] = run_load_bench(quick=quick, soak_requests=soak_requests)
        out["lines"] += out["load"]["lines"]
    # the engine ratios as in a fresh process: what the sections above left alive is kept out
    # of the collector's sight, else a full collection over it (tens of ms) lands in whichever
    # engine's few-ms call trips it (the compiled runs engine measured 8-9x instead of 27-34x)
    with frozen_gc():
        out["runs_engines"] = run_runs_engines_bench(quick=quick)
        out["fast_quota"] = run_quota_engine_bench(quick=quick)
    out["lines"] += out["runs_engines"]["lines"]
    out["lines"] += out["fast_quota"]["lines"]
    from .grid_bench import run_grid_bench  # the full default grids' time (issue 24)

    out["grid"] = run_grid_bench(quick=quick)
    out["lines"] += out["grid"]["lines"]
    return out


def run_runs_bench(min_s: float) -> dict[str, Any]:
    """Generation-runs cells per second (issue 22): the engines' ``limited-key`` check cell
    (:func:`sim.runs.check_cells`: 8 runs on a 3-slot LLM key, c = 3, arrivals 30/h) in the
    SimPy model, the heap engine, the compiled engine where it applies (:func:`sim.runs_nb.nb_fits`;
    else ``compiled_per_s`` is None), by CPU time in rotating rounds (:func:`_rotating_rates`),
    and the real world under the virtual clock (asyncio + httpx against the fake provider's
    ``/v1`` endpoints, :mod:`runner.world.runs_port`), by the wall clock."""
    from sim.runs import check_cells, simulate_runs
    from sim.runs_nb import nb_fits

    from ..world.runs_port import run_runs_real

    _, sc, cfg, seed0 = next(c for c in check_cells() if c[0] == "limited-key")
    block = [0]

    def cell(run: Callable[[Any], object]) -> Callable[[], int]:
        def one() -> int:
            block[0] += 1
            run(dataclasses.replace(cfg, run_id=block[0]))
            return 1

        return one

    def on(engine: str) -> Callable[[Any], object]:
        return lambda c: simulate_runs(sc, c, seed0, engine)

    engines = ["simpy", "fast"] + ["compiled"] * nb_fits(sc, cfg)
    rates = _rotating_rates({e: cell(on(e)) for e in engines}, min_s)
    out: dict[str, Any] = {"runs_per_cell": cfg.n_runs}
    out["simpy_per_s"], out["fast_per_s"] = rates["simpy"], rates["fast"]
    out["fast_over_simpy"] = out["fast_per_s"] / out["simpy_per_s"]
    out["compiled_per_s"] = out["compiled_over_simpy"] = None
    if "compiled" in rates:
        out["compiled_per_s"] = rates["compiled"]
        out["compiled_over_simpy"] = out["compiled_per_s"] / out["simpy_per_s"]
    out["real_virtual_per_s"], _ = _rate(cell(lambda c: run_runs_real(sc, c, seed0)), min_s)
    out["simpy_over_real"] = out["simpy_per_s"] / out["real_virtual_per_s"]
    out["lines"] = [
        f"generation runs (--upstream runs; cells of {cfg.n_runs} runs on a 3-slot LLM key, "
        f"c = 3, 30 runs/h; the engines by CPU time in {_ROUNDS} rounds, the order rotating; "
        "the real world by the wall clock)",
        f"  SimPy model:                       {out['simpy_per_s']:,.1f} runs cells/s",
        f"  heap engine:                       {out['fast_per_s']:,.1f} runs cells/s",
        _compiled_line(out),
        f"  real world, virtual clock (/v1):   {out['real_virtual_per_s']:,.2f} runs cells/s"
        f"  (SimPy is {out['simpy_over_real']:.0f}x faster)",
    ]
    return out


_ROUNDS = 4  # rounds of :func:`_rotating_rates`


def _rotating_rates(fns: dict[str, Callable[[], int]], min_s: float) -> dict[str, float]:
    """Items per CPU second of each of ``fns`` (each returns how many it did): each called
    once untimed, then in :data:`_ROUNDS` rounds, the order rotating, each called until it
    has spent ``min_s / _ROUNDS`` CPU seconds in the round (once at least)."""
    names = list(fns)
    for fn in fns.values():
        fn()  # warm-up
    done = dict.fromkeys(names, 0)
    spent = dict.fromkeys(names, 0.0)
    for i in range(_ROUNDS):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.process_time()
            while True:
                done[name] += fns[name]()
                dt = time.process_time() - t0
                if dt >= min_s / _ROUNDS:
                    break
            spent[name] += dt
    return {name: done[name] / spent[name] for name in names}


def _compiled_line(out: dict[str, Any]) -> str:
    """The generation-runs section's compiled-engine line."""
    if out["compiled_per_s"] is None:
        return "  compiled engine:                   does not apply (sim.runs_nb.nb_fits)"
    return (
        f"  compiled engine:                   {out['compiled_per_s']:,.1f} runs cells/s"
        f"  ({out['compiled_over_simpy']:.1f}x SimPy, "
        f"{out['compiled_per_s'] / out['fast_per_s']:.1f}x the heap engine)"
    )
