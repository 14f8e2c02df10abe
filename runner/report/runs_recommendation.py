"""The two-knob answer for server-side generation runs: ``PARALLEL_SCENE_CONCURRENCY`` (*c*)
and ``OPENMAIC_GENERATION_RUN_MAX_CONCURRENT`` (*m*), per key limit and load, judged by what
learners feel.

A *profile* is one key (an in-flight limit or a provider preset) at one load (runs arriving
per hour). Each cell of a profile is one (*c*, *m*) pair. The **baseline** of a profile is
upstream's default, *c* = 1 (``PARALLEL_SCENE_CONCURRENCY`` unset: serial) with *m* = 4.

Per profile (:func:`pick_profile`):

1. a run is *bad* for its learner when its start is refused (429 ``ACTIVE_RUN_LIMIT``), it
   pauses, or a scene of it fails; a pair is **admissible** when its P(bad run) (per
   requested run) is at most the least of the profile's pairs + :attr:`RunsRule.failure_budget_pp`
   points (an undefined share is not admissible). Upstream's defaults are not the floor:
   on a tight key they pause runs that a smaller pair would not;
2. among the admissible pairs, those whose p95 time from request to first scene is within
   :attr:`RunsRule.within_best` of the best are *near-best*;
3. among those, the ones whose mean stall per run is within ``within_best`` (or
   :attr:`RunsRule.stall_slack_s`) of the least;
4. the pick is the smallest *c*, then the smallest *m*, of what is left (the least load on
   the key that learners cannot tell from the best).

The **default pair** (:func:`pick_default`) is the same rule over every profile at once: a
pair is admissible when it is admissible on every profile whose key allows at least
:attr:`RunsRule.min_quota_for_default` requests in flight (unlimited included; presets are
reported per profile, not in the default), and it is scored by the geometric means of p95
time to first scene and of mean stall over those profiles; when no pair holds everywhere,
the one whose worst excess is least, flagged. Keys allowing one request in flight are
reported apart, as in the browser-era rule. Every pick carries upstream's defaults
(*c* = 1, *m* = 4, policy ``off``) as its **baseline**, with paired differences.

Every policy (``adaptive``: ``off`` is upstream, ``gate`` the key-wide gate across runs, when
the sweep ran it) gets its own answer, so the report can say whether a gate makes a higher
default safe. The rule is pure: it reads :class:`RunsCellStats` and returns
:class:`RunsRecommendation` (its :meth:`~RunsRecommendation.as_dict` is the ``runs`` section
of ``recommendation.json``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store.counts import FAILURE_BUDGET_PP

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RUNS_RULE",
    "GateVersusOff",
    "Profile",
    "ProfilePick",
    "RunsCellStats",
    "RunsRecommendation",
    "RunsRule",
    "admissible",
    "floor_of",
    "gate_versus_off",
    "knob_sentence",
    "narrow",
    "pick_default",
    "pick_profile",
    "recommend_runs",
    "runs_rule_cells",
]


@dataclass(frozen=True)
class RunsRule:
    """The two-knob rule's parameters (written as ``rule`` under ``runs``)."""

    backend: str = "sim"
    baseline_concurrency: int = 1  # upstream's default: the variable unset (0) reads as serial
    baseline_max_concurrent: int = 4  # OPENMAIC_GENERATION_RUN_MAX_CONCURRENT's default
    failure_budget_pp: float = FAILURE_BUDGET_PP
    within_best: float = 0.05
    stall_slack_s: float = 1.0
    min_quota_for_default: int = 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RUNS_RULE = RunsRule()


@dataclass(frozen=True, order=True)
class Profile:
    """A key (in-flight ``quota``, 0 = unlimited, or a provider ``preset``) at a load."""

    quota: int
    load_per_h: float
    preset: str = ""

    @property
    def label(self) -> str:
        key = (
            f"a `{self.preset}` key"
            if self.preset
            else ("an unlimited key" if self.quota == 0 else f"a {self.quota}-in-flight key")
        )
        return f"{key} at {self.load_per_h:g} runs/hour"

    @property
    def key(self) -> str:
        """The id used in ``recommendation.json``: ``q3@10``, ``p-openai-tier1@10``."""
        k = f"p-{self.preset}" if self.preset else f"q{self.quota}"
        return f"{k}@{self.load_per_h:g}"


