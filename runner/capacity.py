"""The server path on the command line: ``sim --client server`` and ``scenebench capacity``.

* :func:`sim_server`: one cell of server jobs (model), printed as a table or JSON
  (``job_latency_s`` p50/p95/p99, ``failed_jobs``, ``jobs_per_hour``, 429s, key use);
* :func:`capacity`: for c = 1..10, p95 job latency and sustained jobs per hour vs
  arrival rate on one key (the hockey stick, with the M/G/1-style line of
  :mod:`sim.capacity`), the saturation rate per ``c``, a server-path recommendation line
  per quota profile, and per-classroom vs key-wide gates on the tenants grid; writes
  ``capacity-<scenario>.png``, ``SERVER.md`` and (when present) a section of ``REPORT.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.capacity import KeyLoad, job_alone_s, key_load
from sim.jobs import JOB_RETRY, MODEL_RETRY, server_scenario, simulate_jobs
from sim.jobs import simulate_keygate_tenants as keygate_tenants
from sim.scenario import Scenario, load_scenario

from .errors import UsageError
from .stamps import dumps
from .summary import summary

__all__ = [
    "capacity",
    "recommend_line",
    "sim_server",
    "sweep",
    "tenants_grid",
]

FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.15)  # of the closed-form saturation
SECTION = "## Server path: key capacity"


def _keyed(a: argparse.Namespace) -> Scenario:
    sc = load_scenario(a.scenario, upstream=a.upstream)
    if a.key_inflight is not None:
        sc = sc.with_quota(llm_inflight=a.key_inflight, tts_inflight=a.key_inflight)
    return sc


def _server_sc(a: argparse.Namespace) -> Scenario:
    sc = _keyed(a)
    model = MODEL_RETRY if a.model_retries is None else None
    job = JOB_RETRY if a.job_retries is None else None
    if model is None:
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


def sweep(
    sc: Scenario,
    cs: Sequence[int],
    per_hours: Sequence[float],
    *,
    jobs: int,
    seed: int,
    key_gate: bool = True,
    mode: str = "pipelined",
) -> list[dict[str, Any]]:
    """One server cell per (c, arrival rate): the summary's numbers, flat."""
    rows = []
    for c in cs:
        for lam in per_hours:
            run = simulate_jobs(
                sc, mode, c, jobs=jobs, arrival_per_hour=lam, seed=seed, key_gate=key_gate
            )
            s = run.summary()
            rows.append(
                {
                    "c": c,
                    "per_hour": lam,
                    "p95_s": s["job_latency_s"]["p95"],
                    "p50_s": s["job_latency_s"]["p50"],
                    "jobs_per_hour": s["jobs_per_hour"],
                    "failed_share": s["failed_jobs"] / s["jobs"],
                    "http_429": s["http_429"],
                    "utilisation": s["key"]["llm"]["utilisation"],
                }
            )
    return rows


def saturation_of(rows: Sequence[dict[str, Any]], c: int) -> float | None:
    """The first arrival rate at which p95 job latency exceeds twice its value at the lowest
    rate measured (the hockey stick's knee); None if it never does."""
    g = sorted((r for r in rows if r["c"] == c), key=lambda r: r["per_hour"])
    if not g:
        return None
    base = g[0]["p95_s"]
    return next((r["per_hour"] for r in g if r["p95_s"] > 2.0 * base), None)


def mg1_line(sc: Scenario, load: KeyLoad, c: int, per_hour: float, p: float = 0.95) -> float:
    """``T_job(c)`` (mean latencies, a job alone) plus the M/G/1-style wait's p-quantile."""
    n = sc.outlines
    alone = job_alone_s(
        n,
        c,
        sc.content.mean,
        sc.actions.mean,
        round(n * sc.speech_actions.mean),
        sc.tts.mean,
    )
    return alone + load.wait_quantile_s(per_hour, p)


