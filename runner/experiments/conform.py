"""Conformance: upstream OpenMAIC's own TypeScript scene loop vs the Python port.

``scenebench conform --openmaic PATH`` bundles ``lib/hooks/use-scene-generator.ts`` of an
OpenMAIC checkout with esbuild (installed from npm into a cache folder on first use),
replacing its browser-only imports by the stubs of ``runner/experiments/conform_js/stubs``
(the table is in ``runner/experiments/conform_js/build.mjs``), runs it under Node against the
fake provider on a fixed set of cases, turns the provider's request log into a trace (the format of
``shared/upstream-traces``) and compares it with the port's trace of the same case.
See ``docs/conform.md``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .conform_checkout import ENTRY, ConformError, Detected, check_checkout, detect_profile
from .conform_node import (
    ESBUILD_VERSION,
    MIN_NODE,
    Bundle,
    HarnessError,
    build_bundle,
    default_cache_dir,
    ensure_esbuild,
    node_json,
    node_version,
)

if TYPE_CHECKING:
    from sim.scenario import Scenario

    from .traces import Trace

__all__ = [
    "ENTRY",
    "ESBUILD_VERSION",
    "FOREGROUND_PROFILES",
    "MIN_NODE",
    "PORT_CLIENT",
    "Bundle",
    "ConformCase",
    "ConformError",
    "ConformReport",
    "ConformRow",
    "HarnessError",
    "build_bundle",
    "check_checkout",
    "conform",
    "decidable_port_side",
    "default_cache_dir",
    "default_case_names",
    "ensure_esbuild",
    "fixed_cases",
    "metrics",
    "node_version",
    "port_side",
    "run_case",
    "run_driver",
    "trace_dict",
]

STEP_NAMES = ("content", "actions", "tts")
# The port's profile that matches how upstream's loop is driven here (loop alone, fixed jitter).
# Upstream runs on sockets: each hop adds ~0.03 model s at time scale 0.15, so besides the 1-s
# tolerance a time may be off by 1 % of itself (the wall clock's fidelity target).
WALL_REL_TOL = 0.01
# ``upstream`` is the checkout's profile (detected, or --upstream); ``foreground_first_scene``
# is the case's.
PORT_CLIENT: dict[str, Any] = {
    "upstream": "pr696",
    "foreground_first_scene": False,
    "jitter_u": 0.5,
}
# case2's latency draws: with this seed every admission decision at its 2-in-flight key is
# at least RACE_MARGIN_S from the event that would flip it, under every profile, at c = 2 and 3
# and in the run engine (conform_margin; tests/runner/test_conform_margin.py). With constant
# latencies two contents sent together ended at one instant: a race a real clock decides.
CASE2_SEED = 210
# name -> (scenario file in runner/experiments/conform_cases, c, seed, foreground first scene)
_CASES: dict[str, tuple[str, int, int, bool]] = {
    "case1-c0": ("case1", 0, 0, False),
    "case1-c3": ("case1", 3, 0, False),
    "case2-c2": ("case2", 2, CASE2_SEED, False),
    "case2-c3": ("case2", 3, CASE2_SEED, False),
    "case3-c0": ("case3", 0, 0, False),
    "case3-c3": ("case3", 3, 0, False),
    "case4-c0": ("case4", 0, 0, False),
    "case5-c3": ("case5", 3, 644, False),
    "case6-c3": ("case6", 3, 0, False),
    "fg1-c3": ("case1", 3, 0, True),
    "fg4-c3": ("case4", 3, 0, True),
}
# the cases that drive the generation-preview page's first scene through the checkout's own
# exports: profiles whose page generates the first scene's clips with generateTTSForScene
FOREGROUND_PROFILES = ("pr1039",)


# -- cases ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConformCase:
    """One run: a scenario, the concurrency c the loop reads and the provider's seed;
    ``foreground``: the generation-preview page's first scene runs before the loop."""

    name: str
    scenario: Scenario
    concurrency: int
    seed: int = 0
    note: str = ""
    foreground: bool = False


def _case_scenario(stem: str, client: dict[str, Any]) -> tuple[Scenario, str]:
    """The case's scenario with the port's ``client`` table, when the scenario spec knows
    ``[client]``."""
    from sim.scenario import ScenarioError, scenario_from_mapping

    ref = resources.files("runner.experiments").joinpath("conform_cases", f"{stem}.toml")
    data = tomllib.loads(ref.read_text(encoding="utf-8"))
    try:
        return scenario_from_mapping({**data, "client": client}), ""
    except ScenarioError as e:
        if not str(e).startswith("client"):
            raise
        note = f"the scenario spec refused the port's [client] profile ({e}); the port ran its own"
    return scenario_from_mapping(data), note