@dataclass(frozen=True)
class RunsCellStats:
    """What the rule reads of one runs cell (one policy, one profile, one (*c*, *m*) pair).

    The ``*_delta*`` fields are the paired differences against the profile's baseline (the
    same seeds; 95% bootstrap over the replicated deployments), NaN when not computed."""

    scenario: str
    quota: int
    load_per_h: float
    concurrency: int
    max_concurrent: int
    p_paused: float
    p_any_failed: float
    p_refused: float
    p_bad: float  # P(the run was refused, paused or has a failed scene), per requested run
    ttfs_p50_s: float
    ttfs_p95_s: float
    stall_mean_s: float
    wait_p95_s: float = math.nan
    runs_per_h: float = math.nan  # completed runs per hour the deployment sustained
    preset: str = ""
    adaptive: str = "off"
    runs: int = 0
    replicates: int = 0
    ttfs_p95_delta_s: float = math.nan
    ttfs_p95_delta_lo_s: float = math.nan
    ttfs_p95_delta_hi_s: float = math.nan
    stall_delta_s: float = math.nan
    stall_delta_lo_s: float = math.nan
    stall_delta_hi_s: float = math.nan

    @property
    def profile(self) -> Profile:
        return Profile(self.quota, self.load_per_h, self.preset)

    @property
    def pair(self) -> tuple[int, int]:
        return (self.concurrency, self.max_concurrent)


@dataclass(frozen=True)
class ProfilePick:
    """The pair for one profile, its evidence and the baseline's."""

    profile: Profile
    concurrency: int
    max_concurrent: int
    admissible: int  # how many pairs of the profile were admissible
    candidates: int
    pick: RunsCellStats
    baseline: RunsCellStats | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "quota": self.profile.quota,
            "preset": self.profile.preset,
            "load_per_h": self.profile.load_per_h,
            "label": self.profile.label,
            "concurrency": self.concurrency,
            "max_concurrent": self.max_concurrent,
            "sentence": knob_sentence(self.profile, self.concurrency, self.max_concurrent),
            "admissible": self.admissible,
            "candidates": self.candidates,
            "pick": asdict(self.pick),
            "baseline": asdict(self.baseline) if self.baseline is not None else None,
        }


@dataclass(frozen=True)
class DefaultPick:
    """The one pair for every profile whose key allows ≥ ``min_quota_for_default``."""

    concurrency: int
    max_concurrent: int
    profiles: tuple[Profile, ...]
    ttfs_p95_geomean_s: float
    stall_geomean_s: float
    blocked: dict[str, str] = field(default_factory=dict)  # "c,m" -> the first profile it fails
    within_budget: bool = True  # False: no pair held on every profile; the least-bad one
    worst_excess: float = 0.0  # its largest P(bad run) above a profile's floor
    worst_profile: str = ""  # where

    def as_dict(self) -> dict[str, Any]:
        return {
            "within_budget": self.within_budget,
            "worst_excess": self.worst_excess,
            "worst_profile": self.worst_profile,
            "concurrency": self.concurrency,
            "max_concurrent": self.max_concurrent,
            "profiles": [p.key for p in self.profiles],
            "ttfs_p95_geomean_s": self.ttfs_p95_geomean_s,
            "stall_geomean_s": self.stall_geomean_s,
            "blocked": dict(self.blocked),
        }


@dataclass(frozen=True)
class RunsRecommendation:
    rule: RunsRule
    # scenario -> policy -> ...
    defaults: dict[str, dict[str, DefaultPick]]
    by_profile: dict[str, dict[str, tuple[ProfilePick, ...]]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.as_dict(),
            "scenarios": {
                s: {
                    pol: {
                        "default": self.defaults[s][pol].as_dict(),
                        "by_profile": [p.as_dict() for p in self.by_profile[s][pol]],
                    }
                    for pol in self.defaults[s]
                }
                for s in self.defaults
            },
        }


