"""``scenebench validate --exact --upstream runs``: generation runs, model vs real world.

For every runs cell (several runs on one limited key, arrivals against the run cap, deadlines
firing, refused starts, confirmation modes, injected faults, an answer exactly at its deadline),
the SimPy model (:func:`sim.runs_model.run_simpy`, the reference) and the real world
(:func:`runner.world.runs_port.run_runs_real`: asyncio + httpx against the fake provider's
``/v1`` endpoints, virtual clock) run on the same seed and draw block. They must agree exactly
(integer µs, no tolerance):

* the client's request log, row for row: when each attempt was sent, its identity, the status
  the client saw and the provider's, when it ended (504 a deadline, -3 a pause's abort);
* the provider's own log, row for row: arrival, decision, scheduled end, status, requests in
  flight on the key at arrival (so a slot freed or kept when a client gave up shows), reason;
* every run's record: state, wait for a slot, time to the first scene, where it paused and why,
  failed scenes, the learner's stalls, the request counts.

The first difference is reported, naming the cell, the replication and the event.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from sim.dists import Constant
from sim.errors import UserError
from sim.runs import (
    RunOutcome,
    RunsConfig,
    RunsResult,
    RunsSettings,
    check_cells,
    pick_runs_engine,
    results_differ,
    run_outcome,
    simulate_runs,
)
from sim.runs_model import run_simpy
from sim.scenario import Scenario, load_scenario

from ..world.runs_port import PortRun, run_runs_real
from .validate import ExactReport

__all__ = [
    "Cell",
    "divergence",
    "exact_cells",
    "gate_cells",
    "model_side",
    "random_cells",
    "validate_runs_exact",
]

Cell = tuple[str, Scenario, RunsConfig, int]
Log = Sequence[tuple[Any, ...]]


def _quota(sc: Scenario, which: str, **kw: Any) -> Scenario:
    return sc.replace(**{which: dataclasses.replace(getattr(sc, which), **kw)})


def extra_cells(base: Scenario, tag: str = "") -> list[Cell]:
    """Cells beyond the engines' check cells, on scenario ``base``: injected faults (statusless
    answers, 5xx, stalls past a clip's deadline) with and without freeing a slot on give-up;
    an RPM bucket; an answer exactly at its deadline (in time); a serial knob with preset
    agents and learners who confirm; a key of one slot with contents slower than their
    deadline."""
    p = f"{tag}:" if tag else ""
    keyed = base.with_quota(llm_inflight=4, tts_inflight=3)
    faulty = _quota(
        _quota(keyed, "quota_llm", p_5xx=0.05, p_reset=0.03, p_truncate=0.03, p_429=0.02),
        "quota_tts",
        p_5xx=0.03,
        p_reset=0.03,
        p_truncate=0.03,
        p_stall=0.05,
        stall_s=45.0,
    )
    free = RunsSettings(free_on_give_up=True)
    tie = base.with_quota(llm_inflight=3, tts_inflight=2).replace(
        tts=Constant(30.0), actions=Constant(60.0)
    )
    slow = base.with_quota(llm_inflight=1).replace(
        content_by_type={"quiz": Constant(320.0)}, scene_types=("slide", "quiz")
    )
    serial = RunsSettings(confirm="wait", agents_mode="preset")
    return [
        (f"{p}faults-free", faulty, RunsConfig(3, runs=6, arrival_per_hour=40.0, settings=free), 7),
        (f"{p}faults-keep", faulty, RunsConfig(2, runs=6, arrival_per_hour=40.0), 8),
        (
            f"{p}rpm",
            _quota(base, "quota_llm", rpm=8.0, rpm_burst=3),
            RunsConfig(4, runs=4, arrival_per_hour=60.0),
            9,
        ),
        (f"{p}deadline-tie", tie, RunsConfig(2, runs=4, arrival_per_hour=60.0), 1),
        (
            f"{p}serial-wait",
            base.with_quota(llm_inflight=2),
            RunsConfig(1, runs=5, arrival_per_hour=60.0, owners=2, settings=serial),
            10,
        ),
        (f"{p}one-slot-slow", slow, RunsConfig(2, runs=3, arrival_per_hour=30.0), 11),
        (
            f"{p}one-slot-slow-free",
            slow,
            RunsConfig(2, runs=3, arrival_per_hour=30.0, settings=free),
            11,
        ),
    ]


def exact_cells(names: Sequence[str] | None = None) -> list[Cell]:
    """The cells of ``validate --exact --upstream runs``: the engines' check cells
    (:func:`sim.runs.check_cells`, on ``default``) when ``default`` is named (or nothing is),
    then :func:`extra_cells` on every named scenario under the ``runs`` profile."""
    names = list(names) if names else ["default"]
    bases = [load_scenario(n, upstream="runs") for n in names]
    shared = [
        n for n, b in zip(names, bases, strict=True) if b.quota_llm.shared or b.quota_tts.shared
    ]
    if shared:
        raise UserError(
            f"validate --upstream runs: scenario(s) {', '.join(shared)} have shared-capacity "
            "keys, which generation runs do not model (docs/runs.md)"
        )
    out: list[Cell] = list(check_cells()) if "default" in names else []
    for n, b in zip(names, bases, strict=True):
        out += extra_cells(b, "" if n == "default" else n)
    return out


def gate_cells(names: Sequence[str] | None = None, order: str = "tiers") -> list[Cell]:
    """The cells of ``validate --exact --upstream runs --adaptive gate``: every cell of
    :func:`exact_cells` with the key-wide gate (:mod:`sim.run_gate`), then runs that meet on
    one slot: three at once on a 1-in-flight LLM and TTS key, and twelve at once whose later
    outlines wait at the gate past their step deadline (refused starts: one learner owns
    them all, two active at most). ``order``: the gate's waiting order
    (:class:`sim.run_gate.GateOrder`), every cell's."""
    out = [(f"{n}@gate", sc, dataclasses.replace(cfg, adaptive="gate"), s)
           for n, sc, cfg, s in exact_cells(names)]  # fmt: skip
    one = load_scenario("default", upstream="runs").with_quota(llm_inflight=1, tts_inflight=1)
    at_once = tuple((0.0, o) for o in range(3))
    crowd = tuple((0.0, o) for o in range(12))
    out += [
        ("gate-one-slot", one, RunsConfig(3, arrivals=at_once, adaptive="gate"), 12),
        (
            "gate-outline-expires",
            one,
            RunsConfig(2, arrivals=crowd, max_concurrent=12, per_owner=12, adaptive="gate"),
            13,
        ),
        (
            "gate-refused",
            one.with_quota(llm_inflight=2),
            RunsConfig(3, arrivals=tuple((float(t), 0) for t in (0, 0, 0, 30)), adaptive="gate"),
            14,
        ),
    ]
    return [(n, sc, dataclasses.replace(cfg, gate_order=order), s) for n, sc, cfg, s in out]