def default_case_names(upstream: str) -> list[str]:
    """The cases run when none is named: the loop's, and the first scene's where the
    checkout's page generates it with exports conform can call (:data:`FOREGROUND_PROFILES`)."""
    return [n for n, (*_, fg) in _CASES.items() if not fg or upstream in FOREGROUND_PROFILES]


def fixed_cases(names: Sequence[str] | None = None, upstream: str = "pr696") -> list[ConformCase]:
    """The fixed case set (5 outlines, constant latencies), or the named ones in that order,
    with the port under the profile ``upstream``."""
    from sim.upstream import profile

    profile(upstream)  # a ScenarioError naming the profiles
    wanted = default_case_names(upstream) if not names else list(names)
    unknown = [n for n in wanted if n not in _CASES]
    if unknown:
        raise ConformError(
            f"--case: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(_CASES)}"
        )
    out = []
    for name in wanted:
        stem, c, seed, fg = _CASES[name]
        client = {**PORT_CLIENT, "upstream": upstream, "foreground_first_scene": fg}
        sc, note = _case_scenario(stem, client)
        out.append(ConformCase(name, sc, c, seed, note, fg))
    return out


# -- one run of upstream's loop -----------------------------------------------------------------
def run_driver(
    bundle: Bundle | Path,
    base_url: str,
    *,
    concurrency: int,
    outlines: int,
    scene_types: Sequence[str] = ("slide",),
    classroom: int = 0,
    time_scale: float = 0.15,
    random_u: float = 0.5,
    timeout_s: float = 600.0,
    drain_s: float = 60.0,
    foreground: bool = False,
) -> dict[str, Any]:
    """Run the bundled loop once under Node against ``base_url``; the driver's JSON result.
    ``foreground``: the driver first generates outline 0 as the generation-preview page does
    (the checkout's fetchSceneContent, fetchSceneActions and generateTTSForScene with its
    foreground retry options), then runs the loop for the others."""
    path = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    cfg = {
        "bundle": str(path),
        "baseUrl": base_url,
        "concurrency": concurrency,
        "outlines": outlines,
        "sceneTypes": list(scene_types),
        "classroom": classroom,
        "timeScale": time_scale,
        "random": random_u,
        "llmKey": "llm-key",
        "ttsKey": "tts-key",
        "drainS": drain_s,
        "foreground": foreground,
    }
    return node_json("driver.mjs", cfg, timeout_s)


def trace_dict(
    name: str,
    concurrency: int,
    log_rows: Sequence[Sequence[Any]],
    driver_out: dict[str, Any],
    time_scale: float,
    tts_concurrency: int | None = None,
) -> dict[str, Any]:
    """The trace (``shared/upstream-traces`` format) of one driver run and the provider's log;
    ``tts_concurrency``: a loop scene's clips at once under the case's profile (default: c
    when c > 1, else 1)."""
    t0 = int(driver_out["t0_us"])
    requests = [
        {
            "step": STEP_NAMES[int(row[1])],
            "order": int(row[2]),
            "clip": int(row[3]),
            "attempt": int(row[4]),
            "t_arrival_s": round((int(row[6]) - t0) / 1e6, 3),
            "t_end_s": round((int(row[8]) - t0) / 1e6, 3),
            "status": int(row[9]),
        }
        for row in log_rows
    ]
    ready = [float(t) for t in driver_out.get("scene_ready_s", [])]
    return {
        "case": name,
        "concurrency": concurrency,
        "tts_concurrency": tts_concurrency
        if tts_concurrency is not None
        else (concurrency if concurrency > 1 else 1),
        "recorded_time_scale": time_scale,
        "summary": {
            "ttfs_s": ready[0] if ready else None,
            "makespan_s": ready[-1] if ready else None,
            "status": driver_out.get("status"),
            "failed_orders": list(driver_out.get("failed_orders", [])),
            "scene_order": list(driver_out.get("scene_order", [])),
            "scene_ready_s": ready,
        },
        "requests": requests,
    }


def _to_trace(d: dict[str, Any], out_dir: Path | None) -> Trace:
    """A :class:`~runner.experiments.traces.Trace` through ``load_trace`` (the JSON is the
    interface)."""
    from .traces import load_trace

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{d['case']}.json"
        path.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
        return load_trace(path)
    with tempfile.TemporaryDirectory(prefix="scenebench-trace-") as tmp:
        path = Path(tmp) / "trace.json"
        path.write_text(json.dumps(d), encoding="utf-8")
        return load_trace(path)


