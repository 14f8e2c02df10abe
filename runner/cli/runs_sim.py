"""Generation runs on the command line: ``scenebench sim --upstream runs`` — its flags
(registered without heavy imports) and its handler, which builds one
:class:`sim.runs_config.RunsConfig` from the flags and prints :func:`sim.runs.simulate_runs`'s
per-deployment figures (a table, or ``--json`` with every run's record under ``--per-run``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sim.errors import UserError

if TYPE_CHECKING:
    from sim.runs_config import RunsConfig
    from sim.scenario import Scenario

__all__ = [
    "RUNS_TABLE_FLAGS",
    "add_gate_order",
    "add_runs_args",
    "gate_order_of",
    "gate_orders_of",
    "runs_config_from_args",
    "runs_lines",
    "sim_runs",
]

# flags that override a scenario's [runs] table when given (their defaults are upstream's)
RUNS_TABLE_FLAGS = ("max_concurrent", "per_owner", "confirm", "free_on_give_up")


class _Given(argparse.Action):
    """Store the value and remember the flag was given (``Namespace.runs_given``): a
    scenario's ``[runs]`` table applies only to the flags not given."""

    def __call__(
        self, p: argparse.ArgumentParser, ns: argparse.Namespace, v: Any, opt: Any = None
    ) -> None:
        setattr(ns, self.dest, v)
        ns.runs_given = {*getattr(ns, "runs_given", ()), self.dest}


class _GivenTrue(_Given):
    """``store_true`` that remembers it was given."""

    def __call__(
        self, p: argparse.ArgumentParser, ns: argparse.Namespace, v: Any, opt: Any = None
    ) -> None:
        super().__call__(p, ns, True, opt)


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
        action=_Given,
        help="OPENMAIC_GENERATION_RUN_MAX_CONCURRENT (default: the scenario's [runs] table, "
        "else 4)",
    )
    g.add_argument(
        "--per-owner",
        type=c._int_in("--per-owner", 1, 1_000_000),
        default=2,
        action=_Given,
        help="OPENMAIC_MAX_ACTIVE_RUNS_PER_OWNER (default: the scenario's [runs] table, else 2)",
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
        action=_Given,
        help="the outline's confirmation (default: the scenario's [runs] table, else auto)",
    )
    g.add_argument(
        "--free-on-give-up",
        nargs=0,
        default=False,
        action=_GivenTrue,
        help="the provider frees an LLM request's slot when the client gives up "
        "(default: the scenario's [runs] table, else not)",
    )
    g.add_argument("--per-run", action="store_true", help="with --json: every run's record")
    add_gate_order(g)


def add_gate_order(g: Any, axis: bool = False) -> None:
    """``--gate-order``: the key-wide gate's waiting order (with ``--adaptive gate``); on
    ``sweep`` (``axis``) a comma list, one cell per order."""
    g.add_argument(
        "--gate-order",
        default=None,
        metavar="ORDER" + ("[,ORDER...]" if axis else ""),
        help="with --adaptive gate: the gate's waiting order, tiers (default), need, "
        "need-arrival or fifo" + (" (comma list: an axis)" if axis else "") + " (docs/runs.md)",
    )


def gate_orders_of(a: argparse.Namespace, adaptives: Sequence[str]) -> tuple[str, ...]:
    """The ``--gate-order`` values (default: tiers), each checked at the edge
    (:func:`sim.runs_config.check_gate_order`); given without ``--adaptive gate``, refused."""
    from sim.runs_config import check_gate_order

    given = getattr(a, "gate_order", None)
    if given is None:
        return ("tiers",)
    orders = tuple(x.strip() for x in str(given).split(","))
    for o in orders:
        check_gate_order(o, "gate")
    if "gate" not in adaptives:
        raise UserError(f"--gate-order {given}: orders the key-wide gate; needs --adaptive gate")
    return orders


def gate_order_of(a: argparse.Namespace, adaptive: str) -> str:
    """The one ``--gate-order`` of a deployment (``sim``, ``run``, ``validate``)."""
    orders = gate_orders_of(a, (adaptive,))
    if len(orders) > 1:
        raise UserError(f"--gate-order: one order here, got {','.join(orders)}")
    return orders[0]


def runs_config_from_args(a: argparse.Namespace, sc: Scenario) -> RunsConfig:
    """The cell of the runs flags on scenario ``sc``: its ``[runs]`` table
    (:meth:`sim.runs_config.RunsConfig.for_scenario`), then the :data:`RUNS_TABLE_FLAGS`
    given on the command line over it."""
    from sim.runs_config import RunsConfig, load_arrivals

    given: set[str] = getattr(a, "runs_given", set())
    caps = {k: getattr(a, k) for k in ("max_concurrent", "per_owner") if k in given}
    cfg = RunsConfig.for_scenario(
        sc,
        concurrency=a.concurrency,
        runs=a.runs,
        arrival_per_hour=a.arrival_per_hour if a.arrival_per_hour is not None else 10.0,
        arrivals=load_arrivals(a.arrivals) if a.arrivals else None,
        owners=a.owners,
        keep_log=False,
        adaptive=getattr(a, "adaptive", "off"),
        gate_order=gate_order_of(a, getattr(a, "adaptive", "off")),
        **caps,
    )
    changes = {k: getattr(a, k) for k in ("confirm", "free_on_give_up") if k in given}
    if changes:
        cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, **changes))
    return cfg


def sim_runs(a: argparse.Namespace) -> int:
    """``sim --upstream runs``: one deployment cell."""
    from sim.runs import simulate_runs
    from sim.scenario import load_scenario

    sc = load_scenario(a.scenario, upstream="runs")
    llm = a.key_inflight
    tts = a.tts_inflight if a.tts_inflight is not None else a.key_inflight
    sc = sc.with_quota(llm_inflight=llm, tts_inflight=tts)
    cfg = runs_config_from_args(a, sc)
    from ..store.stamps import provenance, provenance_line

    # simpy, fast (the heap) and compiled as named; auto: the rule (sim.runs.pick_runs_engine)
    if a.engine == "fast_quota":
        raise UserError(
            "--engine fast_quota: the limited-key engine is for classroom cells; with "
            "--upstream runs use auto, simpy, fast or compiled"
        )
    engine = a.engine
    res = simulate_runs(sc, cfg, a.seed, engine)
    prov = provenance(sc)
    if a.json:
        d: dict[str, Any] = {"summary": res.summary(), "provenance": prov}
        if a.per_run:
            d["runs"] = res.to_dict()["runs"]
        print(json.dumps(_finite(d), indent=2, sort_keys=True))
    else:
        print("\n".join([provenance_line(prov), *runs_lines(res.summary())]))
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
        + ("" if s.get("adaptive", "off") == "off" else f"  adaptive {s['adaptive']}")
        + ("" if s.get("gate_order", "tiers") == "tiers" else f"  gate order {s['gate_order']}")
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
