"""``scenebench validate --upstream runs`` (wall clock): generation runs on real sockets vs the
model, as an equivalence test that can fail.

Each cell is one deployment (a server of generation runs: arrivals, the run cap, the owners'
cap, one LLM key and one TTS key), replicated ``reps`` times. Replication ``r`` runs with
``run_id = r`` (its own draw block and arrivals) twice: in the real world
(:func:`runner.world.runs_port.run_runs_real` on the wall clock: the fake provider on 127.0.0.1
in its own process, the asyncio driver, time compressed by a scale picked from the harness's
measured floor) and in the model (:func:`sim.runs.simulate_runs`), on the same seed. Common
random numbers make the two a pair.

The unit of the statistics is the **deployment** (a replication): the runs of one deployment
share a key and a server, so they are not independent; replications are (their own draws,
their own provider process). For every metric each replication gives one paired difference
(real minus model, or real / model - 1), and the metric's verdict comes from the paired
differences alone (:func:`verdict`), by TOST at alpha = 0.05, i.e. the 90% t-interval of the
mean difference against a margin stated up front (:data:`MARGINS`):

* ``pass``: the interval lies inside ``[-margin, +margin]``;
* ``fail``: it does not (it crosses a margin or lies outside);
* ``inconclusive``: the evidence is too thin to test: fewer than :data:`MIN_PAIRS` replications
  with the metric defined, or an interval wider than the band itself (half-width >= margin:
  no estimate could pass at this many replications). Never a pass.

A cell fails when any metric fails, is inconclusive when any is (and none fails), passes
otherwise; so does the whole command (exit 0 / 1 / 3).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from sim.runs import RunOutcome, RunsResult, simulate_runs
from sim.runs_config import RunsConfig
from sim.scenario import Scenario, load_scenario

from ..store.stamps import provenance, provenance_line
from ..world.runs_port import run_runs_real
from .floor import measure_floor, pick_time_scale
from .sweep import ResultsError, new_results_dir, write_json_atomic

__all__ = [
    "ALPHA",
    "FAIL",
    "FULL_CELLS",
    "INCONCLUSIVE",
    "MARGINS",
    "MIN_PAIRS",
    "PASS",
    "QUICK_CELLS",
    "Check",
    "RunsWallCell",
    "cell_report",
    "cells_provenance",
    "choose_scale",
    "deployment_metrics",
    "paired_differences",
    "render_markdown",
    "run_cell",
    "run_pairs",
    "validate_runs_wall",
    "verdict",
    "verdict_lines",
    "write_results",
]

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
ALPHA = 0.05  # TOST: two one-sided tests at 5% each <=> the 90% interval inside the band
MIN_PAIRS = 5  # fewer replications: no interval worth testing (t with < 4 degrees of freedom)

# metric -> (kind, margin). "rel": real / model - 1 per replication; "abs": real - model.
MARGINS: dict[str, tuple[str, float]] = {
    "ttfs_p50": ("rel", 0.05),  # median time to first scene of the deployment's runs
    "ttfs_p95": ("rel", 0.05),  # its p95
    "p_paused": ("abs", 0.10),  # share of the started runs that paused
    "refused": ("abs", 0.10),  # share of the runs refused (429 ACTIVE_RUN_LIMIT)
    "requests": ("rel", 0.02),  # requests the deployment made
    "http_429": ("abs", 0.02),  # share of its requests answered 429
    "run_ttfs": ("rel", 0.05),  # per run, paired: time to first scene (mean over the runs)
    "run_end": ("rel", 0.02),  # per run, paired: request to end (mean over the runs)
}


@dataclass(frozen=True)
class Check:
    """One metric's equivalence test over the replications' paired differences."""

    verdict: str
    point: float  # mean paired difference
    ci: tuple[float, float]  # its (1 - 2 ALPHA) t-interval
    margin: float
    n: int  # replications with the metric defined
    why: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"ci": list(self.ci)}


def verdict(diffs: Sequence[float], margin: float, *, min_pairs: int = MIN_PAIRS) -> Check:
    """TOST on paired differences (NaN = the metric undefined in that replication, dropped):
    pass when the 90% t-interval of their mean lies inside ``[-margin, margin]``; inconclusive
    with fewer than ``min_pairs`` differences or an interval at least as wide as the band
    (half-width >= margin); fail otherwise (the interval crosses or lies beyond a margin)."""
    d = np.array([x for x in diffs if not math.isnan(x)], dtype=float)
    n = len(d)
    if n < max(2, min_pairs):
        return Check(INCONCLUSIVE, _mean(d), (math.nan, math.nan), margin, n,
                     f"{n} replications < {max(2, min_pairs)}")  # fmt: skip
    point = float(d.mean())
    sd = float(d.std(ddof=1))
    half = 0.0 if sd == 0.0 else float(stats.t.ppf(1 - ALPHA, n - 1) * sd / math.sqrt(n))
    ci = (point - half, point + half)
    if half >= margin:
        return Check(INCONCLUSIVE, point, ci, margin, n, "interval wider than the band")
    if -margin <= ci[0] and ci[1] <= margin:
        return Check(PASS, point, ci, margin, n, "interval inside the band")
    where = "beyond" if ci[0] > margin or ci[1] < -margin else "crosses"
    return Check(FAIL, point, ci, margin, n, f"interval {where} the margin")


def _mean(d: np.ndarray[Any, Any]) -> float:
    return float(d.mean()) if len(d) else math.nan


# -- cells -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsWallCell:
    """One deployment: scenario (``runs`` profile), key limits (0: unlimited), the knob c,
    runs arriving at ``arrival_per_hour``, the run cap, the owners' cap and owners."""

    name: str
    scenario: str
    llm_inflight: int
    tts_inflight: int
    concurrency: int
    runs: int
    arrival_per_hour: float
    max_concurrent: int = 4
    per_owner: int = 2
    owners: int = 0

    def build(self) -> tuple[Scenario, RunsConfig]:
        sc = load_scenario(self.scenario, upstream="runs").with_quota(
            llm_inflight=self.llm_inflight, tts_inflight=self.tts_inflight
        )
        cfg = RunsConfig(
            self.concurrency, max_concurrent=self.max_concurrent, per_owner=self.per_owner,
            runs=self.runs, arrival_per_hour=self.arrival_per_hour, owners=self.owners,
            keep_log=False,
        )  # fmt: skip
        return sc, cfg


