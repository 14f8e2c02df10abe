"""Generation runs on the command line: ``scenebench sim --upstream runs`` — its flags
(registered without heavy imports) and its handler, which builds one
:class:`sim.runs_config.RunsConfig` from the flags and prints :func:`sim.runs.simulate_runs`'s
per-deployment figures (a table, or ``--json`` with every run's record under ``--per-run``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any

__all__ = ["add_runs_args", "runs_lines", "sim_runs"]


def add_runs_args(p: argparse.ArgumentParser) -> None:
    """``sim``'s generation-runs flags (with ``--upstream runs``). ``--arrival-per-hour``,
    ``--arrivals``, ``--key-inflight`` and ``--engine`` are shared with the other paths."""
    from . import argtypes as c

    g = p.add_argument_group("generation runs (--upstream runs)")
    g.add_argument(
        "--runs",
        type=c._int_in("--runs", 1, 100_000),
        default=40,
        help="runs arriving (Poisson at --arrival-per-hour; default 10/h)",
    )
    g.add_argument(
        "--max-concurrent",
        type=c._int_in("--max-concurrent", 1, 1000),
        default=4,
        help="OPENMAIC_GENERATION_RUN_MAX_CONCURRENT (default 4)",
    )
    g.add_argument(
        "--per-owner",
        type=c._int_in("--per-owner", 1, 1_000_000),
        default=2,
        help="OPENMAIC_MAX_ACTIVE_RUNS_PER_OWNER (default 2)",
    )
    g.add_argument(
        "--owners",
        type=c._int_in("--owners", 0, 1_000_000),
        default=0,
        help="owners of the Poisson runs (run r's is r %% owners; 0: one each)",
    )
    g.add_argument(
        "--tts-inflight",
        type=c._int_in("--tts-inflight", 0, 1000),
        default=None,
        help="the TTS key's in-flight limit (default: --key-inflight's, or the scenario's)",
    )
    g.add_argument(
        "--confirm",
        choices=("auto", "countdown", "wait"),
        default="auto",
        help="the outline's confirmation (default auto)",
    )
    g.add_argument(
        "--free-on-give-up",
        action="store_true",
        help="the provider frees an LLM request's slot when the client gives up",
    )
    g.add_argument("--per-run", action="store_true", help="with --json: every run's record")


def sim_runs(a: argparse.Namespace) -> int:
    """``sim --upstream runs``: one deployment cell."""
    from sim.runs import simulate_runs
    from sim.runs_config import RunsConfig, RunsSettings, load_arrivals
    from sim.scenario import load_scenario

    sc = load_scenario(a.scenario, upstream="runs")
    llm = a.key_inflight
    tts = a.tts_inflight if a.tts_inflight is not None else a.key_inflight
    sc = sc.with_quota(llm_inflight=llm, tts_inflight=tts)
    cfg = RunsConfig(
        concurrency=a.concurrency,
        max_concurrent=a.max_concurrent,
        per_owner=a.per_owner,
        runs=a.runs,
        arrival_per_hour=a.arrival_per_hour if a.arrival_per_hour is not None else 10.0,
        arrivals=load_arrivals(a.arrivals) if a.arrivals else None,
        owners=a.owners,
        settings=RunsSettings(confirm=a.confirm, free_on_give_up=a.free_on_give_up),
        keep_log=False,
    )
    res = simulate_runs(sc, cfg, a.seed, "simpy" if a.engine == "simpy" else "fast")
    if a.json:
        d: dict[str, Any] = {"summary": res.summary()}
        if a.per_run:
            d["runs"] = res.to_dict()["runs"]
        print(json.dumps(_finite(d), indent=2, sort_keys=True))
    else:
        print("\n".join(runs_lines(res.summary())))
    return 0


def _finite(v: Any) -> Any:
    """NaN → None (strict JSON)."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _finite(dataclasses.asdict(v))
    return v


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def runs_lines(s: dict[str, Any]) -> list[str]:
    """The per-deployment table."""
    rate = s["arrival_per_hour"]
    head = (
        f"scenario {s['scenario']}  upstream {s['upstream']}  c {s['concurrency']}  "
        f"max concurrent runs {s['max_concurrent']}  per owner {s['per_owner']}  "
        f"key in flight llm {s['llm_inflight'] or 'unlimited'} tts "
        f"{s['tts_inflight'] or 'unlimited'}  arrivals "
        + (f"{rate:g}/h" if rate is not None else "replayed")
    )
    pp = s["p_paused"]
    lines = [
        head,
        f"runs {s['runs']}: started {s['started']}, refused {s['refused']} (429 "
        f"ACTIVE_RUN_LIMIT), completed {s['completed']}, paused {s['paused']} "
        f"(P(paused) {'-' if pp is None else f'{pp:.3f}'})",
        f"sustained {_s(s['runs_per_hour'])} runs/hour over {s['span_s'] / 3600:.2f} h",
        f"{'':24}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}",
    ]
    for key, label in (
        ("first_scene_s", "time to first scene (s)"),
        ("wait_s", "wait for a run slot (s)"),
        ("stall_s", "stall while playing (s)"),
    ):
        v = s[key]
        lines.append(
            f"{label:24}" + "".join(f"{_s(v[p]):>9}" for p in ("mean", "p50", "p95", "p99"))
        )
    lines.append(
        f"failed scenes {s['failed_scenes']}  requests {s['requests']}  429 {s['http_429']}  "
        f"deadlines {s['timeouts']}"
    )
    return lines
