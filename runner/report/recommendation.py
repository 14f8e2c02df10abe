"""The recommendation rule: the default ``PARALLEL_SCENE_CONCURRENCY`` and its evidence.

For the merged ``pipelined`` design, on the model: for each scenario, a concurrency ``c``
is *admissible* when, for every quota profile that lets a key hold at least two requests
in flight (unlimited included), P(any failed scene) at ``c`` is at most serial's plus one
percentage point. The recommended default is the smallest admissible ``c`` whose speedup
(geometric mean over those profiles) is within 5% of the best admissible speedup. Across
scenarios the smallest recommendation wins, so no scenario is pushed beyond its admissible
range. Keys that allow one request in flight are reported separately: no fixed ``c > 1``
is safe for them.

The rule itself (:func:`recommend_rule`) is pure: it reads :class:`CellStats` (one per cell
of the cell table, :func:`rule_cells`) and returns a :class:`Recommendation`, whose
:meth:`~Recommendation.as_dict` is the ``recommendation.json`` layout. :func:`recommend`
is the cell-table entry point (with the QoE rule's answer beside it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.scenario import Scenario

from ..store.counts import FAILURE_BUDGET_PP, fails_too_often
from .upstream import overall_for_today

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RULE",
    "CandidateC",
    "CellStats",
    "ClaimC3",
    "OneInFlight",
    "QuotaPick",
    "Recommendation",
    "Rule",
    "ScenarioRecommendation",
    "critical_path_speedup",
    "recommend",
    "recommend_rule",
    "recommend_scenario",
    "rule_cells",
    "speedup_bound",
]


@dataclass(frozen=True)
class Rule:
    """The rule's parameters (written as ``rule`` in recommendation.json)."""

    mode: str = "pipelined"
    backend: str = "sim"
    min_quota_for_default: int = 2
    failure_budget_pp: float = FAILURE_BUDGET_PP
    within_best: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RULE = Rule()


@dataclass(frozen=True)
class CellStats:
    """What the rule reads of one cell (model, adaptive off, one tenant)."""

    scenario: str
    mode: str
    quota: int
    concurrency: int
    p_any_failed: float
    speedup: float = math.nan
    speedup_lo: float = math.nan
    speedup_hi: float = math.nan
    pairs: int = 0
    fails_too_often: bool = True  # the cell table's flag (undefined counts as too often)


@dataclass(frozen=True)
class CandidateC:
    """One *c* of a scenario: admissible or not (and on which profile), and its speedup."""

    concurrency: int
    admissible: bool
    blocked_by: int | None  # the profile where failures exceed serial's the most
    speedup_geomean: float
    p_any_failed: dict[int, float]
    p_any_failed_serial: dict[int, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClaimC3:
    """Upstream's '≈2–3× at concurrency 3' against one mode at c = 3 on an unlimited key."""

    counts: bool
    speedup: float
    lo: float
    hi: float
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuotaPick:
    """The rule on one quota profile alone (no interval when serial is the pick by default)."""

    concurrency: int
    speedup: float
    lo: float | None = None
    hi: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"concurrency": self.concurrency, "speedup": self.speedup}
        if self.lo is not None and self.hi is not None:
            d.update(lo=self.lo, hi=self.hi)
        return d


@dataclass(frozen=True)
class OneInFlight:
    """P(any failed scene) at the recommended *c* and serial's on keys allowing one request."""

    p_any_failed: float
    p_any_failed_serial: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScenarioRecommendation:
    recommended: int
    best_admissible_speedup: float
    speedup_unlimited: float
    speedup_unlimited_ci: tuple[float, float]
    pairs: int
    profiles: tuple[int, ...]
    table: tuple[CandidateC, ...]
    claim_c3: dict[str, ClaimC3]
    bound: dict[str, float]
    by_quota: dict[int, QuotaPick]
    one_in_flight: OneInFlight

    def as_dict(self) -> dict[str, Any]:
        return {
            "recommended": self.recommended,
            "best_admissible_speedup": self.best_admissible_speedup,
            "speedup_unlimited": self.speedup_unlimited,
            "speedup_unlimited_ci": list(self.speedup_unlimited_ci),
            "pairs": self.pairs,
            "profiles": list(self.profiles),
            "table": [t.as_dict() for t in self.table],
            "claim_c3": {m: cl.as_dict() for m, cl in self.claim_c3.items()},
            "bound": dict(self.bound),
            "by_quota": {q: p.as_dict() for q, p in self.by_quota.items()},
            "one_in_flight": self.one_in_flight.as_dict(),
        }


