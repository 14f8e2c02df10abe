"""``scenebench conform`` on a checkout of the run-engine era (issue 23).

Since RFC #1754 upstream generates a classroom as a durable server-side *generation run*
(``lib/server/generation/run/engine.ts``). For such a checkout conform drives upstream's engine
from its scene phase under Node, and compares what reached the provider with the ``runs``
model (:func:`sim.runs.simulate_runs`, which ``validate --exact --upstream runs`` proves equal to
the real-world port :mod:`runner.world.runs_port`):

* :func:`build_engine_bundle`: esbuild bundles the checkout's engine
  (``conform_js/runs_build.mjs``) with scenebench's in-memory stand-ins for what is
  server-only (the PostgreSQL run store and its leases, the course document, the host hooks,
  the media lane, the narration voices: ``conform_js/runs_stubs``); the engine's own
  scheduling (its retries, deadlines, generate-ahead pool, plan) is bundled as it is;
* :func:`run_engine_case`: ``conform_js/runs_driver.mjs`` executes one claimed run, already
  past its outline and agents, handing the engine step services (``ExecuteRunOptions.services``,
  upstream's injection seam) that call the fake provider's ``/v1`` endpoints with the call's
  identity in ``x-scenebench-call``; the provider's request log is the trace;
* :func:`compare_engine`: the trace against the model's request log for the same cell (one run,
  claimed at once, outline confirmed automatically), scene steps only, each side's times from
  its first scene request: order, statuses, attempts and the outcome exact, times within
  ``tol_s`` plus 1 % of the time.

A name the run touches that scenebench does not stand in for is a harness error (exit 2, one
line), never a difference. Upstream's code is read from the user's checkout only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .conform_checkout import ENGINE, CheckoutError, ConformError, Era, detect_era
from .conform_node import Bundle, HarnessError, ensure_esbuild, node_json

if TYPE_CHECKING:
    from sim.scenario import Scenario

__all__ = [
    "ENGINE_CASES",
    "EngineCase",
    "EngineHarnessError",
    "EngineRow",
    "EngineRun",
    "EngineTrace",
    "build_engine_bundle",
    "check_engine_checkout",
    "compare_engine",
    "conform_engine",
    "decidable_model_trace",
    "engine_cases",
    "load_trace",
    "model_trace",
    "run_engine_case",
    "trace_record",
    "write_trace",
]

STEPS = ("content", "actions", "tts")
WALL_REL_TOL = 0.01  # as the browser-era conform: a time may be off by 1 % of itself
# the case scenarios' client table: the model swaps in the runs profile and keeps this fixed
# jitter draw (the driver pins Math.random to the same U)
CLIENT: dict[str, Any] = {"upstream": "pr696", "foreground_first_scene": False, "jitter_u": 0.5}
# name -> (scenario file in conform_cases, c, seed); run2-c3's seed is conform.CASE2_SEED
# (its race margins: conform_margin)
ENGINE_CASES: dict[str, tuple[str, int, int]] = {
    "run1-c0": ("case1", 0, 0),  # serial scenes, no faults
    "run1-c3": ("case1", 3, 0),  # content generated ahead (lazyBoundedMap), clips at c
    "run2-c3": ("case2", 3, 210),  # LLM key 2 in flight: generate-ahead queues at the key
    "run4-c0": ("case4", 0, 0),  # every clip answers 429: scene 0's narration pauses the run
    "run4-c3": ("case4", 3, 0),  # the same with scene 0's clips at c
}
# Only cases whose faults spare the LLM key: the model's run makes its outline and agents calls
# on that key before the scene phase the driver starts at (they would fail there first).


class EngineHarnessError(HarnessError):
    """The engine's run used a name scenebench does not stand in for: one line naming the names
    and where to add them (runs_stubs/, RUN_STUBS in runs_build.mjs)."""

    def __init__(self, names: Sequence[str], auto: Sequence[str] = ()) -> None:
        super().__init__(names, auto)
        lost = sorted({n.rsplit(":", 1)[0] for n in names} & set(auto))
        fix = "add them to their stand-in in runner/experiments/conform_js/runs_stubs"
        if lost:
            fix = (
                f"{', '.join(lost)} could not be found: make it resolvable in the checkout or "
                "add a stand-in to RUN_STUBS in runner/experiments/conform_js/runs_build.mjs"
            )
        self.args = (
            f"harness: upstream's engine used {len(self.names)} name(s) that scenebench does "
            f"not stand in for: {', '.join(self.names)}; {fix}",
        )


@dataclass(frozen=True)
class EngineCase:
    name: str
    scenario: Scenario
    concurrency: int
    seed: int


def engine_cases(names: Sequence[str] | None = None) -> list[EngineCase]:
    """The fixed run-engine cases (``names`` picks some); a :class:`ConformError` for an
    unknown name."""
    import tomllib
    from importlib import resources

    from sim.scenario import scenario_from_mapping

    chosen = list(names) if names else list(ENGINE_CASES)
    bad = [n for n in chosen if n not in ENGINE_CASES]
    if bad:
        raise ConformError(
            f"--case: {', '.join(bad)} not a run-engine case; one of {', '.join(ENGINE_CASES)}"
        )
    out = []
    for name in chosen:
        stem, c, seed = ENGINE_CASES[name]
        ref = resources.files("runner.experiments").joinpath("conform_cases", f"{stem}.toml")
        data = tomllib.loads(ref.read_text(encoding="utf-8"))
        sc = scenario_from_mapping({**data, "client": dict(CLIENT)})
        out.append(EngineCase(name, sc, c, seed))
    return out


def check_engine_checkout(path: str | Path) -> Path:
    """The checkout's root (resolved) when it is of the run-engine era; a
    :class:`CheckoutError` otherwise."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CheckoutError(f"--openmaic: {str(path)!r} does not exist")
    if detect_era(root) is not Era.RUN_ENGINE:
        raise CheckoutError(f"--openmaic: {str(path)!r} is not a run-engine checkout (no {ENGINE})")
    return root.resolve()