def knob_sentence(profile: Profile, concurrency: int, max_concurrent: int) -> str:
    """``a 3-in-flight key at 10 runs/hour: c = 2, max concurrent runs = 2``."""
    return f"{profile.label}: c = {concurrency}, max concurrent runs = {max_concurrent}"


# -- the rule -------------------------------------------------------------------------------
def admissible(x: RunsCellStats, floor: float, rule: RunsRule = RUNS_RULE) -> bool:
    """P(a learner's run is refused, paused or has a failed scene) within ``floor`` (the
    least of the profile's pairs) + the budget; an undefined share is not admissible."""
    if math.isnan(x.p_bad) or math.isnan(floor):
        return False
    return x.p_bad <= floor + rule.failure_budget_pp / 100 + 1e-12


def narrow(xs: Sequence[Any], score: Any, rel: float, slack: float = 0.0) -> list[Any]:
    """The items whose ``score`` is within ``rel`` (or ``slack``) of the least finite one."""
    finite = [x for x in xs if not math.isnan(score(x))]
    if not finite:
        return []
    best = min(score(x) for x in finite)
    return [x for x in finite if score(x) <= max((1 + rel) * best, best + slack) + 1e-12]


def _baseline(cells: Iterable[RunsCellStats], rule: RunsRule) -> RunsCellStats | None:
    want = (rule.baseline_concurrency, rule.baseline_max_concurrent)
    return next((x for x in cells if x.pair == want and x.adaptive == "off"), None)


def floor_of(cells: Iterable[RunsCellStats]) -> float:
    """The least P(bad run) of some cells (NaN when none is defined)."""
    xs = [x.p_bad for x in cells if not math.isnan(x.p_bad)]
    return min(xs) if xs else math.nan


def pick_profile(
    cells: Sequence[RunsCellStats],
    rule: RunsRule = RUNS_RULE,
    floor: float | None = None,
    baseline: RunsCellStats | None = None,
) -> ProfilePick | None:
    """The rule on one profile's cells (one scenario, one policy); None without cells.
    ``floor``: the least P(bad run) to hold to (default: these cells'); ``baseline``:
    upstream's defaults, for the evidence (default: found among the cells)."""
    if not cells:
        return None
    f = floor_of(cells) if floor is None else floor
    base = baseline if baseline is not None else _baseline(cells, rule)
    ok = [x for x in cells if admissible(x, f, rule)]
    near = narrow(ok, lambda x: x.ttfs_p95_s, rule.within_best)
    calm = narrow(near, lambda x: x.stall_mean_s, rule.within_best, rule.stall_slack_s)
    pool = calm or ok or list(cells)
    pick = min(pool, key=lambda x: x.pair) if calm else min(pool, key=lambda x: (x.p_bad, x.pair))
    return ProfilePick(
        cells[0].profile, pick.concurrency, pick.max_concurrent, len(ok), len(cells), pick, base
    )


def _geomean(xs: Sequence[float]) -> float:
    a = np.asarray(xs, dtype=float)
    if not len(a) or np.isnan(a).any():
        return math.nan
    return float(np.exp(np.mean(np.log(np.maximum(a, 1e-9)))))


def default_profiles(profiles: Iterable[Profile], rule: RunsRule = RUNS_RULE) -> list[Profile]:
    """The profiles the default must hold on: keys allowing ≥ the minimum (unlimited too)."""
    return sorted(
        p
        for p in profiles
        if not p.preset and (p.quota == 0 or p.quota >= rule.min_quota_for_default)
    )


