"""Generation runs (upstream's server-side runs, issue 22): the public entry.

:func:`simulate_runs` runs one deployment cell — runs arriving at a server with its caps,
every run's loop on the server's provider keys — and returns per-run records and the
deployment's figures. The rules are the machines' (:mod:`sim.run_machine`,
:mod:`sim.run_server`), the admission the provider's (:mod:`sim.provider`); two engines drive
them (:mod:`sim.runs_model` on SimPy, the reference; :mod:`sim.runs_fast` on a heap) and
:func:`check_engines` proves them equal request for request. ``docs/runs.md`` has the rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import UserError
from .qoe import qoe_of_run, qoe_us
from .run_machine import Phase, RunMachine
from .runs_config import RunsConfig, RunsSettings
from .runs_fast import run_fast
from .runs_fast_gate import run_fast_gate
from .runs_model import run_simpy
from .runs_outcome import REFUSED, RunOutcome
from .runs_world import RunsWorld
from .scenario import Scenario

__all__ = [
    "ENGINES",
    "RunOutcome",
    "RunsConfig",
    "RunsResult",
    "RunsSettings",
    "check_cells",
    "check_engines",
    "pick_runs_engine",
    "results_differ",
    "run_outcome",
    "simulate_runs",
    "span_s",
    "summarize_runs",
]

ENGINES = ("auto", "fast", "simpy", "compiled")


@dataclass
class RunsResult:
    """Per-run records, the request log (:data:`sim.runs_world.RunsWorld.log` rows:
    ``(t_send_us, run, step, order, clip, attempt, status, provider_status, t_end_us)``;
    status 504 a deadline, -1 statusless, -3 cancelled), and the cell."""

    records: list[RunOutcome]
    log: list[tuple[int, ...]]
    scenario: Scenario
    config: RunsConfig
    seed: int
    engine: str
    confirm_refusals: int = 0  # learners' confirm-outline refused (429), ``wait`` mode

    def summary(self) -> dict[str, Any]:
        return summarize_runs(self.records) | {
            "confirm_refusals": self.confirm_refusals,
            "scenario": self.scenario.name,
            "upstream": self.scenario.upstream,
            "engine": self.engine,
            "seed": self.seed,
            "concurrency": self.config.c,
            "max_concurrent": self.config.max_concurrent,
            "per_owner": self.config.per_owner,
            "arrival_per_hour": None if self.config.arrivals else self.config.arrival_per_hour,
            "llm_inflight": self.scenario.quota_llm.max_inflight,
            "tts_inflight": self.scenario.quota_tts.max_inflight,
            "adaptive": self.config.adaptive,
            "gate_order": str(self.config.gate_order),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "runs": [
                dataclasses.asdict(r) | {"failed_scenes": list(r.failed_scenes)}
                for r in self.records
            ],
        }


def _outcome(w: RunsWorld, r: int, m: RunMachine) -> RunOutcome:
    t0, owner = w.arrivals[r]
    rec = m.record
    if r in w.refused:
        nan = math.nan
        return RunOutcome(
            r,
            owner,
            t0 / 1e6,
            REFUSED,
            nan,
            nan,
            nan,
            None,
            None,
            0,
            (),
            False,
            nan,
            0.0,
            0,
            0,
            0,
            0,
            0,
            0,
        )
    if rec.phase not in (Phase.PAUSED, Phase.COMPLETED):
        raise AssertionError(f"run {r} ended in {rec.phase}")  # a bug: every run finishes
    d, row = w.provider.draws_for(w.base + r)
    ready = [(k, t - t0) for k, t in rec.ready]
    play = {k: d.playback_us(row, k, m.spec.clips[k]) for k, _ in rec.ready}
    return _finished(w, r, m, qoe_of_run(w.sc.outlines, ready, play, w.sc.playback))


def _finished(w: RunsWorld, r: int, m: RunMachine, q: dict[str, Any]) -> RunOutcome:
    """A finished run's record, its learner's metrics ``q`` (:meth:`sim.qoe.QoE.row`)."""
    t0, owner = w.arrivals[r]
    rec = m.record
    if rec.phase not in (Phase.PAUSED, Phase.COMPLETED):
        raise AssertionError(f"run {r} ended in {rec.phase}")  # a bug: every run finishes
    first = next((t - t0 for k, t in rec.ready if k == 0), None)
    end = rec.end_us
    assert end is not None
    st = rec.counts
    return RunOutcome(
        run=r,
        owner=owner,
        arrival_s=t0 / 1e6,
        state=str(rec.phase),
        wait_s=(rec.claims_us[0] - t0) / 1e6,
        first_scene_s=math.nan if first is None else first / 1e6,
        end_s=(end - t0) / 1e6,
        paused_at=rec.paused_at,
        pause_status=rec.pause_status,
        scenes_ok=len(rec.ready),
        failed_scenes=rec.failed_scenes,
        agents_preset=rec.agents_preset,
        startup_s=float(q["startup_s"]),
        stall_s=float(q["stall_s"]),
        stalls=int(q["stalls"]),
        requests=st.requests,
        http_429=st.http_429,
        http_5xx=st.http_5xx,
        retries=st.retries,
        timeouts=st.timeouts,
        media_ok=rec.media_ok,
        media_failed=rec.media_failed,
    )


run_outcome = _outcome  # public name: a world's run record (the real world builds its own)


def outcomes_block(w: RunsWorld, play_us: NDArray[np.int64]) -> list[RunOutcome]:
    """Every run's record at once: the same records as :func:`run_outcome` run by run, with
    the learners' metrics of all runs in one :func:`sim.qoe.qoe_us` call (row by row the
    same integers, so the same floats); ``play_us`` (runs, N) every scene's playback time
    (:meth:`sim.draws.Draws.playback_table_us` of the runs' block)."""
    n, outlines = len(w.machines), w.sc.outlines
    ready = np.full((n, outlines), -1, dtype=np.int64)
    for r, m in enumerate(w.machines):
        if r not in w.refused:
            t0 = w.arrivals[r][0]
            for k, t in m.record.ready:
                ready[r, k] = t - t0
    pb = w.sc.playback
    q = qoe_us(ready, np.where(ready >= 0, play_us, 0), pb.start, pb.buffer_us)
    return [
        _outcome(w, r, m) if r in w.refused else _finished(w, r, m, q.row(r))
        for r, m in enumerate(w.machines)
    ]


def pick_runs_engine(sc: Scenario, cfg: RunsConfig, engine: str = "auto") -> str:
    """The engine that runs a cell (the one rule): ``auto`` is the compiled engine
    (:mod:`sim.runs_nb`) where it applies (:func:`sim.runs_nb.nb_fits`: adaptive off, keys
    limited by in-flight caps and RPM buckets only), else the heap engine
    (:mod:`sim.runs_fast`, every cell; ``fast``); ``simpy`` the reference; ``compiled`` where
    it applies (else a one-line error)."""
    if engine not in ENGINES:
        raise UserError(f"engine: must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine in ("fast", "simpy"):
        return engine
    from .runs_nb import nb_fits

    if nb_fits(sc, cfg):
        return "compiled"
    if engine == "compiled":
        raise UserError(
            "engine: the compiled runs engine needs adaptive off, keys limited by in-flight "
            "caps and RPM buckets only, at most 20,000 runs and 1 GiB of arrays (runs x "
            "outlines x clips); use fast or simpy"
        )
    return "fast"


def simulate_runs(sc: Scenario, cfg: RunsConfig, seed: int = 0, engine: str = "auto") -> RunsResult:
    """One deployment cell (see the module docstring); ``engine``: ``auto`` (the rule of
    :func:`pick_runs_engine`), ``fast`` (the heap), ``compiled`` or ``simpy`` (the reference).
    The scenario's client becomes the ``runs`` profile if it is not already."""
    if engine not in ENGINES:
        raise UserError(f"engine: must be one of {', '.join(ENGINES)}; got {engine!r}")
    if not isinstance(cfg, RunsConfig):
        raise UserError(f"cfg: must be a RunsConfig, got {type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed: must be an integer >= 0, got {seed!r}")
    used = pick_runs_engine(sc, cfg, engine)
    if used == "compiled":
        from .runs_nb import simulate_nb

        recs, log, run_sc, refusals = simulate_nb(sc, cfg, seed)
        return RunsResult(recs, log, run_sc, cfg, seed, used, refusals)
    if used == "simpy":
        w: RunsWorld = run_simpy(sc, cfg, seed)
        recs = [_outcome(w, r, m) for r, m in enumerate(w.machines)]
    else:
        fw = run_fast_gate(sc, cfg, seed) if cfg.adaptive == "gate" else run_fast(sc, cfg, seed)
        w, recs = fw, outcomes_block(fw, fw.playback_table_us())
    return RunsResult(recs, w.log, w.sc, cfg, seed, used, w.server.record.confirm_refusals)


def _pcts(x: Sequence[float]) -> dict[str, float | None]:
    a = np.array([v for v in x if not math.isnan(v)], dtype=float)
    if not len(a):
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
    }


def span_s(records: Sequence[RunOutcome]) -> float:
    """A deployment's span (:func:`summarize_runs`'s ``span_s``): its first arrival to the
    last started run's end, seconds."""
    t0 = min(r.arrival_s for r in records)
    t1 = max((r.arrival_s + r.end_s for r in records if r.state != REFUSED), default=t0)
    return t1 - t0


def summarize_runs(records: Sequence[RunOutcome]) -> dict[str, Any]:
    """A deployment's figures: runs completed per hour of the span (first request to the
    last run's end: what the deployment sustained), time to the first scene and the wait
    for a run slot (p50/p95/p99 over runs that got one), P(run paused) over started runs,
    refused starts, the learners' stalls, the request counts."""
    started = [r for r in records if not r.refused]
    done = [r for r in started if r.state == "completed"]
    paused = [r for r in started if r.state == "paused"]
    span = span_s(records)
    return {
        "runs": len(records),
        "started": len(started),
        "refused": len(records) - len(started),
        "completed": len(done),
        "paused": len(paused),
        "p_paused": len(paused) / len(started) if started else None,
        "span_s": span,
        "runs_per_hour": len(done) / span * 3600.0 if span > 0 else None,
        "first_scene_s": _pcts([r.first_scene_s for r in started]),
        "wait_s": _pcts([r.wait_s for r in started]),
        "stall_s": _pcts([r.stall_s for r in started if not math.isnan(r.startup_s)]),
        "failed_scenes": sum(len(r.failed_scenes) for r in started),
        "requests": sum(r.requests for r in started),
        "http_429": sum(r.http_429 for r in started),
        "timeouts": sum(r.timeouts for r in started),
        "media_failed": sum(r.media_failed for r in started),
    }


def results_differ(a: RunsResult, b: RunsResult) -> str | None:
    """None when ``b`` equals ``a`` (the same request log, row for row, and the same
    records, NaN equal to NaN, and the same confirm refusals); else the first difference."""
    if a.log != b.log:
        i = next(
            (i for i, (x, y) in enumerate(zip(a.log, b.log, strict=False)) if x != y),
            min(len(a.log), len(b.log)),
        )
        return f"request logs differ at row {i} ({len(a.log)} vs {len(b.log)} rows)"
    ra = [dataclasses.asdict(r) for r in a.records]
    rb = [dataclasses.asdict(r) for r in b.records]
    if repr(ra) != repr(rb):  # repr: NaN == NaN
        return "records differ"
    if a.confirm_refusals != b.confirm_refusals:
        return f"confirm refusals differ ({a.confirm_refusals} vs {b.confirm_refusals})"
    return None


def check_engines(sc: Scenario, cfg: RunsConfig, seed: int = 0) -> tuple[bool, str]:
    """Whether the fast engines equal the SimPy model on one cell: the heap engine, and the
    compiled engine where it applies (:func:`pick_runs_engine`) — the same request log (every
    request: when, what, its status, when it ended), the same records and confirm refusals."""
    cfg = dataclasses.replace(cfg, keep_log=True)
    a = simulate_runs(sc, cfg, seed, "simpy")
    engines = ["fast"] + (["compiled"] if pick_runs_engine(sc, cfg) == "compiled" else [])
    for engine in engines:
        diff = results_differ(a, simulate_runs(sc, cfg, seed, engine))
        if diff is not None:
            return False, f"{engine}: {diff}"
    return True, f"{len(a.log)} requests, {len(a.records)} runs identical ({', '.join(engines)})"


def check_cells() -> list[tuple[str, Scenario, RunsConfig, int]]:
    """The cells :func:`check_engines` is run on (tests, ``validate``): several runs on one
    limited key, Poisson arrivals, deadlines firing, refused starts, countdown confirmation,
    a learner's confirmation refused by the active limit."""
    from .dists import Constant
    from .scenario import load_scenario

    base = load_scenario("default", upstream="runs")
    slow = base.replace(
        name="deadlines", content_by_type={"quiz": Constant(320.0)}, scene_types=("slide", "quiz")
    )
    one_owner = tuple((float(t), 0) for t in (0, 0, 0, 5, 400, 900))
    return [
        (
            "limited-key",
            base.with_quota(llm_inflight=3, tts_inflight=2),
            RunsConfig(concurrency=3, runs=8, arrival_per_hour=30.0),
            1,
        ),
        (
            "arrivals-cap",
            base.with_quota(llm_inflight=6),
            RunsConfig(
                concurrency=2,
                runs=12,
                arrival_per_hour=60.0,
                max_concurrent=2,
                settings=RunsSettings(media_items=3, media_p_fail=0.2),
            ),
            2,
        ),
        (
            "deadlines",
            slow.with_quota(llm_inflight=4),
            RunsConfig(
                concurrency=2,
                runs=4,
                arrival_per_hour=20.0,
                settings=RunsSettings(free_on_give_up=True),
            ),
            3,
        ),
        (
            "refused",
            base.with_quota(llm_inflight=5),
            RunsConfig(concurrency=3, arrivals=one_owner, per_owner=2),
            4,
        ),
        (
            "wait-confirm",
            base.with_quota(llm_inflight=4),
            RunsConfig(
                concurrency=2,
                arrivals=((0.0, 0), (20.0, 0), (21.0, 1)),
                per_owner=1,
                settings=RunsSettings(confirm="wait", outline=Constant(18.0)),
            ),
            6,
        ),
        (
            "countdown",
            base.with_quota(llm_inflight=4),
            RunsConfig(
                concurrency=4,
                runs=6,
                arrival_per_hour=120.0,
                max_concurrent=2,
                settings=RunsSettings(confirm="countdown"),
            ),
            5,
        ),
    ]
