"""The server *job* path on the command line: ``sim --client server`` (and ``--key-gate``),
``scenebench capacity`` and ``validate --exact --client server``: their flags (registered
without the model's heavy imports) and their handlers, which build the scenario from the flags,
run :mod:`sim.jobs` / :mod:`runner.experiments.server_capacity` and print or write the result
through :mod:`runner.report.server_capacity`."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from sim.scenario import Scenario

__all__ = [
    "add_capacity_parser",
    "add_server_args",
    "capacity",
    "sim_server",
    "validate_server",
]


def _cli() -> Any:
    from . import argtypes

    return argtypes


def _capacity(a: argparse.Namespace) -> int:
    return capacity(a)


def add_server_args(p: argparse.ArgumentParser) -> None:
    """``sim``'s server-path flags."""
    c = _cli()
    p.add_argument("--client", choices=("browser", "server"), default="browser")
    p.add_argument("--arrival-per-hour", type=c._positive_float("--arrival-per-hour"))
    p.add_argument("--jobs", type=c._int_in("--jobs", 1, 100_000), default=200)
    p.add_argument("--arrivals", default=None, help="a file of job arrival times (s), one a line")
    p.add_argument("--media-concurrency", type=c._int_in("--media-concurrency", 1, 1000), default=1)
    p.add_argument(
        "--key-gate",
        action="store_true",
        help="one gate per key shared by every job (--client server) or classroom (--tenants)",
    )
    p.add_argument(
        "--key-inflight",
        type=c._int_in("--key-inflight", 1, 1000),
        default=None,
        help="with --client server or --key-gate: both keys allow this many in flight",
    )
    p.add_argument("--model-retries", type=c._int_in("--model-retries", 0, 20), default=None)
    p.add_argument("--job-retries", type=c._int_in("--job-retries", 0, 20), default=None)
    p.add_argument("--per-job", action="store_true", help="with --json: every job's record too")


def add_capacity_parser(sub: Any) -> None:
    """Register ``scenebench capacity``."""
    c = _cli()
    p = sub.add_parser("capacity", help="server path: key saturation, p95 vs arrival rate")
    c._add_scenario(p)
    p.add_argument("--key-inflight", type=c._int_in("--key-inflight", 1, 1000), default=5)
    p.add_argument(
        "--concurrency", type=c._int_list("--concurrency", 1, 10), default=list(range(1, 11))
    )
    p.add_argument("--quotas", type=c._int_list("--quotas", 0, 1000), default=[3, 5, 10])
    p.add_argument("--jobs", type=c._int_in("--jobs", 2, 100_000), default=200)
    p.add_argument("--tenant-reps", type=c._int_in("--tenant-reps", 0), default=100)
    p.add_argument("--seed", type=c._int_in("--seed", 0), default=0)
    p.add_argument("--out", default="results/capacity")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_capacity)


def _keyed(a: argparse.Namespace) -> Scenario:
    from sim.scenario import load_scenario

    sc = load_scenario(a.scenario, upstream=a.upstream)
    if a.key_inflight is not None:
        sc = sc.with_quota(llm_inflight=a.key_inflight, tts_inflight=a.key_inflight)
    return sc


def _server_sc(a: argparse.Namespace) -> Scenario:
    from sim.jobs import JOB_RETRY, MODEL_RETRY, server_scenario

    sc = _keyed(a)
    model = None  # the profile's (sim.jobs.model_retry_of)
    job = JOB_RETRY if a.job_retries is None else None
    if a.model_retries is not None:
        model = dataclasses.replace(MODEL_RETRY, max_retries=a.model_retries)
    if job is None:
        job = dataclasses.replace(JOB_RETRY, max_retries=a.job_retries)
    return server_scenario(sc, model_retry=model, job_retry=job)


def _read_arrivals(path: str) -> list[float]:
    """``--arrivals``: job arrival times, one a line; a one-line :class:`UsageError` else."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split()
    except OSError as e:
        raise UsageError(f"--arrivals: cannot read {path!r} ({e.strerror})") from None
    try:
        out = [float(x) for x in lines]
    except ValueError:
        raise UsageError(f"--arrivals: {path!r} must hold numbers (seconds), one a line") from None
    if not out or any(not (math.isfinite(t) and t >= 0) for t in out):
        raise UsageError(f"--arrivals: {path!r} must hold at least one finite time >= 0")
    return out


def _browser_keygate(a: argparse.Namespace) -> int:
    """``scenebench sim --key-gate`` (browser): ``--tenants`` classrooms per run, every call
    through the key-wide gates; the browser's summary."""
    from sim.jobs import simulate_keygate_tenants as keygate_tenants

    from ..experiments.replications import summary
    from ..store.stamps import dumps

    sc = _keyed(a)
    results = [
        x
        for r in range(a.reps)
        for x in keygate_tenants(
            sc, a.mode, a.concurrency or 0, a.tenants, seed=a.seed, run_id=r,
            tts_concurrency=a.tts_concurrency, stagger_s=a.stagger_s, stagger_dist=a.stagger_dist,
        )
    ]  # fmt: skip
    s = summary(results) | {
        "scenario": sc.name,
        "client": "browser",
        "mode": a.mode,
        "concurrency": results[0].concurrency,
        "tenants": a.tenants,
        "key_gate": True,
        "seed": a.seed,
    }
    if a.json:
        print(dumps(s))
        return 0
    mk = s["makespan_s"]
    print(
        f"scenario {sc.name}  client browser  key-wide gate  mode {a.mode}  concurrency "
        f"{s['concurrency']}  tenants {a.tenants}  reps {a.reps}  seed {a.seed}"
    )
    print(
        f"makespan (s): mean {mk['mean']:.1f}  p50 {mk['p50']:.1f}  p95 {mk['p95']:.1f}  "
        f"P(any failed) {s['p_any_failed']:.3f}  429s per classroom {s['http_429_mean']:.2f}"
    )
    return 0