def pick_default(
    cells: Sequence[RunsCellStats],
    rule: RunsRule = RUNS_RULE,
    floors: Mapping[Profile, float] | None = None,
) -> DefaultPick:
    """The one pair admissible on every default profile with the best geometric means
    (p95 time to first scene, then stall), smallest *c* then *m*. When no pair is
    admissible everywhere: the pair whose worst excess over a profile's floor is least
    (``within_budget`` false). ``floors``: each profile's least P(bad run) (default:
    these cells')."""
    profiles = default_profiles({x.profile for x in cells}, rule)
    at: dict[tuple[int, int], dict[Profile, RunsCellStats]] = {}
    for x in cells:
        at.setdefault(x.pair, {})[x.profile] = x
    fl = dict(floors or {})
    for p in profiles:
        fl.setdefault(p, floor_of(x for x in cells if x.profile == p))
    full = {pair: by for pair, by in sorted(at.items()) if all(p in by for p in profiles)}
    scored: list[tuple[tuple[int, int], float, float]] = []
    blocked: dict[str, str] = {}
    for pair, by in full.items():
        bad = next((p for p in profiles if not admissible(by[p], fl[p], rule)), None)
        if bad is not None:
            blocked[f"{pair[0]},{pair[1]}"] = bad.key
            continue
        scored.append(
            (
                pair,
                _geomean([by[p].ttfs_p95_s for p in profiles]),
                _geomean([by[p].stall_mean_s for p in profiles]),
            )
        )
    near = narrow(scored, lambda s: s[1], rule.within_best)
    calm = narrow(near, lambda s: s[2], rule.within_best, rule.stall_slack_s)
    if calm:
        best = min(calm, key=lambda s: s[0])
        return DefaultPick(best[0][0], best[0][1], tuple(profiles), best[1], best[2], blocked)
    if not full or not profiles:  # no pair on every profile, or no default profile (tight keys)
        c, m = rule.baseline_concurrency, rule.baseline_max_concurrent
        return DefaultPick(c, m, tuple(profiles), math.nan, math.nan, blocked, False)

    def worst(pair: tuple[int, int]) -> float:
        return max(full[pair][p].p_bad - fl[p] for p in profiles)

    pair = min(full, key=lambda q: (worst(q), q))
    by = full[pair]
    where = max(profiles, key=lambda p: by[p].p_bad - fl[p])
    return DefaultPick(
        pair[0],
        pair[1],
        tuple(profiles),
        _geomean([by[p].ttfs_p95_s for p in profiles]),
        _geomean([by[p].stall_mean_s for p in profiles]),
        blocked,
        False,
        worst(pair),
        where.label,
    )


def recommend_runs(
    cells: Sequence[RunsCellStats], rule: RunsRule = RUNS_RULE
) -> RunsRecommendation:
    """The two-knob answer per scenario and policy (``off`` first). A profile's floor is the
    least P(bad run) of all its pairs under every policy, and its baseline upstream's
    defaults under ``off``: a policy is held to what the best pair achieves anywhere."""
    defaults: dict[str, dict[str, DefaultPick]] = {}
    by_profile: dict[str, dict[str, tuple[ProfilePick, ...]]] = {}
    for s in sorted({x.scenario for x in cells}):
        mine = [x for x in cells if x.scenario == s]
        groups: dict[Profile, list[RunsCellStats]] = {}
        for x in mine:
            groups.setdefault(x.profile, []).append(x)
        floors = {p: floor_of(g) for p, g in groups.items()}
        bases = {p: _baseline(g, rule) for p, g in groups.items()}
        pols = sorted({x.adaptive for x in mine}, key=lambda a: (a != "off", a))
        defaults[s], by_profile[s] = {}, {}
        for pol in pols:
            own = [x for x in mine if x.adaptive == pol]
            picks = []
            for p in sorted(groups):
                pk = pick_profile([x for x in own if x.profile == p], rule, floors[p], bases[p])
                if pk is not None:
                    picks.append(pk)
            defaults[s][pol] = pick_default(own, rule, floors)
            by_profile[s][pol] = tuple(picks)
    return RunsRecommendation(rule, defaults, by_profile)


