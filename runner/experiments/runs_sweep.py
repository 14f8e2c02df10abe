"""``scenebench sweep --upstream runs``: server-side generation runs over a grid of two knobs.

A *runs cell* is (backend, scenario, key, load, ``OPENMAIC_GENERATION_RUN_MAX_CONCURRENT`` *m*,
``PARALLEL_SCENE_CONCURRENCY`` *c*, policy). The key is an in-flight limit on both keys
(0 = unlimited) or a provider preset (:mod:`sim.presets`); the load is runs arriving per hour
(Poisson), ``runs`` of them per deployment. A cell simulates ``replicates`` deployments; deployment
``r`` of every cell uses the seed ``seed + r``, so every cell of one (scenario, key, load) sees
the same arrivals and the same draws: cells are paired deployment for deployment. Upstream's
defaults (*c* = 1, *m* = 4, policy ``off``) are always in the grid: they are every profile's
baseline (:mod:`runner.store.runs_cells`).

The folder is a sweep folder (:mod:`runner.experiments.sweep` writes, resumes and combines it);
its ``metadata.json`` spec carries ``"sweep": "runs"``. Each row of ``runs.parquet`` is one
requested run (:data:`runner.store.runs_cells.RUN_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from sim.errors import UserError
from sim.presets import apply_preset, load_preset
from sim.runs_config import RUNS_ADAPTIVE, check_gate_order
from sim.scenario import Scenario, load_scenario, scenario_from_mapping

if TYPE_CHECKING:
    from sim.runs import RunOutcome

from ..store.runs_cells import BASELINE, RUN_COLUMNS, RUNS_SWEEP, is_runs_spec

__all__ = [
    "RUNS_PROFILE",
    "RunsCell",
    "RunsSweepSpec",
    "is_runs_spec",
    "learner_rows",
    "run_runs_cell",
    "runs_grid",
    "runs_spec",
]

RUNS_PROFILE = RUNS_SWEEP  # the upstream profile and the folder's mark
QUICK = {
    "quotas": (3, 0),
    "loads_per_h": (30.0,),
    "max_concurrents": (2, 4),
    "concurrencies": (1, 2, 3),
    "replicates": 4,
    "runs": 8,
    "owners": 2,
}
FULL = {
    "quotas": (1, 2, 3, 5, 0),
    "loads_per_h": (10.0, 30.0, 60.0),
    "max_concurrents": (1, 2, 4, 8),
    "concurrencies": (1, 2, 3, 5),
    "replicates": 20,
    "runs": 20,
    "owners": 5,
}


@dataclass(frozen=True)
class RunsCell:
    backend: str
    scenario: str
    quota: int  # both keys' in-flight limit; 0 = unlimited (ignored with a preset)
    preset: str
    load_per_h: float
    max_concurrent: int
    concurrency: int
    adaptive: str
    replicates: int
    runs: int  # requested runs per deployment
    owners: int  # learners per deployment (run r is learner r % owners's); 0: one each
    seed: int
    gate_order: str = "tiers"  # the gate's waiting order (sim.run_gate.GateOrder)

    @property
    def cell_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.scenario)
        key = f"p-{self.preset}" if self.preset else f"q{self.quota}"
        pol = "" if self.adaptive == "off" else f"__a-{self.adaptive}"
        pol += "" if self.gate_order == "tiers" else f"__o-{self.gate_order}"
        return (
            f"runs__{self.backend}__{slug}__{key}__l{self.load_per_h:g}"
            f"__m{self.max_concurrent}__c{self.concurrency}{pol}"
        )


@dataclass(frozen=True)
class RunsSweepSpec:
    """The runs grid. Scenarios are kept as validated mappings (the folder is self-contained)."""

    scenarios: tuple[dict[str, Any], ...]
    backends: tuple[str, ...] = ("sim",)
    concurrencies: tuple[int, ...] = (1, 2, 3, 5)
    quotas: tuple[int, ...] = (1, 2, 3, 5, 0)
    presets: tuple[str, ...] = ()
    loads_per_h: tuple[float, ...] = (10.0, 30.0, 60.0)
    max_concurrents: tuple[int, ...] = (1, 2, 4, 8)
    adaptives: tuple[str, ...] = ("off",)
    gate_orders: tuple[str, ...] = ("tiers",)  # with the gate: its waiting orders, an axis
    replicates: int = 20
    runs: int = 20
    owners: int = 5
    seed: int = 0
    quick: bool = False
    sweep: str = RUNS_PROFILE
    real_time_scale: float | None = None  # unused; the sweep machinery passes it along

    def __post_init__(self) -> None:
        for p in self.presets:
            load_preset(p)
        for a in self.adaptives:
            if a not in RUNS_ADAPTIVE:  # upstream, or the key-wide gate (sim.run_gate)
                raise UserError(
                    f"adaptive: the runs model has {' and '.join(RUNS_ADAPTIVE)}; got {a!r}"
                )
        for o in self.gate_orders:
            check_gate_order(o, *self.adaptives)
        for b in self.backends:
            if b != "sim":
                raise UserError(f"backend: runs sweeps run on the model (sim); got {b!r}")
        for c in self.concurrencies:
            if not 1 <= c <= 10:
                raise UserError(f"concurrency: must be in 1..10, got {c}")
        for m in self.max_concurrents:
            if not 1 <= m <= 64:
                raise UserError(f"max concurrent runs: must be in 1..64, got {m}")
        for x in self.loads_per_h:
            if not (x > 0 and math.isfinite(x)):
                raise UserError(f"load: runs per hour must be > 0, got {x:g}")
        for q in self.quotas:
            if q < 0:
                raise UserError(f"quota: in-flight limits must be >= 0 (0 = unlimited), got {q}")
        if self.replicates < 2:
            raise UserError("reps: a runs sweep needs --reps >= 2 deployments per cell")
        if not 0 <= self.owners <= self.runs:
            raise UserError(f"owners: must be in 0..runs ({self.runs}), got {self.owners}")
        if not 1 <= self.runs <= 10_000:
            raise UserError(f"runs: runs per deployment must be in 1..10000, got {self.runs}")

    def scenario_objects(self) -> list[Scenario]:
        return [scenario_from_mapping(m) for m in self.scenarios]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunsSweepSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields
        }
        return cls(**kw)


def _with_baseline(xs: Sequence[int], x: int) -> tuple[int, ...]:
    return tuple(sorted({*xs, x}))


def runs_grid(spec: RunsSweepSpec) -> list[RunsCell]:
    """Every cell: scenario × backend × key × load × policy (× the gate's orders, for
    ``gate``) × *m* × *c* (upstream's defaults added to *c* and *m* when the flags leave
    them out)."""
    cs = _with_baseline(spec.concurrencies, BASELINE[0])
    ms = _with_baseline(spec.max_concurrents, BASELINE[1])
    keys = [(q, "") for q in spec.quotas] + [(0, p) for p in spec.presets]
    return [
        RunsCell(
            b,
            sc.name,
            q,
            p,
            float(load),
            m,
            c,
            a,
            spec.replicates,
            spec.runs,
            spec.owners,
            spec.seed,
            o,
        )
        for sc in spec.scenario_objects()
        for b in spec.backends
        for q, p in keys
        for load in spec.loads_per_h
        for a in spec.adaptives
        for o in (spec.gate_orders if a == "gate" else ("tiers",))
        for m in ms
        for c in cs
    ]


def runs_spec(
    *,
    quick: bool,
    scenarios: Sequence[str] | None,
    seed: int = 0,
    replicates: int | None = None,
    quotas: Sequence[int | str] | None = None,
    concurrencies: Sequence[int] | None = None,
    loads_per_h: Sequence[float] | None = None,
    max_concurrents: Sequence[int] | None = None,
    adaptives: Sequence[str] = ("off",),
    gate_orders: Sequence[str] = ("tiers",),
    runs: int | None = None,
) -> RunsSweepSpec:
    """The runs grid the flags ask for (``quick``: :data:`QUICK`, else :data:`FULL`)."""
    base: dict[str, Any] = QUICK if quick else FULL
    names = list(scenarios) if scenarios else ["default"]
    numbers = tuple(q for q in quotas or () if isinstance(q, int))
    presets = tuple(q for q in quotas or () if isinstance(q, str))
    return RunsSweepSpec(
        scenarios=tuple(load_scenario(n, upstream=RUNS_PROFILE).to_mapping() for n in names),
        quotas=numbers or (() if presets else base["quotas"]),
        presets=presets,
        concurrencies=tuple(concurrencies or base["concurrencies"]),
        loads_per_h=tuple(float(x) for x in (loads_per_h or base["loads_per_h"])),
        max_concurrents=tuple(max_concurrents or base["max_concurrents"]),
        adaptives=tuple(adaptives),
        gate_orders=tuple(gate_orders),
        replicates=replicates or base["replicates"],
        runs=runs or base["runs"],
        owners=base["owners"] if runs is None else max(1, runs // 4),
        seed=seed,
        quick=quick,
    )


# -- one cell -------------------------------------------------------------------------------
def simulate_deployment(sc: Scenario, params: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One deployment on the model (:func:`sim.runs.simulate_runs`), as learner rows."""
    from sim.runs import RunsConfig, simulate_runs

    cfg = RunsConfig.for_scenario(  # the scenario's [runs] settings and per-owner cap
        sc,
        concurrency=params["concurrency"],
        max_concurrent=params["max_concurrent"],
        runs=params["runs"],
        arrival_per_hour=params["load_per_h"],
        owners=params["owners"],
        keep_log=False,
        adaptive=params["adaptive"],
        gate_order=params.get("gate_order", "tiers"),
    )
    return learner_rows(simulate_runs(sc, cfg, seed=seed).records)