def tenants_grid(
    sc: Scenario, inflight: int, tenants: int, cs: Sequence[int], reps: int, seed: int
) -> list[dict[str, Any]]:
    """P(any failed scene) per classroom and mean makespan: serial, the per-classroom ``gate``
    and the key-wide gate, ``tenants`` classrooms at once on a key of ``inflight``."""
    from sim.model import simulate_many

    s = sc.with_quota(llm_inflight=inflight, tts_inflight=inflight)

    def cell(rs: Sequence[Any]) -> tuple[float, float]:
        return (
            float(np.mean([r.scenes_failed > 0 for r in rs])),
            float(np.mean([r.makespan_s for r in rs])),
        )

    serial = cell(simulate_many(s, "serial", 1, reps, seed=seed, tenants=tenants))
    rows = []
    for c in cs:
        per = cell(
            simulate_many(s, "pipelined", c, reps, seed=seed, tenants=tenants, adaptive="gate")
        )
        key = cell(
            [
                x
                for r in range(reps)
                for x in keygate_tenants(s, "pipelined", c, tenants, seed=seed, run_id=r)
            ]
        )
        rows.append({"c": c, "serial": serial, "gate": per, "key_gate": key})
    return rows


def recommend_line(
    sc: Scenario, inflight: int, *, jobs: int, seed: int, cs: Sequence[int] = (1, 2, 3, 5)
) -> tuple[str, list[dict[str, Any]]]:
    """The server path's recommendation for a key of ``inflight`` slots: the ``c`` with the
    lowest p95 job latency at half the key's capacity, among those whose failed-job share
    is within 1 point of serial's, with the key-wide gate."""
    s = sc.with_quota(llm_inflight=inflight, tts_inflight=inflight)
    load = key_load(s, inflight, inflight)
    lam = 0.5 * load.saturation_per_hour if math.isfinite(load.saturation_per_hour) else 20.0
    rows = sweep(s, cs, [lam], jobs=jobs, seed=seed)
    serial = next(r for r in rows if r["c"] == min(cs))
    ok = [r for r in rows if r["failed_share"] <= serial["failed_share"] + 0.01]
    best = min(ok, key=lambda r: (r["p95_s"], r["c"]))
    key = "unlimited" if inflight == 0 else f"{inflight} in flight"
    sat = load.saturation_per_hour
    sat_s = "never (unlimited)" if not math.isfinite(sat) else f"{sat:.1f} jobs/h"
    line = (
        f"- **server path, key {key}**: PARALLEL_SCENE_CONCURRENCY = {best['c']} with the "
        f"key-wide gate (p95 job latency {best['p95_s']:.0f} s vs {serial['p95_s']:.0f} s serial "
        f"at {lam:.1f} jobs/h, failed jobs {best['failed_share']:.1%} vs "
        f"{serial['failed_share']:.1%}); the key saturates at {sat_s} whatever c is — above "
        f"that buy in-flight slots (K ≥ λ·{load.work_llm_s:.0f} s / 0.7), not a different c"
    )
    return line, rows