def build_engine_bundle(
    openmaic: str | Path, out_dir: str | Path, esbuild_dir: str | Path | None = None
) -> Bundle:
    """Bundle the checkout's run engine with the stand-ins into ``out_dir/run-engine.mjs``."""
    root = check_engine_checkout(openmaic)
    esb = Path(esbuild_dir) if esbuild_dir is not None else ensure_esbuild()
    outfile = Path(out_dir) / "run-engine.mjs"
    cfg = {"root": str(root), "entry": ENGINE, "outfile": str(outfile), "esbuild": str(esb)}
    res = node_json("runs_build.mjs", cfg, timeout_s=300)
    return Bundle.built(outfile, root, res)


# -- traces: one row per request, scene steps only, times from the first scene request --------
Row = tuple[
    float, float, str, int, int, int, int
]  # t_send_s, t_end_s, step, order, clip, attempt, status


@dataclass(frozen=True)
class EngineTrace:
    """One side of a case: its scene requests and how the run ended (``completed`` or
    ``paused at <step id>``)."""

    rows: tuple[Row, ...]
    outcome: str

    def metrics(self) -> dict[str, Any]:
        """The table's columns (as the browser-era rows): a scene is ready at the end of its
        last request once every one of them answered 200 and the run reached it."""
        ready = _ready_s(self.rows, self.outcome)
        failed = sorted({r[3] for r in self.rows if r[6] != 200 and r[3] not in ready})
        return {
            "requests": len(self.rows),
            "retries": sum(1 for r in self.rows if r[5] > 0),
            "http_429": sum(1 for r in self.rows if r[6] == 429),
            "http_5xx": sum(1 for r in self.rows if r[6] >= 500),
            "ttfs_s": ready.get(0),
            "makespan_s": max(ready.values()) if ready else None,
            "status": self.outcome,
            "failed_orders": failed if self.outcome != "completed" else [],
        }

    def to_json(self) -> dict[str, Any]:
        keys = ("t_send_s", "t_end_s", "step", "order", "clip", "attempt", "status")
        return {
            "outcome": self.outcome,
            "requests": [dict(zip(keys, r, strict=True)) for r in self.rows],
        }


def _ready_s(rows: Sequence[Row], outcome: str) -> dict[int, float]:
    by_scene: dict[int, list[Row]] = {}
    for r in rows:
        by_scene.setdefault(r[3], []).append(r)
    paused = outcome.split(":")[1] if outcome.startswith("paused at scene:") else None
    out = {}
    for k, rs in sorted(by_scene.items()):
        last = {(r[2], r[4]): r for r in sorted(rs, key=lambda r: r[5])}
        if paused is not None and int(paused) == k:
            continue
        if all(r[6] == 200 for r in last.values()) and any(s == "actions" for s, _ in last):
            out[k] = max(r[1] for r in last.values())
    return out


def _sorted_rows(rows: list[Row]) -> tuple[Row, ...]:
    return tuple(sorted(rows, key=lambda r: (round(r[0], 6), STEPS.index(r[2]), r[3], r[4], r[5])))