_RANDOM_BASES = ("default", "burst-429", "content-heavy", "low-quota", "output-tpm", "tts-heavy")


def _random_scenario(rng: random.Random) -> Scenario:
    base = load_scenario(rng.choice(_RANDOM_BASES), upstream="runs")
    sc = base.with_quota(
        llm_inflight=rng.choice([0, 1, 2, 3, 5, 8]), tts_inflight=rng.choice([0, 1, 2, 4])
    )
    if rng.random() < 0.3:
        sc = _quota(sc, "quota_llm", p_5xx=0.03, p_reset=0.02, p_truncate=0.02)
    if rng.random() < 0.3:
        sc = _quota(sc, "quota_tts", p_stall=0.05, stall_s=rng.choice([30.0, 40.0]))
    if rng.random() < 0.2:  # answers exactly at a deadline, or well inside it
        sc = sc.replace(
            tts=Constant(rng.choice([2.0, 30.0])), actions=Constant(rng.choice([10.0, 60.0]))
        )
    return sc


def random_cells(seed: int, n: int) -> list[Cell]:
    """``n`` cells drawn from ``seed``: scenario, key limits, faults, deadline ties, the knob,
    the caps, owners, confirmation, agents, media, free-on-give-up, and Poisson arrivals or a
    replay with ties at one instant (a fuzz of :func:`validate_runs_exact`)."""
    rng = random.Random(seed)
    out: list[Cell] = []
    for i in range(n):
        sc = _random_scenario(rng)
        st = RunsSettings(
            confirm=rng.choice(["auto", "auto", "countdown", "wait"]),
            agents_mode=rng.choice(["auto", "preset"]),
            free_on_give_up=rng.random() < 0.5,
            media_items=rng.choice([0, 0, 2]),
            media_p_fail=0.2,
        )
        mc, po = rng.randint(1, 4), rng.randint(1, 3)
        c = rng.randint(0, 10)
        if rng.random() < 0.5:
            rate = rng.choice([10.0, 60.0, 300.0])
            runs, owners = rng.randint(2, 8), rng.choice([0, 1, 2])
            cfg = RunsConfig(
                c,
                runs=runs,
                arrival_per_hour=rate,
                owners=owners,
                settings=st,
                max_concurrent=mc,
                per_owner=po,
            )
        else:
            times = [0, 0, 1, 5, 60, 200]
            arr = tuple(
                (float(rng.choice(times)), rng.randint(0, 2)) for _ in range(rng.randint(2, 7))
            )
            cfg = RunsConfig(c, arrivals=arr, settings=st, max_concurrent=mc, per_owner=po)
        out.append((f"random{seed}.{i}:{sc.name}", sc, cfg, rng.randint(0, 1000)))
    return out