def _provider_log(base_url: str, classroom: int) -> list[list[Any]]:
    import httpx

    try:
        resp = httpx.get(
            f"{base_url}/api/_scenebench/log", params={"classroom": str(classroom)}, timeout=30
        )
        rows: list[list[Any]] = resp.json()["log"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise ConformError(f"provider: cannot read the request log ({e})") from None
    return rows


def run_case(
    case: ConformCase,
    bundle: Bundle,
    *,
    time_scale: float = 0.15,
    random_u: float = 0.5,
    classroom: int = 0,
    timeout_s: float | None = None,
    out_dir: str | Path | None = None,
    driver_out: dict[str, Any] | None = None,
) -> Trace:
    """Upstream's loop (the bundle) on one case against a fresh fake provider on 127.0.0.1.

    ``timeout_s`` defaults to one model hour at ``time_scale`` plus a minute. With ``out_dir``
    the trace is also written there as ``<case>.json``; ``driver_out`` (a dict) receives the
    driver's own result (statuses, warnings logged, no-op stubs called).
    """
    from ..world.fake_provider import ServerThread, create_app

    sc = case.scenario
    limit = timeout_s if timeout_s is not None else 60.0 + 3600.0 * time_scale
    app = create_app(
        sc, case.seed, time_scale=time_scale, parallel_scene_concurrency=case.concurrency
    )
    with ServerThread(app) as server:
        try:
            out = run_driver(
                bundle,
                server.base_url,
                concurrency=case.concurrency,
                outlines=sc.outlines,
                scene_types=sc.scene_types,
                classroom=classroom,
                time_scale=time_scale,
                random_u=random_u,
                timeout_s=limit,
                foreground=case.foreground,
            )
        except HarnessError as e:
            raise HarnessError(e.names, bundle.auto_stubbed) from None
        rows = _provider_log(server.base_url, classroom)
    if driver_out is not None:
        driver_out.update(out)
    from sim.rules import tts_concurrency

    tts_c = tts_concurrency("pipelined", case.concurrency, None, sc.client.tts_at_concurrency)
    d = trace_dict(case.name, case.concurrency, rows, out, time_scale, tts_c)
    return _to_trace(d, Path(out_dir) if out_dir is not None else None)


# -- the comparison ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConformRow:
    """One case: upstream vs the port, and their differences beyond the tolerance."""

    case: str
    concurrency: int
    upstream: dict[str, Any]
    port: dict[str, Any]
    differences: tuple[str, ...]
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class ConformReport:
    checkout: str
    time_scale: float
    tol_s: float
    stubbed: tuple[str, ...]
    auto_stubbed: tuple[str, ...]
    missing_names: dict[str, list[str]]
    rows: tuple[ConformRow, ...] = field(default_factory=tuple)
    profile: str = ""
    detected: tuple[str, ...] = ()  # the markers, when the profile was detected
    workspace: dict[str, str] = field(default_factory=dict)
    # the two sides of a row: upstream's loop and the port, or (``--against``) two checkouts
    sides: tuple[str, str] = ("upstream", "port")
    title: str = ""  # the first line of the table, when not the checkout and its profile
    # upstream's LLM-route error answers against the fake provider's (conform_routes):
    # differences, or None when not checked (no llmApiError: before #788)
    routes: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.routes

    def to_json(self) -> dict[str, Any]:
        return {
            "checkout": self.checkout,
            "time_scale": self.time_scale,
            "tol_s": self.tol_s,
            "ok": self.ok,
            "stubbed": list(self.stubbed),
            "auto_stubbed": list(self.auto_stubbed),
            "missing_names": self.missing_names,
            "profile": self.profile,
            "detected": list(self.detected),
            "workspace": self.workspace,
            "routes": None if self.routes is None else list(self.routes),
            # what each row's "upstream" and "port" are (--against: checkouts a and b)
            "sides": list(self.sides),
            "rows": [
                {
                    "case": r.case,
                    "concurrency": r.concurrency,
                    "ok": r.ok,
                    "upstream": r.upstream,
                    "port": r.port,
                    "differences": list(r.differences),
                    "note": r.note,
                }
                for r in self.rows
            ],
        }

    def table(self) -> str:
        """The report as text: the checkout and profile, one line per case and side, the
        differences, then what the build replaced (no name of which the run used)."""
        how = f"detected: {'; '.join(self.detected)}" if self.detected else "given"
        head = (
            f"{'case':<10} {'side':<9} {'reqs':>4} {'retry':>5} {'429':>4} {'5xx':>4} "
            f"{'ttfs_s':>8} {'makespan':>8} {'status':<18} {'failed':<10} result"
        )
        title = self.title or f"checkout {self.checkout} · profile {self.profile} ({how})"
        lines = [title, head]
        for r in self.rows:
            a, b = self.sides
            for side, m in ((a, r.upstream), (b, r.port)):
                result = ("ok" if r.ok else f"{len(r.differences)} diff") if side == b else ""
                lines.append(
                    f"{r.case:<10} {side:<9} {m['requests']:>4} {m['retries']:>5} "
                    f"{m['http_429']:>4} {m['http_5xx']:>4} {_fmt(m['ttfs_s']):>8} "
                    f"{_fmt(m['makespan_s']):>8} {m['status']!s:<18} "
                    f"{','.join(map(str, m['failed_orders'])) or '-':<10} {result}"
                )
            lines.extend(f"  {r.case}: {d}" for d in r.differences[:20])
            if len(r.differences) > 20:
                lines.append(f"  {r.case}: ... {len(r.differences) - 20} more")
            if r.note:
                lines.append(f"  {r.case}: note: {r.note}")
        return "\n".join([*lines, *self._build_lines()])

    def _build_lines(self) -> list[str]:
        out = []
        if self.routes is not None:
            from .conform_routes import ROUTE_ERRORS, ROUTE_STATUSES

            probed = ", ".join(map(str, ROUTE_STATUSES))
            out.append(
                f"routes: {ROUTE_ERRORS} answers as the fake provider for provider statuses "
                f"{probed} and none"
                if not self.routes
                else f"routes: {len(self.routes)} difference(s) from {ROUTE_ERRORS}"
            )
            out.extend(f"  routes: {d}" for d in self.routes)
        if self.workspace:
            out.append(f"workspace packages bundled from source: {', '.join(self.workspace)}")
        if self.auto_stubbed:
            out.append(
                f"auto_stubbed (not found, unused by the run): {', '.join(self.auto_stubbed)}"
            )
        missing = "; ".join(f"{m}: {', '.join(n)}" for m, n in self.missing_names.items())
        out.append(f"missing_names (not in their stub, unused by the run): {missing or 'none'}")
        return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def metrics(t: Trace) -> dict[str, Any]:
    """A row side's figures: counts, times, status, failed outlines, request order."""
    reqs = t.requests
    return {
        "requests": len(reqs),
        "retries": sum(1 for r in reqs if r.attempt > 0),
        "http_429": sum(1 for r in reqs if r.status == 429),
        "http_5xx": sum(1 for r in reqs if r.status >= 500),
        "request_order": [f"{r.step}:{r.order}:{r.clip}:{r.attempt}" for r in reqs],
        "ttfs_s": t.summary.ttfs_s,
        "makespan_s": t.summary.makespan_s,
        "status": t.summary.status,
        "failed_orders": list(t.summary.failed_orders),
        "scene_order": list(t.summary.scene_order),
    }


def _near_ties(up: Trace, port: Trace, tol_s: float) -> list[str]:
    """Status differences at an upstream arrival within ``tol_s`` of a slot freeing on its key.

    A wall-clock run can flip such a race through harness overhead (a loaded machine, a small
    time scale); the report flags them so that a rerun, or a larger time scale, can tell.
    """
    theirs = {(r.step, r.order, r.clip, r.attempt): r.status for r in port.requests}
    out = []
    for r in up.requests:
        k = (r.step, r.order, r.clip, r.attempt)
        if k not in theirs or theirs[k] == r.status:
            continue
        same_key = [q for q in up.requests if (q.step == "tts") == (r.step == "tts")]
        ends = [
            q.t_end_s - r.t_arrival_s for q in same_key if q is not r and q.t_end_s > q.t_arrival_s
        ]
        margin = min((abs(d) for d in ends), default=None)
        if margin is not None and margin <= tol_s:
            out.append(
                f"{r.step} {r.order}/{r.clip} attempt {r.attempt} arrived {margin:.3f} model s "
                "from a slot freeing on its key: a near-tie (rerun on an idle machine or with a "
                "larger --time-scale to tell timing from behaviour)"
            )
    return out


def port_side(case: ConformCase) -> Trace:
    """The port's trace of a case, as upstream's loop runs it: a version without the knob
    (v0.2.1) runs serially whatever c the settings hold; the makespan is the last scene added
    (all upstream's side knows), not the moment the loop gave up."""
    from .traces import port_trace

    c = case.concurrency if case.scenario.client.knob_endpoint is not None else 0
    port = port_trace(case.scenario, c, seed=case.seed)
    last = port.scene_ready_s[-1] if port.scene_ready_s else None
    return dataclasses.replace(port, makespan_s=last)


def decidable_port_side(case: ConformCase) -> Trace:
    """:func:`port_side`, after checking that the case can be decided on a real clock: a
    :class:`~runner.experiments.conform_margin.RaceMarginError` (one line) when an admission
    decision of the port's trace is closer than ``RACE_MARGIN_S`` to the event that would
    flip it (docs/conform.md, "Race margin")."""
    from .conform_margin import check_margin

    port = port_side(case)
    sc = case.scenario
    check_margin(case.name, port.requests, {"llm": sc.quota_llm, "tts": sc.quota_tts})
    return port


def _conform_case(
    case: ConformCase,
    bundle: Bundle,
    time_scale: float,
    random_u: float,
    tol_s: float,
    out_dir: str | Path | None,
    port: Trace,
) -> ConformRow:
    from .traces import compare

    info: dict[str, Any] = {}
    up = run_case(
        case, bundle, time_scale=time_scale, random_u=random_u, out_dir=out_dir, driver_out=info
    )
    diffs = compare(up, port, tol_s, WALL_REL_TOL)
    notes = [case.note, *(_near_ties(up, port, tol_s) if diffs else [])]
    if info.get("noop_calls"):
        notes.append(f"upstream called no-op stubs: {', '.join(info['noop_calls'])}")
    upstream = {**metrics(up), "log_warnings": info.get("warnings", 0)}
    return ConformRow(
        case.name,
        case.concurrency,
        upstream,
        metrics(port),
        tuple(diffs),
        "; ".join(n for n in notes if n),
    )


def conform(
    openmaic_path: str | Path,
    cases: Sequence[ConformCase] | None = None,
    *,
    case_names: Sequence[str] | None = None,
    upstream: str | None = None,
    time_scale: float = 0.15,
    tol_s: float = 1.0,
    random_u: float = 0.5,
    cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConformReport:
    """Run every case through upstream's loop (under Node) and the port; compare them.

    The port runs under ``upstream`` (a profile name), else the profile detected from the
    checkout (:func:`~runner.experiments.conform_checkout.detect_profile`); ``cases`` replace
    the fixed cases (``case_names`` picks some of them).
    """
    from .conform_checkout import Era, detect_era

    if detect_era(Path(openmaic_path).expanduser()) is Era.RUN_ENGINE:  # issue 23: today's era
        from .conform_runs import DETECTED, conform_engine

        run = conform_engine(
            openmaic_path,
            case_names=case_names,
            time_scale=time_scale,
            tol_s=tol_s,
            random_u=random_u,
            cache_dir=cache_dir,
            out_dir=out_dir,
            progress=progress,
        )
        rows = [
            ConformRow(r.case, r.concurrency, r.upstream, r.model, r.differences) for r in run.rows
        ]
        b = run.bundle
        return ConformReport(
            str(run.checkout),
            time_scale,
            tol_s,
            b.stubbed,
            b.auto_stubbed,
            b.missing_names,
            tuple(rows),
            profile="runs",
            detected=(DETECTED,),
            sides=("upstream", "model"),
        )
    root = check_checkout(openmaic_path)
    found = detect_profile(root) if upstream is None else Detected(upstream, ())
    chosen = list(cases) if cases is not None else fixed_cases(case_names, found.profile)
    ports = [decidable_port_side(case) for case in chosen]  # before Node: a race is exit 2
    esb = ensure_esbuild(cache_dir)
    rows = []
    from .conform_routes import route_differences

    routes = route_differences(root, esb)
    with tempfile.TemporaryDirectory(prefix="scenebench-conform-") as tmp:
        bundle = build_bundle(root, tmp, esb)
        for case, port in zip(chosen, ports, strict=True):
            if progress is not None:
                progress(case.name)
            rows.append(_conform_case(case, bundle, time_scale, random_u, tol_s, out_dir, port))
    return ConformReport(
        str(root),
        time_scale,
        tol_s,
        bundle.stubbed,
        bundle.auto_stubbed,
        bundle.missing_names,
        tuple(rows),
        profile=found.profile,
        detected=found.markers,
        workspace=bundle.workspace,
        routes=routes,
    )