def trace_from_provider(log_rows: Sequence[Sequence[Any]], out: dict[str, Any]) -> EngineTrace:
    """Upstream's side from the fake provider's log rows (``/api/_scenebench/log``) and the
    driver's result (its ``t0_us`` is the scene phase's start on the provider's clock)."""
    t0 = int(out["t0_us"])
    rows: list[Row] = []
    for row in log_rows:
        step = int(row[1])
        if step > 2:
            continue
        rows.append(
            (
                (int(row[6]) - t0) / 1e6,
                (int(row[8]) - t0) / 1e6,
                STEPS[step],
                int(row[2]),
                int(row[3]),
                int(row[4]),
                int(row[9]),
            )
        )
    paused_at = out.get("step")
    state = str(out.get("state") or out.get("outcome"))
    outcome = "completed" if state == "completed" else f"{state} at {paused_at}"
    return EngineTrace(_sorted_rows(rows), outcome)


def model_trace(case: EngineCase) -> EngineTrace:
    """The ``runs`` model's side: one run, arriving at 0, outline confirmed automatically; its
    scene requests with times from its first one (when the engine's scene phase begins)."""
    from sim.runs import simulate_runs
    from sim.runs_config import RunsConfig

    cfg = RunsConfig(concurrency=case.concurrency, runs=1, arrivals=((0.0, 0),))
    res = simulate_runs(case.scenario, cfg, case.seed, "simpy")
    scene = [row for row in res.log if int(row[2]) <= 2]
    t0 = min(int(r[0]) for r in scene) if scene else 0
    rows: list[Row] = [
        (
            (int(r[0]) - t0) / 1e6,
            (int(r[8]) - t0) / 1e6,
            STEPS[int(r[2])],
            int(r[3]),
            int(r[4]),
            int(r[5]),
            int(r[6]),
        )
        for r in scene
    ]
    rec = res.records[0]
    outcome = "completed" if rec.state == "completed" else f"paused at {rec.paused_at}"
    return EngineTrace(_sorted_rows(rows), outcome)


def decidable_model_trace(case: EngineCase) -> EngineTrace:
    """:func:`model_trace`, after checking that every admission decision of its scene phase
    is at least ``RACE_MARGIN_S`` from the event that would flip it (a
    :class:`~runner.experiments.conform_margin.RaceMarginError`, one line, otherwise)."""
    from .conform_margin import check_margin
    from .traces import Request

    model = model_trace(case)
    reqs = [Request(r[2], r[3], r[4], r[5], r[0], r[1], r[6]) for r in model.rows]
    sc = case.scenario
    check_margin(case.name, reqs, {"llm": sc.quota_llm, "tts": sc.quota_tts})
    return model


def compare_engine(upstream: EngineTrace, model: EngineTrace, tol_s: float = 1.0) -> list[str]:
    """The differences, as the browser-era conform counts them
    (:func:`runner.experiments.traces.compare`): the outcome, and the requests matched by
    identity (step, scene, clip, attempt) — none missing, none extra, each with the same
    status, sent and ended within ``tol_s`` + 1 % of the time. The order follows: two
    requests can only trade places within the tolerance (exact ties on a real clock)."""
    diffs = []
    if upstream.outcome != model.outcome:
        diffs.append(f"outcome: upstream {upstream.outcome}, model {model.outcome}")
    ups = {r[2:6]: r for r in upstream.rows}
    mods = {r[2:6]: r for r in model.rows}
    diffs += [f"request {i}: upstream only (status {ups[i][6]})" for i in ups if i not in mods]
    diffs += [f"request {i}: model only (status {mods[i][6]})" for i in mods if i not in ups]
    for ident, ru in ups.items():
        rm = mods.get(ident)
        if rm is None:
            continue
        if ru[6] != rm[6]:
            diffs.append(f"request {ident}: status {ru[6]} upstream, {rm[6]} model")
        for what, t_up, t_model in (("sent", ru[0], rm[0]), ("ended", ru[1], rm[1])):
            if abs(t_up - t_model) > tol_s + WALL_REL_TOL * abs(t_model):
                diffs.append(f"request {ident}: {what} at {t_up:.3f} s, model {t_model:.3f} s")
    return diffs