@dataclass(frozen=True)
class Recommendation:
    rule: Rule
    upstream: str  # the profile of the headline
    recommended: int
    by_upstream: dict[str, int]
    scenarios: dict[str, ScenarioRecommendation]

    def as_dict(self) -> dict[str, Any]:
        """The recommendation.json layout (without the sections other rules add)."""
        return {
            "rule": self.rule.as_dict(),
            "upstream": self.upstream,
            "recommended": self.recommended,
            "by_upstream": dict(self.by_upstream),
            "scenarios": {n: s.as_dict() for n, s in self.scenarios.items()},
        }


# -- bounds from mean latencies -------------------------------------------------------------
def speedup_bound(sc: Scenario, concurrency: int = 10) -> dict[str, float]:
    """Upper bounds on pipelined speedup from mean latencies (no quota).

    ``S = A + k·T`` with clips one at a time (upstream's proposal arithmetic) and with
    clips ``t`` at a time (``S_t = A + ceil(k/t)·T``): the limit as N grows is
    ``(C+S)/S``; for the classroom's N it is ``N(C+S)/(C+N·S)`` with the serial S.
    """
    n = sc.outlines
    C = float(np.mean([sc.content_dist(i).mean for i in range(n)]))
    A = sc.actions.mean
    T = sc.tts.mean
    k = sc.speech_actions.mean
    S1 = A + k * T
    ks = sc.speech_actions.quantile((np.arange(1000) + 0.5) / 1000)  # E[ceil(k/t)]
    St = A + float(np.mean(np.ceil(ks / max(1, concurrency)))) * T
    return {
        "C_s": C,
        "A_s": A,
        "T_s": T,
        "k": k,
        "S_serial_s": S1,
        "S_parallel_s": St,
        "limit_serial_tts": (C + S1) / S1,
        "finite_n": n * (C + S1) / (C + n * St),
    }


def critical_path_speedup(sc: Scenario, concurrency: int) -> float:
    """Serial makespan over the critical path ``C + N·S_c`` (means; clips ``c`` at a time)."""
    return speedup_bound(sc, concurrency)["finite_n"]


# -- the rule -------------------------------------------------------------------------------
def _geomean(xs: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(xs)))) if all(x > 0 for x in xs) else math.nan


def _candidate(
    c: int, at_c: Mapping[int, CellStats], serial: Mapping[int, float], profiles: Sequence[int]
) -> CandidateC:
    """Admissibility of one *c* over the profiles, and its geometric-mean speedup."""
    fails = {q: at_c[q].p_any_failed for q in profiles}
    base = {q: serial[q] for q in profiles}
    excess = {q: fails[q] - base[q] for q in profiles if fails_too_often(fails[q], base[q])}
    return CandidateC(
        concurrency=c,
        admissible=not excess,
        blocked_by=max(excess, key=lambda q: excess[q]) if excess else None,
        speedup_geomean=_geomean([at_c[q].speedup for q in profiles]),
        p_any_failed=fails,
        p_any_failed_serial=base,
    )


def _pick_default(table: Sequence[CandidateC], within_best: float) -> tuple[int, float]:
    """(the smallest admissible *c* within ``within_best`` of the best, the best speedup);
    (1, NaN) when no *c* is admissible."""
    adm = [t for t in table if t.admissible and not math.isnan(t.speedup_geomean)]
    if not adm:
        return 1, math.nan
    best = max(t.speedup_geomean for t in adm)
    rec = min(t.concurrency for t in adm if t.speedup_geomean >= (1 - within_best) * best)
    return rec, best


def _pick_for_quota(cells: Iterable[CellStats], p_serial: float, within_best: float) -> QuotaPick:
    """The same rule on one quota profile alone: the smallest *c* within ``within_best`` of
    the best speedup among those whose failures stay within the budget of serial's."""
    ok = sorted(
        (
            x
            for x in cells
            if not fails_too_often(x.p_any_failed, p_serial) and not math.isnan(x.speedup)
        ),
        key=lambda x: x.concurrency,
    )
    if not ok:
        return QuotaPick(concurrency=1, speedup=1.0)
    top = max(x.speedup for x in ok)
    pick = next(x for x in ok if x.speedup >= (1 - within_best) * top)
    return QuotaPick(pick.concurrency, pick.speedup, pick.speedup_lo, pick.speedup_hi)