_CONTENDED = {"max_concurrent": 2, "per_owner": 1, "owners": 3}
QUICK_CELLS = (
    # no key limit: no race, the harness's own error alone
    RunsWallCell("default / unlimited / c=3", "default", 0, 0, 3, 5, 120.0),
    # one limited key shared by the runs, three owners of one active run each, a run cap of 2:
    # 429s, waits for a slot and refused starts, decided by races on the wall clock
    RunsWallCell(
        "default / LLM 8, TTS 4 / c=3 / cap 2, 1 per owner",
        "default",
        8,
        4,
        3,
        6,
        120.0,
        **_CONTENDED,
    ),
)
FULL_CELLS = (
    *QUICK_CELLS,
    # its RPM window (20/min, burst 2) and random 429s, no in-flight cap
    RunsWallCell("burst-429 / RPM 20 / c=2", "burst-429", 0, 0, 2, 5, 120.0),
    # a tighter key: 429 races decide pauses
    RunsWallCell("default / LLM 6, TTS 4 / c=3 / cap 2, 1 per owner", "default", 6, 4, 3, 6,
                 120.0, **_CONTENDED),
)  # fmt: skip


# -- metrics ------------------------------------------------------------------------------
def _started(res: RunsResult) -> list[RunOutcome]:
    return [r for r in res.records if not r.refused]


def _pct(xs: Sequence[float], q: float) -> float:
    v = [x for x in xs if not math.isnan(x)]
    return float(np.percentile(v, q)) if v else math.nan


def deployment_metrics(res: RunsResult) -> dict[str, float]:
    """The per-deployment figures the margins are about (NaN where undefined)."""
    started = _started(res)
    ttfs = [r.first_scene_s for r in started]
    req = sum(r.requests for r in res.records)
    return {
        "ttfs_p50": _pct(ttfs, 50),
        "ttfs_p95": _pct(ttfs, 95),
        "p_paused": (
            sum(r.state == "paused" for r in started) / len(started) if started else math.nan
        ),
        "refused": sum(r.refused for r in res.records) / len(res.records),
        "requests": float(req),
        "http_429": sum(r.http_429 for r in res.records) / req if req else math.nan,
    }


def _diff(kind: str, real: float, model: float) -> float:
    if math.isnan(real) or math.isnan(model):
        return math.nan
    if kind == "abs":
        return real - model
    return real / model - 1 if model != 0 else math.nan


def run_pairs(real: RunsResult, model: RunsResult, field: str) -> list[float]:
    """Per run (started in both worlds, ``field`` defined in both): real / model - 1."""
    out = []
    for a, b in zip(real.records, model.records, strict=True):
        x, y = getattr(a, field), getattr(b, field)
        if not (a.refused or b.refused or math.isnan(x) or math.isnan(y) or y == 0):
            out.append(x / y - 1)
    return out