# -- one case under Node -----------------------------------------------------------------------
def run_engine_case(
    case: EngineCase,
    bundle: Bundle,
    *,
    time_scale: float = 0.15,
    random_u: float = 0.5,
    timeout_s: float | None = None,
    driver_out: dict[str, Any] | None = None,
    run_input: dict[str, Any] | None = None,
) -> EngineTrace:
    """Upstream's engine (the bundle) on one case against a fresh fake provider on 127.0.0.1
    serving the ``runs`` cell (``runner.world.runs_port.runs_app``, wall clock);
    ``run_input``: fields added to the claimed run's input."""
    from sim.runs_config import RunsConfig

    from ..world.fake_provider import ServerThread
    from ..world.runs_port import port_scenario, runs_app

    cfg = RunsConfig(concurrency=case.concurrency, runs=1, arrivals=((0.0, 0),))
    app = runs_app(case.scenario, cfg, case.seed, virtual=False, time_scale=time_scale)
    provider = app.state.fake.provider
    n = port_scenario(case.scenario, cfg).outlines
    clips = [provider.speeches(0, k) for k in range(n)]
    limit = timeout_s if timeout_s is not None else 60.0 + 3600.0 * time_scale
    with ServerThread(app) as server:
        conf = {
            "bundle": str(bundle.path),
            "baseUrl": server.base_url,
            "classroom": 0,
            "clips": clips,
            "concurrency": case.concurrency,
            "timeScale": time_scale,
            "random": random_u,
            "llmKey": "llm-key",
            "ttsKey": "tts-key",
            "drainS": 60,
            "input": dict(run_input or {}),
        }
        try:
            out = node_json("runs_driver.mjs", conf, limit)
        except HarnessError as e:
            raise EngineHarnessError(e.names, bundle.auto_stubbed) from None
        rows = _provider_log(server.base_url)
    if driver_out is not None:
        driver_out.update(out)
    return trace_from_provider(rows, out)


@dataclass(frozen=True)
class EngineRow:
    """One case: upstream's engine against the model (their table columns) and the
    differences."""

    case: str
    concurrency: int
    upstream: dict[str, Any]
    model: dict[str, Any]
    differences: tuple[str, ...]


@dataclass(frozen=True)
class EngineRun:
    """Every case of one checkout, and what its bundle replaced."""

    checkout: Path
    bundle: Bundle
    rows: tuple[EngineRow, ...]


DETECTED = f"{ENGINE}: the run engine (scene phase; compared with the runs model)"


def conform_engine(
    openmaic_path: str | Path,
    *,
    case_names: Sequence[str] | None = None,
    time_scale: float = 0.15,
    tol_s: float = 1.0,
    random_u: float = 0.5,
    cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EngineRun:
    """Every run-engine case through upstream's engine (under Node) and the ``runs`` model;
    with ``out_dir`` each case's trace is written there as ``<case>.json``
    (:func:`trace_record`). ``runner.experiments.conform.conform`` makes its report."""
    root = check_engine_checkout(openmaic_path)
    cases = engine_cases(case_names)
    models = [decidable_model_trace(case) for case in cases]  # before Node: a race is exit 2
    esb = ensure_esbuild(cache_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scenebench-conform-runs-") as tmp:
        bundle = build_engine_bundle(root, tmp, esb)
        for case, model in zip(cases, models, strict=True):
            if progress is not None:
                progress(case.name)
            up = run_engine_case(case, bundle, time_scale=time_scale, random_u=random_u)
            diffs = tuple(compare_engine(up, model, tol_s))
            rows.append(
                EngineRow(case.name, case.concurrency, up.metrics(), model.metrics(), diffs)
            )
            if out_dir is not None:
                write_trace(Path(out_dir), trace_record(case, up, time_scale, bundle))
    return EngineRun(root, bundle, tuple(rows))


def _provider_log(base_url: str) -> list[list[Any]]:
    import httpx

    try:
        resp = httpx.get(f"{base_url}/api/_scenebench/log", params={"classroom": "0"}, timeout=30)
        rows: list[list[Any]] = resp.json()["log"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise ConformError(f"provider: cannot read the request log ({e})") from None
    return rows


def trace_record(
    case: EngineCase, trace: EngineTrace, time_scale: float, bundle: Bundle
) -> dict[str, Any]:
    """A recorded trace (a measurement: what reached the provider and how the run ended) with
    what produced it: the case, the time scale, the checkout files bundled (paths only)."""
    checkout = [p for p in bundle.inputs if "node_modules" not in p and "conform_js" not in p]
    return {
        "case": case.name,
        "concurrency": case.concurrency,
        "seed": case.seed,
        "recorded_time_scale": time_scale,
        "engine_files": checkout,
        "stand_ins": list(bundle.stubbed),
        **trace.to_json(),
    }


def write_trace(out_dir: Path, record: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record['case']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def load_trace(path: str | Path) -> tuple[EngineCase, EngineTrace]:
    """A recorded trace and its case (by name, from :data:`ENGINE_CASES`)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    (case,) = engine_cases([data["case"]])
    keys = ("t_send_s", "t_end_s", "step", "order", "clip", "attempt", "status")
    rows = tuple(
        (float(r[keys[0]]), float(r[keys[1]]), str(r[keys[2]]), *(int(r[k]) for k in keys[3:]))
        for r in data["requests"]
    )
    return case, EngineTrace(rows, str(data["outcome"]))  # type: ignore[arg-type]
