"""Generation runs in the real world on the command line (issue 22, item 2):

* ``scenebench validate --exact --upstream runs``: the runs cells, model vs real world under the
  virtual clock (:mod:`runner.experiments.runs_exact`);
* ``scenebench run --upstream runs``: one server of runs in the real world (the asyncio driver
  against the fake provider's ``/v1`` endpoints), virtual or wall clock, reported as
  ``sim --upstream runs`` reports the model's (:func:`runner.cli.runs_sim.runs_lines`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import UsageError

__all__ = ["add_run_runs_args", "run_runs", "validate_runs"]


def validate_runs(a: argparse.Namespace) -> int:
    """``validate --exact --upstream runs``: exit 0 when every cell agrees, 1 on a divergence."""
    from sim.upstream import RUNS_PROFILE

    from ..experiments.runs_exact import exact_cells, gate_cells, validate_runs_exact
    from ..store.stamps import dumps, provenance, provenance_line

    if [p for p in a.upstream if p != RUNS_PROFILE]:
        raise UsageError(
            "scenebench validate: --upstream runs is validated on its own cells "
            "(generation runs); name it alone"
        )
    names = a.scenario or ["default"]
    pols = tuple(getattr(a, "adaptive", None) or ("off",))
    other = [p for p in pols if p not in ("off", "gate")]
    if other:
        raise UsageError(
            f"scenebench validate: the runs model has the policies off and gate; got {other[0]}"
        )
    from .runs_sim import gate_orders_of

    order = gate_orders_of(a, pols)
    if len(order) > 1:
        raise UsageError(f"scenebench validate: --gate-order: one order, got {','.join(order)}")
    cells = (exact_cells(names) if "off" in pols else []) + (
        gate_cells(names, order[0]) if "gate" in pols else []
    )
    bar: Any = None
    if not a.json and not a.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc="validate --exact --upstream runs", unit="cell", total=len(cells))
    runs = a.runs or (1 if a.quick else 2)
    rep = validate_runs_exact(
        cells, runs=runs, progress=(lambda i, n: bar.update(1)) if bar is not None else None
    )
    if bar is not None:
        bar.close()
    prov = provenance(list({c[1].name: c[1] for c in cells}.values()))
    if a.json:
        print(dumps(rep.to_json() | {"upstream": RUNS_PROFILE, "provenance": prov}))
        return 0 if rep.ok else 1
    print(provenance_line(prov))
    print(
        f"validate --exact --upstream runs: {rep.cells} cells x {runs} replications, "
        f"{rep.runs} generation runs, {rep.requests} requests ({rep.http_429} answered 429, "
        f"{rep.retries} retries) over {', '.join(names)}, adaptive {','.join(pols)}"
        + ("" if order[0] == "tiers" else f", gate order {order[0]}")
    )
    print(
        "real world (asyncio + httpx against the fake provider's /v1 endpoints; virtual "
        "clock) and SimPy model agree request for request"
        if rep.ok
        else f"DIVERGED: {rep.divergences[0]}"
    )
    if rep.ok and rep.compiled_runs:
        print(
            f"compiled runs engine (sim.runs_nb) equal to the SimPy model on {rep.compiled_runs} "
            "runs of the cells it applies to"
        )
    return 0 if rep.ok else 1


def add_run_runs_args(p: argparse.ArgumentParser) -> None:
    """``run``'s generation-runs flags (with ``--upstream runs``): ``sim``'s
    (:func:`runner.cli.runs_sim.add_runs_args`) and the arrivals and key limit."""
    from . import argtypes as c
    from .runs_sim import add_runs_args

    add_runs_args(p)
    g = p.add_argument_group("generation runs' arrivals and key (run --upstream runs)")
    g.add_argument(
        "--arrival-per-hour",
        type=c._positive_float("--arrival-per-hour"),
        default=None,
        help="Poisson arrivals of runs (default 10/h)",
    )
    g.add_argument("--arrivals", default=None, help="a replay file: seconds[,owner] a line")
    g.add_argument(
        "--key-inflight",
        type=c._int_in("--key-inflight", 1, 1000),
        default=None,
        help="the LLM key's in-flight limit (default: the scenario's)",
    )


def run_runs(a: argparse.Namespace) -> int:
    """``run --upstream runs``: one deployment cell in the real world; the per-deployment
    table (or ``--json`` with the summary, and every run's record under ``--per-run``)."""
    from sim.runs_config import RunsConfig, RunsSettings, load_arrivals
    from sim.scenario import load_scenario

    from ..store.stamps import dumps, provenance
    from ..world.runs_port import run_runs_real
    from .runs_sim import gate_order_of, runs_lines

    if a.base_url is not None:
        raise UsageError("scenebench run: --base-url is not used with --upstream runs")
    sc = load_scenario(a.scenario, upstream="runs")
    tts = a.tts_inflight if a.tts_inflight is not None else a.key_inflight
    sc = sc.with_quota(llm_inflight=a.key_inflight, tts_inflight=tts)
    cfg = RunsConfig(
        concurrency=sc.parallel_scene_concurrency if a.concurrency is None else a.concurrency,
        max_concurrent=a.max_concurrent,
        per_owner=a.per_owner,
        runs=a.runs,
        arrival_per_hour=a.arrival_per_hour if a.arrival_per_hour is not None else 10.0,
        arrivals=load_arrivals(a.arrivals) if a.arrivals else None,
        owners=a.owners,
        run_id=a.run_id,
        settings=RunsSettings(confirm=a.confirm, free_on_give_up=a.free_on_give_up),
        adaptive=getattr(a, "adaptive", "off"),
        gate_order=gate_order_of(a, getattr(a, "adaptive", "off")),
    )
    out = run_runs_real(sc, cfg, a.seed, clock=a.clock, time_scale=a.time_scale)
    summary = out.result.summary() | {"world": f"real ({a.clock} clock)"}
    if a.json:
        d: dict[str, Any] = {"summary": summary, "provenance": provenance(sc)}
        if a.per_run:
            d["runs"] = out.result.to_dict()["runs"]
        print(dumps(d))
    else:
        print(f"real world, {a.clock} clock (asyncio + httpx against the fake provider's /v1)")
        print("\n".join(runs_lines(summary)))
    return 0