def paired_differences(
    reals: Sequence[RunsResult], models: Sequence[RunsResult]
) -> dict[str, list[float]]:
    """Every metric's paired difference, one per replication (per-run metrics: the mean of
    the replication's per-run differences)."""
    out: dict[str, list[float]] = {k: [] for k in MARGINS}
    for real, model in zip(reals, models, strict=True):
        mr, mm = deployment_metrics(real), deployment_metrics(model)
        for k, v in mr.items():
            out[k].append(_diff(MARGINS[k][0], v, mm[k]))
        for k, f in (("run_ttfs", "first_scene_s"), ("run_end", "end_s")):
            p = run_pairs(real, model, f)
            out[k].append(float(np.mean(p)) if p else math.nan)
    return out


def cell_report(
    reals: Sequence[RunsResult], models: Sequence[RunsResult], *, min_pairs: int = MIN_PAIRS
) -> dict[str, Any]:
    """The checks of one cell (pure: no clock) and its verdict."""
    diffs = paired_differences(reals, models)
    checks = {k: verdict(diffs[k], MARGINS[k][1], min_pairs=min_pairs) for k in MARGINS}
    vs = [c.verdict for c in checks.values()]
    v = FAIL if FAIL in vs else INCONCLUSIVE if INCONCLUSIVE in vs else PASS
    return {
        "reps": len(reals),
        "checks": {k: c.to_dict() | {"kind": MARGINS[k][0]} for k, c in checks.items()},
        "diffs": diffs,
        "real": [deployment_metrics(r) for r in reals],
        "model": [deployment_metrics(m) for m in models],
        "run_end_pairs": [run_pairs(r, m, "end_s") for r, m in zip(reals, models, strict=True)],
        "verdict": v,
        "ok": v == PASS,
    }


# -- the wall clock -----------------------------------------------------------------------
def choose_scale(
    models: Sequence[RunsResult], floor_s: float, *, target: float, min_scale: float
) -> tuple[float, float]:
    """The time scale (and the floor's share of a run's time at it): a run's lateness is at
    most the floor times its own requests (they are its critical path at most; the runs go
    side by side), so the scale keeps ``floor x requests per run`` under ``target`` of the
    model's mean request-to-end time (:func:`runner.experiments.floor.pick_time_scale`)."""
    started = [r for m in models for r in _started(m)]
    req = float(np.mean([r.requests for r in started])) if started else 0.0
    dur = float(np.mean([r.end_s for r in started])) if started else 0.0
    scale = pick_time_scale(floor_s, math.ceil(req), dur, target=target, min_scale=min_scale)
    share = floor_s * req / (scale * dur) if dur > 0 else math.nan
    return scale, share


RealWorld = Callable[[Scenario, RunsConfig, int, float], RunsResult]


def _real(sc: Scenario, cfg: RunsConfig, seed: int, scale: float) -> RunsResult:
    return run_runs_real(sc, cfg, seed, clock="wall", time_scale=scale).result


def run_cell(
    cell: RunsWallCell, *, reps: int, seed: int, floor_s: float, target: float = 0.01,
    time_scale: float | None = None, real: RealWorld = _real, min_pairs: int = MIN_PAIRS,
) -> dict[str, Any]:  # fmt: skip
    """One cell: ``reps`` replications in the model, then on the wall clock, and the report."""
    sc, cfg = cell.build()
    cfgs = [dataclasses.replace(cfg, run_id=r) for r in range(reps)]
    models = [simulate_runs(sc, c, seed, engine="fast") for c in cfgs]
    scale, share = choose_scale(models, floor_s, target=target, min_scale=sc.time_scale)
    if time_scale is not None:
        scale, share = time_scale, share * scale / time_scale
    t0 = time.perf_counter()
    reals = [real(sc, c, seed, scale) for c in cfgs]
    rep = cell_report(reals, models, min_pairs=min_pairs)
    return {"cell": cell.name, **dataclasses.asdict(cell), "time_scale": scale,
            "overhead_share": share, "wall_s": time.perf_counter() - t0, **rep}  # fmt: skip