def model_side(sc: Scenario, cfg: RunsConfig, seed: int) -> PortRun:
    """The SimPy model of a cell, in the real world's terms: records, client log, provider log."""
    w = run_simpy(sc, cfg, seed)
    recs: list[RunOutcome] = [run_outcome(w, r, m) for r, m in enumerate(w.machines)]
    res = RunsResult(recs, w.log, w.sc, cfg, seed, "simpy", w.server.record.confirm_refusals)
    return PortRun(res, [tuple(row) for row in w.provider.log])


_CLIENT = ("sent", "run", "step", "order", "clip", "attempt", "status", "provider", "end")
_PROVIDER = (
    "cid", "step", "order", "clip", "attempt", "key", "arrival", "decided", "end", "status",
    "inflight", "reason",
)  # fmt: skip


def _row(names: Sequence[str], row: Sequence[Any] | None) -> str:
    if row is None:
        return "(none)"
    return " ".join(f"{k}={v}" for k, v in zip(names, row, strict=False))


def _first_row_diff(what: str, names: Sequence[str], real: Log, model: Log) -> str | None:
    a, b = sorted(tuple(r) for r in real), sorted(tuple(r) for r in model)
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return (
                f"{what} row {i} of {len(a)} real / {len(b)} model: "
                f"real {_row(names, x)} | model {_row(names, y)}"
            )
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def divergence(real: PortRun, model: PortRun) -> str | None:
    """None when the two worlds agree on the cell; else the first difference: the client's
    request log, then the provider's, then each run's record field by field."""
    diff = _first_row_diff("request", _CLIENT, real.result.log, model.result.log)
    if diff is None:
        diff = _first_row_diff("provider", _PROVIDER, real.provider_log, model.provider_log)
    if diff is not None:
        return diff
    ra, rb = real.result.records, model.result.records
    if len(ra) != len(rb):
        return f"runs: real {len(ra)} | model {len(rb)}"
    for x, y in zip(ra, rb, strict=True):
        for f in dataclasses.fields(RunOutcome):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if not _same(u, v):
                return f"run {x.run} {f.name}: real {u!r} | model {v!r}"
    return None


def _compiled_diff(
    rep: ExactReport, sc: Scenario, cfg: RunsConfig, seed: int, model: RunsResult
) -> str | None:
    """Where the compiled engine applies (:func:`sim.runs.pick_runs_engine`), its result
    against the SimPy model's (:func:`sim.runs.results_differ`); its runs counted when equal."""
    if pick_runs_engine(sc, cfg) != "compiled":
        return None
    got = simulate_runs(sc, cfg, seed, "compiled")
    diff = results_differ(model, got)
    if diff is not None:
        return f"compiled engine vs SimPy model: {diff}"
    rep.compiled_runs += len(got.records)
    return None


def validate_runs_exact(
    cells: Sequence[Cell] | None = None,
    *,
    runs: int = 2,
    progress: Callable[[int, int], None] | None = None,
    stop_at_first: bool = True,
    real: Callable[[Scenario, RunsConfig, int], PortRun] = run_runs_real,
) -> ExactReport:
    """Each cell ``runs`` times (draw blocks ``run_id`` 0..runs-1), model vs real world;
    the counts and the divergences (:class:`runner.experiments.validate.ExactReport`).
    ``real`` is the real world (tests pass a perturbed one to see the check fail)."""
    todo = list(exact_cells() if cells is None else cells)
    rep = ExactReport()
    for i, (name, sc, cfg, seed) in enumerate(todo):
        for r in range(runs):
            c = dataclasses.replace(cfg, run_id=r, keep_log=True)
            a, b = real(sc, c, seed), model_side(sc, c, seed)
            rep.runs += len(b.result.records)
            rep.requests += len(b.result.log)
            rep.http_429 += sum(1 for row in b.result.log if row[6] == 429)
            rep.retries += sum(x.retries for x in b.result.records)
            diff = divergence(a, b) or _compiled_diff(rep, sc, c, seed, b.result)
            if diff is not None:
                rep.divergences.append(f"cell {name}, seed {seed}, replication {r}: {diff}")
                if stop_at_first:
                    break
        rep.cells += 1
        if progress is not None:
            progress(i + 1, len(todo))
        if rep.divergences and stop_at_first:
            break
    return rep