def sim_server(a: argparse.Namespace) -> int:
    """``scenebench sim --client server`` (and ``--key-gate`` for browser tenants)."""
    if a.client == "browser":
        if not a.key_gate:
            raise UsageError("--key-inflight: only with --client server or --key-gate")
        return _browser_keygate(a)
    arrivals = _read_arrivals(a.arrivals) if a.arrivals else None
    if arrivals is None and a.arrival_per_hour is None:
        raise UsageError("--arrival-per-hour: required with --client server (or give --arrivals)")
    from sim.jobs import simulate_jobs

    from ..store.stamps import dumps

    sc = _server_sc(a)
    run = simulate_jobs(
        sc,
        a.mode,
        a.concurrency or 0,
        jobs=a.jobs,
        arrival_per_hour=a.arrival_per_hour,
        arrivals_s=arrivals,
        seed=a.seed,
        media_concurrency=a.media_concurrency,
        key_gate=a.key_gate,
    )
    s = run.summary() | {"seed": a.seed, "arrival_per_hour": a.arrival_per_hour}
    if a.per_job:
        s["per_job"] = [dataclasses.asdict(r) for r in run.records]
    if a.json:
        print(dumps(s))
        return 0
    lat = s["job_latency_s"]
    print(
        f"scenario {s['scenario']}  client server  mode {a.mode}  concurrency {s['concurrency']}"
        f"  media {a.media_concurrency}  key gate {'on' if a.key_gate else 'off'}  jobs "
        f"{s['jobs']}  seed {a.seed}"
    )
    print(
        f"job latency (s): p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
        f"failed jobs {s['failed_jobs']}  429s {s['http_429']}  jobs/h {s['jobs_per_hour']:.2f}"
    )
    use = s["key"]["llm"]["utilisation"]
    print(f"LLM key: {s['key']['llm']['mean_in_flight']:.2f} in flight on average" + (
        f" ({use:.0%} of its limit)" if use is not None else ""
    ))  # fmt: skip
    return 0


def capacity(a: argparse.Namespace) -> int:
    """``scenebench capacity``."""
    from sim.scenario import load_scenario

    from ..experiments.server_capacity import run_capacity
    from ..report.server_capacity import write_capacity
    from ..store.stamps import dumps

    browser = load_scenario(a.scenario, upstream=a.upstream)
    data = run_capacity(
        browser, a.key_inflight, a.concurrency, a.quotas,
        jobs=a.jobs, seed=a.seed, tenant_reps=a.tenant_reps,
    )  # fmt: skip
    cmd = (
        f"scenebench capacity --scenario {a.scenario} --key-inflight {a.key_inflight} "
        f"--concurrency {','.join(map(str, a.concurrency))} --quotas "
        f"{','.join(map(str, a.quotas))} --jobs {a.jobs} --tenant-reps {a.tenant_reps} "
        f"--seed {a.seed}"
    )
    text = write_capacity(data, Path(a.out), cmd)
    if a.json:
        print(dumps({"saturation_per_hour": data.load.saturation_per_hour, "rows": data.rows}))
    else:
        print(text)
    return 0


def validate_server(a: argparse.Namespace, names: Sequence[str]) -> int:
    """``scenebench validate --exact --client server``: server jobs (key gate off and on)
    and key-gated tenants, model vs real pipeline, virtual clock, run for run."""
    from sim.scenario import load_scenario

    from ..store.stamps import dumps
    from ..world.job_port import validate_jobs_exact

    if not a.exact:
        raise UsageError("--client server: validate it with --exact (virtual clock)")
    scs = [load_scenario(n, upstream=(a.upstream or [None])[0]) for n in names]
    rep = validate_jobs_exact(scs, runs=a.runs or 1, seed=a.seed)
    if a.json:
        print(dumps(rep))
    else:
        print(
            f"validate --exact --client server: {rep['cells']} cells, {rep['runs']} jobs and "
            f"classrooms, {rep['requests']} requests ({rep['http_429']} answered 429) over "
            f"{', '.join(names)}"
        )
        print(
            "real server jobs (virtual clock) and model agree on every timeline"
            if rep["ok"]
            else f"DIVERGED: {rep['divergences'][0]}"
        )
    return 0 if rep["ok"] else 1