def validate_runs_wall(
    cells: Sequence[RunsWallCell], *, reps: int, seed: int = 0, floor_s: float | None = None,
    target: float = 0.01, time_scale: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure the floor (unless given), run every cell, and the overall verdict."""
    if floor_s is None:
        floor_s = measure_floor(rounds=3, bare=False).harness_s
    if log:
        log(f"harness overhead floor: {floor_s * 1e3:.2f} ms of real time per request")
    out = []
    for cell in cells:
        res = run_cell(cell, reps=reps, seed=seed, floor_s=floor_s, target=target,
                       time_scale=time_scale)  # fmt: skip
        out.append(res)
        if log:
            log(_cell_line(res))
    vs = [c["verdict"] for c in out]
    v = FAIL if FAIL in vs else INCONCLUSIVE if INCONCLUSIVE in vs or not vs else PASS
    return {"upstream": "runs", "overhead_floor_s": floor_s, "target": target, "reps": reps,
            "seed": seed, "alpha": ALPHA, "min_pairs": MIN_PAIRS,
            "margins": {k: {"kind": a, "margin": m} for k, (a, m) in MARGINS.items()},
            "cells": out, "verdict": v, "ok": v == PASS}  # fmt: skip


def _fmt(kind: str, x: float | None) -> str:
    if x is None or math.isnan(x):  # JSON's null, or no interval (too few replications)
        return "n/a"
    return f"{100 * x:+.2f}%" if kind == "rel" else f"{x:+.3f}"


def _check_text(name: str, c: dict[str, Any]) -> str:
    lo, hi = c["ci"]
    k = c["kind"]
    band = f"±{100 * c['margin']:g}%" if k == "rel" else f"±{c['margin']:g}"
    return f"{name} {_fmt(k, c['point'])} [{_fmt(k, lo)}, {_fmt(k, hi)}] ({band}: {c['verdict']})"


def _cell_line(res: dict[str, Any]) -> str:
    parts = [_check_text(k, c) for k, c in res["checks"].items()]
    return (
        f"{res['cell']}: scale {res['time_scale']:g}, {res['reps']} replications, "
        f"{res['wall_s']:.0f} s wall; {'; '.join(parts)} -> {res['verdict'].upper()}"
    )


def verdict_lines(report: dict[str, Any]) -> list[str]:
    return [
        {
            PASS: "every metric's 90% interval lies inside its margin (TOST, alpha 0.05)",
            FAIL: "OUT OF MARGIN: some metric's interval crosses or lies beyond its margin",
            INCONCLUSIVE: "INCONCLUSIVE: too few replications to test some metric",
        }[report["verdict"]]
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """``VALIDATE.md``: provenance, floor, margins, then one table per cell."""
    out = [
        "# scenebench validate --upstream runs (wall clock)",
        "",
        provenance_line(report["provenance"]) + "." if "provenance" in report else "",
        "",
        f"Harness floor {report['overhead_floor_s'] * 1e3:.2f} ms per request; "
        f"{report['reps']} replications per cell, each paired with the model on the same "
        f"seed and draws. TOST at alpha {report['alpha']:g} (90% t-interval of the paired "
        f"differences inside the margin). Verdict: **{report['verdict']}**.",
    ]
    for c in report["cells"]:
        out += ["", f"## {c['cell']}", "",
                f"time scale {c['time_scale']:g} (floor share {100 * c['overhead_share']:.2f}%"
                f"), {c['wall_s']:.0f} s wall; verdict **{c['verdict']}**", "",
                "| metric | mean paired difference | 90% interval | margin | n | verdict |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for k, ch in c["checks"].items():
            lo, hi = ch["ci"]
            band = f"±{100 * ch['margin']:g}%" if ch["kind"] == "rel" else f"±{ch['margin']:g}"
            out.append(
                f"| {k} | {_fmt(ch['kind'], ch['point'])} | {_fmt(ch['kind'], lo)} … "
                f"{_fmt(ch['kind'], hi)} | {band} | {ch['n']} | {ch['verdict']} ({ch['why']}) |"
            )
    return "\n".join(out) + "\n"


def write_results(report: dict[str, Any], out: Path | None, root: Path) -> Path:
    """``validate.json`` and ``VALIDATE.md`` into ``out`` (or a new ``<time>-validate-runs``
    folder under ``root``)."""
    try:
        d = out if out is not None else new_results_dir(root, "validate-runs")
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot write the results folder: {e.strerror or e}") from None
    write_json_atomic(d / "validate.json", report)
    (d / "VALIDATE.md").write_text(render_markdown(report))
    return d


def cells_provenance(cells: Sequence[RunsWallCell]) -> dict[str, Any]:
    return provenance(
        [load_scenario(n, upstream="runs") for n in sorted({c.scenario for c in cells})]
    )