def _claim(cell: CellStats) -> ClaimC3:
    lo, hi = cell.speedup_lo, cell.speedup_hi
    if cell.fails_too_often:
        verdict = "cannot be judged (runs fail too often)"
    elif hi >= 2.0 and lo <= 3.0:
        verdict = "holds"
    elif lo > 3.0:
        verdict = "exceeds it"
    else:
        verdict = "falls short"
    return ClaimC3(not cell.fails_too_often, cell.speedup, lo, hi, verdict)


def recommend_scenario(
    cells: Sequence[CellStats], sc: Scenario | None, rule: Rule = RULE
) -> ScenarioRecommendation:
    """The rule on one scenario's cells (every mode; model, adaptive off, one tenant)."""
    serial = {x.quota: x.p_any_failed for x in cells if x.mode == "serial"}
    pip = [x for x in cells if x.mode == rule.mode]
    quotas = sorted({x.quota for x in pip})
    profiles = [q for q in quotas if q == 0 or q >= rule.min_quota_for_default]
    by_c: dict[int, dict[int, CellStats]] = {}
    for x in pip:
        by_c.setdefault(x.concurrency, {})[x.quota] = x
    table = tuple(_candidate(c, by_c[c], serial, profiles) for c in sorted(by_c))
    rec, best = _pick_default(table, rule.within_best)
    unl = by_c.get(rec, {}).get(0)
    c3 = {x.mode: x for x in cells if x.concurrency == 3 and x.quota == 0}
    one = by_c.get(rec, {}).get(1)
    return ScenarioRecommendation(
        recommended=rec,
        best_admissible_speedup=best,
        speedup_unlimited=unl.speedup if unl is not None else math.nan,
        speedup_unlimited_ci=(unl.speedup_lo, unl.speedup_hi)
        if unl is not None
        else (math.nan, math.nan),
        pairs=unl.pairs if unl is not None else 0,
        profiles=tuple(profiles),
        table=table,
        claim_c3={m: _claim(c3[m]) for m in ("hybrid", "pipelined") if m in c3},
        bound=speedup_bound(sc, 3) if sc is not None else {},
        by_quota={
            q: _pick_for_quota(
                (x for x in pip if x.quota == q), serial.get(q, math.nan), rule.within_best
            )
            for q in quotas
        },
        one_in_flight=OneInFlight(
            one.p_any_failed if one is not None else math.nan, serial.get(1, math.nan)
        ),
    )


def recommend_rule(
    cells: Sequence[CellStats], scenarios: Mapping[str, Scenario], rule: Rule = RULE
) -> Recommendation:
    """The rule on every scenario of the cells, and the headline for today's profile."""
    names = sorted({x.scenario for x in cells})
    per = {
        n: recommend_scenario([x for x in cells if x.scenario == n], scenarios.get(n), rule)
        for n in names
    }
    today = overall_for_today({n: v.recommended for n, v in per.items()}, scenarios)
    return Recommendation(rule, today["upstream"], today["recommended"], today["by_upstream"], per)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def rule_cells(cells: pd.DataFrame, rule: Rule = RULE) -> tuple[CellStats, ...]:
    """The cells the rule reads, from a cell table (:func:`runner.store.cells.cell_table`)."""
    sim = cells[
        (cells["backend"] == rule.backend) & (cells["adaptive"] == "off") & (cells["tenants"] == 1)
    ]
    out = []
    for r in sim.to_dict("records"):
        pairs = _num(r.get("pairs"))
        out.append(
            CellStats(
                scenario=str(r["scenario"]),
                mode=str(r["mode"]),
                quota=int(r["quota"]),
                concurrency=int(r["concurrency"]),
                p_any_failed=float(r["p_any_failed"]),
                speedup=_num(r.get("speedup")),
                speedup_lo=_num(r.get("speedup_lo")),
                speedup_hi=_num(r.get("speedup_hi")),
                pairs=0 if math.isnan(pairs) else int(pairs),
                fails_too_often=bool(r.get("fails_too_often", True)),
            )
        )
    return tuple(out)


def recommend(cells: pd.DataFrame, scenarios: Mapping[str, Scenario]) -> dict[str, Any]:
    """Apply :data:`RULE` to a cell table; returns the recommendation and its evidence (the
    recommendation.json layout), with the QoE rule's answer (:mod:`runner.report.qoe_report`)."""
    from .qoe_report import recommend_qoe

    rec = recommend_rule(rule_cells(cells), scenarios).as_dict()
    return {**rec, "qoe": recommend_qoe(cells)}