def learner_rows(records: Sequence[RunOutcome]) -> list[dict[str, Any]]:
    """The model's per-run records (:class:`sim.runs.RunOutcome`) in the learner's terms
    (:data:`RUN_COLUMNS` after the cell keys), with the deployment's span (first request to
    the last run's end, :func:`sim.runs.span_s`) on every row."""
    from sim.runs import span_s

    span_h = float(span_s(records)) / 3600.0 if records else math.nan
    return [
        {
            "refused": r.refused,
            "paused": r.state == "paused",
            "scenes_failed": len(r.failed_scenes),
            "wait_s": r.wait_s,
            "ttfs_s": r.first_scene_s,  # from the request (outline, agents, the wait)
            # stalls only for runs that showed a first scene (as summarize_runs counts them)
            "stall_s": math.nan if math.isnan(r.startup_s) else r.stall_s,
            "completed": r.state == "completed",
            "span_h": span_h,
        }
        for r in records
    ]


Deployment = Callable[[Scenario, dict[str, Any], int], list[dict[str, Any]]]


def run_runs_cell(
    cell: RunsCell, scenario: Scenario, deployment: Deployment | None = None
) -> pd.DataFrame:
    """All requested runs of one cell's deployments as rows of :data:`RUN_COLUMNS`
    (``deployment``: one simulated deployment's rows; the model's by default)."""
    one = deployment or simulate_deployment
    sc = (
        apply_preset(scenario, cell.preset)
        if cell.preset
        else scenario.with_quota(llm_inflight=cell.quota, tts_inflight=cell.quota)
    )
    params = dataclasses.asdict(cell)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for r in range(cell.replicates):
        for i, rec in enumerate(one(sc, params, cell.seed + r)):
            rows.append({**rec, "replicate": r, "run": i})
    df = _run_frame(rows, params, cell.cell_id)
    df["cell_cpu_s"] = time.perf_counter() - t0
    return df


def _run_frame(rows: list[dict[str, Any]], params: dict[str, Any], cell_id: str) -> pd.DataFrame:
    """The cell's rows as :data:`RUN_COLUMNS` and its id, made at once (per column the
    values of every row, or the cell's key repeated; a column set at a time cost ~0.1 ms)."""
    n = len(rows)
    data = {k: [params[k]] * n if k in params else [r[k] for r in rows] for k in RUN_COLUMNS}
    data["cell_id"] = [cell_id] * n
    df = pd.DataFrame(data)
    for col in ("refused", "paused", "completed"):
        if df[col].dtype != bool:
            df[col] = df[col].astype(bool)
    return df


def _run_runs_job(
    cell: RunsCell, scenario: Scenario | dict[str, Any], _scale: float | None
) -> tuple[str, pd.DataFrame | None, str | None]:
    """One cell for the sweep's pool (the scenario parsed once by the sweep, or as a
    mapping); a failure is returned, not raised."""
    try:
        sc = scenario if isinstance(scenario, Scenario) else scenario_from_mapping(scenario)
        df = run_runs_cell(cell, sc)
    except Exception as e:
        return cell.cell_id, None, f"{type(e).__name__}: {e}"
    return cell.cell_id, df, None