def _figure(
    sc: Scenario, load: KeyLoad, rows: Sequence[dict[str, Any]], inflight: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = sorted({r["c"] for r in rows})
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, c in enumerate(cs):
        g = sorted((r for r in rows if r["c"] == c), key=lambda r: r["per_hour"])
        color = cmap(i / max(1, len(cs) - 1))
        ax.plot(
            [r["per_hour"] for r in g], [r["p95_s"] for r in g], "o-", color=color, label=f"c = {c}"
        )
        lams = np.linspace(g[0]["per_hour"], 0.98 * load.saturation_per_hour, 40)
        ax.plot(lams, [mg1_line(sc, load, c, x) for x in lams], ":", color=color, lw=1)
    ax.axvline(load.saturation_per_hour, color="grey", ls="--", lw=1)
    ax.set_xlabel("job arrivals per hour")
    ax.set_ylabel("p95 job latency (model s)")
    ax.set_yscale("log")
    ax.set_title(f"{sc.name}: server jobs on a {inflight}-in-flight key (key-wide gate); "
                 "dotted: M/G/1-style line, dashed: saturation", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _markdown(
    sc: Scenario,
    load: KeyLoad,
    inflight: int,
    rows: Sequence[dict[str, Any]],
    lines: Sequence[str],
    grid: Sequence[dict[str, Any]],
    fig: str,
    cmd: str,
) -> str:
    out = [SECTION, "", f"`{cmd}`", ""]
    out.append(
        f"One job puts {load.work_llm_s:.0f} slot-seconds on the LLM key and "
        f"{load.work_tts_s:.1f} on the TTS key; a {inflight}-in-flight key saturates at "
        f"{load.saturation_per_hour:.1f} jobs/h (closed form, the same for every c)."
    )
    out += ["", f"![p95 job latency vs arrival rate]({fig})", ""]
    out += [
        "| c | knee (p95 > 2× its low-load value) | best sustained jobs/h | p95 at lowest rate |"
    ]
    out += ["|---|---|---|---|"]
    for c in sorted({r["c"] for r in rows}):
        g = [r for r in rows if r["c"] == c]
        knee = saturation_of(rows, c)
        best = max(r["jobs_per_hour"] for r in g)
        low = min(g, key=lambda r: r["per_hour"])["p95_s"]
        knee_s = "beyond the grid" if knee is None else f"{knee:.1f} jobs/h"
        out.append(f"| {c} | {knee_s} | {best:.1f} | {low:.0f} s |")
    out += [
        "",
        "Server-path recommendation (stated apart from the browser's, docs/server-path.md):",
        "",
    ]
    out += list(lines)
    if grid:
        out += [
            "",
            "Shared key, browser classrooms at once: P(any failed scene), mean makespan:",
            "",
        ]
        out += ["| c | serial | per-classroom gate | key-wide gate |", "|---|---|---|---|"]
        for r in grid:
            cells = [f"{r[k][0]:.1%}, {r[k][1]:.0f} s" for k in ("serial", "gate", "key_gate")]
            out.append(f"| {r['c']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _write_report(out: Path, text: str) -> None:
    (out / "SERVER.md").write_text(text, encoding="utf-8")
    rep = out / "REPORT.md"
    if rep.exists():
        old = rep.read_text(encoding="utf-8")
        old = re.sub(re.escape(SECTION) + r".*?(?=\n## |\Z)", "", old, flags=re.S).rstrip()
        rep.write_text(old + "\n\n" + text, encoding="utf-8")


def capacity(a: argparse.Namespace) -> int:
    """``scenebench capacity``."""
    browser = load_scenario(a.scenario, upstream=a.upstream)
    sc = server_scenario(browser)
    s = sc.with_quota(llm_inflight=a.key_inflight, tts_inflight=a.key_inflight)
    load = key_load(s, a.key_inflight, a.key_inflight)
    sat = load.saturation_per_hour if math.isfinite(load.saturation_per_hour) else 60.0
    rates = [round(f * sat, 3) for f in FRACTIONS]
    rows = sweep(s, a.concurrency, rates, jobs=a.jobs, seed=a.seed)
    lines = [recommend_line(sc, q, jobs=a.jobs, seed=a.seed)[0] for q in a.quotas]
    grid = tenants_grid(browser, 3, 3, (2, 3, 4, 5), a.tenant_reps, a.seed) if a.tenant_reps else []
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = f"capacity-{sc.name}.png"
    _figure(s, load, rows, a.key_inflight, out / fig)
    cmd = (
        f"scenebench capacity --scenario {a.scenario} --key-inflight {a.key_inflight} "
        f"--concurrency {','.join(map(str, a.concurrency))} --quotas "
        f"{','.join(map(str, a.quotas))} --jobs {a.jobs} --tenant-reps {a.tenant_reps} "
        f"--seed {a.seed}"
    )
    text = _markdown(s, load, a.key_inflight, rows, lines, grid, fig, cmd)
    _write_report(out, text)
    if a.json:
        print(dumps({"saturation_per_hour": load.saturation_per_hour, "rows": rows}))
    else:
        print(text)
    return 0


def server_lines(folder: Path) -> list[str]:
    """The server-path recommendation lines that :func:`capacity` wrote to ``folder``."""
    p = folder / "SERVER.md"
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    return [ln[2:] for ln in text.splitlines() if ln.startswith("- **server path")]


def validate_server(a: argparse.Namespace, names: Sequence[str]) -> int:
    """``scenebench validate --exact --client server``: server jobs (key gate off and on)
    and key-gated tenants, model vs real pipeline, virtual clock, run for run."""
    from .jobs import validate_jobs_exact

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