@dataclass(frozen=True)
class GateVersusOff:
    """Per profile: what a policy (the key-wide ``gate``) admits against upstream's client
    (``off``) under the same rule and floor. ``max_c_*`` / ``max_m_*``: the highest *c* (any
    *m*) and the highest *m* (any *c*) admissible (0: none); ``higher``: the policy admits a
    higher *c* or a higher *m* than ``off`` does."""

    profile: Profile
    policy: str
    off_pair: tuple[int, int]
    pol_pair: tuple[int, int]
    max_c_off: int
    max_c_pol: int
    max_m_off: int
    max_m_pol: int
    floor: float
    off_p_bad: float
    pol_p_bad: float

    @property
    def higher_c(self) -> bool:
        return self.max_c_pol > self.max_c_off

    @property
    def higher_m(self) -> bool:
        return self.max_m_pol > self.max_m_off

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "key": self.profile.key,
            "label": self.profile.label,
            "higher_c": self.higher_c,
            "higher_m": self.higher_m,
        }


def _highest(cells: Iterable[RunsCellStats], floor: float, rule: RunsRule) -> tuple[int, int]:
    ok = [x for x in cells if admissible(x, floor, rule)]
    return max((x.concurrency for x in ok), default=0), max(
        (x.max_concurrent for x in ok), default=0
    )


def gate_versus_off(
    cells: Sequence[RunsCellStats], rec: RunsRecommendation, rule: RunsRule = RUNS_RULE
) -> dict[str, list[GateVersusOff]]:
    """Per scenario and profile, every non-``off`` policy against ``off`` (see
    :class:`GateVersusOff`); empty when the cells have only ``off``."""
    out: dict[str, list[GateVersusOff]] = {}
    for s, pols in rec.by_profile.items():
        off = {p.profile: p for p in pols.get("off", ())}
        mine = [x for x in cells if x.scenario == s]
        for pol, picks in pols.items():
            if pol == "off":
                continue
            for pk in picks:
                o = off.get(pk.profile)
                if o is None:
                    continue
                prof = [x for x in mine if x.profile == pk.profile]
                f = floor_of(prof)
                c_off, m_off = _highest((x for x in prof if x.adaptive == "off"), f, rule)
                c_pol, m_pol = _highest((x for x in prof if x.adaptive == pol), f, rule)
                out.setdefault(s, []).append(
                    GateVersusOff(
                        pk.profile,
                        pol,
                        o.pick.pair,
                        pk.pick.pair,
                        c_off,
                        c_pol,
                        m_off,
                        m_pol,
                        f,
                        o.pick.p_bad,
                        pk.pick.p_bad,
                    )
                )
    return out


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


_FLOATS = (
    "p_bad",
    "p_paused",
    "p_any_failed",
    "p_refused",
    "ttfs_p50_s",
    "ttfs_p95_s",
    "stall_mean_s",
    "wait_p95_s",
    "runs_per_h",
    "ttfs_p95_delta_s",
    "ttfs_p95_delta_lo_s",
    "ttfs_p95_delta_hi_s",
    "stall_delta_s",
    "stall_delta_lo_s",
    "stall_delta_hi_s",
)


def _policy(r: dict[str, Any]) -> str:
    """A cell's policy as the rule compares them: ``off``, ``gate`` (the default order) or
    ``gate-<order>`` (another waiting order of the gate, ``--gate-order``)."""
    pol = str(r.get("adaptive", "off"))
    order = r.get("gate_order")
    if pol != "gate" or not isinstance(order, str) or order in ("", "tiers"):
        return pol
    return f"gate-{order}"


def runs_rule_cells(cells: pd.DataFrame, rule: RunsRule = RUNS_RULE) -> tuple[RunsCellStats, ...]:
    """The cells the rule reads, from a runs cell table
    (:func:`runner.store.runs_cells.runs_cell_table`)."""
    sim = cells[cells["backend"] == rule.backend]
    out = []
    for r in sim.to_dict("records"):
        out.append(
            RunsCellStats(
                scenario=str(r["scenario"]),
                quota=int(r["quota"]),
                preset=str(r.get("preset") or ""),
                load_per_h=float(r["load_per_h"]),
                concurrency=int(r["concurrency"]),
                max_concurrent=int(r["max_concurrent"]),
                adaptive=_policy(r),
                runs=int(r.get("runs", 0)),
                replicates=int(r.get("replicates", 0)),
                **{k: _num(r.get(k)) for k in _FLOATS},
            )
        )
    return tuple(out)
