"""The ``scenebench`` command line.

Every user error (bad scenario, bad flag) prints one line naming the field or
flag and the allowed values, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sim.catalog import preset_names
from sim.config import RunConfig
from sim.errors import UserError
from sim.rules import CLOCKS, ClockKind
from sim.upstream import COMMAND_PROFILE, DEFAULT_PROFILE, RUNS_PROFILE, profile_names

from .argtypes import (
    add_adaptive,
    add_cell,
    add_dimensions,
    add_json,
    add_scenario,
    add_stagger,
    int_in,
    int_list,
    positive_float,
    profile_list,
    quota_list,
)
from .errors import ProviderUnreachable, UsageError

if TYPE_CHECKING:  # the model and pandas load only when a command needs them (fast --help)
    from sim.scenario import Scenario
    from sim.schema import RunResult


def load_scenario(name_or_path: str | Path, *, upstream: str | None = None) -> Scenario:
    """:func:`sim.scenario.load_scenario`, imported when a command first needs it."""
    from sim.scenario import load_scenario as load

    return load(name_or_path, upstream=upstream)


__all__ = ["ProviderUnreachable", "UsageError", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "argument --concurrency: --concurrency must be ..." names the flag twice: once is enough
        m = re.match(r"argument (\S+?)(?:/\S+)?: (.*)$", message, re.S)
        if m and m.group(2).startswith(m.group(1)):
            message = m.group(2)
        raise UsageError(f"{self.prog}: {message}")


def _error_line(e: Exception) -> str:
    """``<program>: error: <message>``, the program named once: a message that starts with
    ``scenebench <command>:`` keeps that as its program."""
    msg = " ".join(str(e).split("\n")).strip()
    m = re.match(r"(scenebench(?: [a-z]+)?): (.*)$", msg, re.S)
    if m:
        return f"{m.group(1)}: error: {m.group(2)}"
    return f"scenebench: error: {msg}"


@contextmanager
def _as_usage(command: str, *kinds: type[Exception]) -> Iterator[None]:
    """Errors of ``kinds`` (a results folder, a flag the library checked) become user errors
    of ``scenebench <command>``."""
    try:
        yield
    except kinds as e:
        raise UsageError(f"scenebench {command}: {e}") from None


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def _json_out(d: Any) -> None:
    from ..store.stamps import dumps

    print(dumps(d))


# -- run ----------------------------------------------------------------------------------
def _fmt_s(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f} s"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def _print_run(r: RunResult, prov: dict[str, Any], failures: Sequence[Any] = ()) -> None:
    from ..store.stamps import provenance_line

    print(provenance_line(prov))
    print(
        f"scenario {r.scenario}  upstream {r.upstream}  mode {r.mode}  concurrency "
        f"{r.concurrency}  tts_concurrency {r.tts_concurrency}  clock {r.world}  seed {r.seed}"
    )
    print(
        f"status {r.status}: {r.scenes_ok} scenes added, {r.scenes_failed} failed "
        f"{list(r.failed_orders) if r.failed_orders else ''}".rstrip()
    )
    for f in failures:
        print(f"  scene {f.order:>3} failed: {f.line()} (status {f.status})")
    print(
        f"makespan {_fmt_s(r.makespan_s)}  time to first scene {_fmt_s(r.ttfs_s)}  (model seconds)"
    )
    print(
        f"requests {r.requests}  429s {r.http_429}  5xx {r.http_5xx}  retries {r.retries}  "
        f"timeouts {r.timeouts}"
    )
    print(
        f"learner: startup {_fmt_s(r.startup_s)}  stall {_fmt_s(r.stall_s)} in {r.stalls} "
        f"stall(s)  stall ratio {_fmt_pct(r.stall_ratio)}  last scene {_fmt_s(r.last_scene_s)}"
    )
    if r.scene_order:
        print("timeline (scene order: ready at)")
        for o, t in zip(r.scene_order, r.scene_ready_s, strict=True):
            print(f"  scene {o:>3}: {t:9.2f} s")


def _check_base_url(url: str) -> str:
    """A usable ``--base-url`` (http or https, with a host), else a one-line user error."""
    import httpx

    try:
        u = httpx.URL(url)
        ok = u.scheme in ("http", "https") and bool(u.host)
    except (httpx.InvalidURL, TypeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(
            f"scenebench run: --base-url must be an http:// or https:// URL with a host "
            f"(e.g. http://127.0.0.1:8000), got {url!r}"
        )
    return url.rstrip("/")


def _probe_provider(url: str, need_concurrency: bool, endpoint: str | None) -> None:
    """Reach the provider once before the run: an unreachable provider is one line and exit 1,
    not ten silently failed scenes. Without ``--concurrency`` the run needs the knob from
    ``endpoint`` (where the profile's client reads it; ``None``: the version has no knob)."""
    import httpx

    from ..world.failures import describe_transport_error

    health = f"{url}{endpoint or '/api/health'}"
    need_concurrency = need_concurrency and endpoint is not None
    try:
        resp = httpx.get(health, timeout=10.0)
    except httpx.TransportError as e:
        raise ProviderUnreachable(
            f"scenebench run: cannot reach the provider at {url}: {describe_transport_error(e)}"
        ) from None
    if not need_concurrency:
        return
    try:
        body = resp.json() if resp.status_code == 200 else None
    except ValueError:  # not JSON: the knob is unknown
        body = None
    if not isinstance(body, dict):
        raise ProviderUnreachable(
            f"scenebench run: {health} answered HTTP {resp.status_code} without a JSON "
            "body, so PARALLEL_SCENE_CONCURRENCY is unknown; give --concurrency"
        )


def _wall_time_scale(a: argparse.Namespace, sc: Scenario, cfg: RunConfig) -> float | None:
    """``--time-scale``, or on the wall clock with a provider of our own the scale picked
    from this machine's floor (printed)."""
    if a.clock != ClockKind.WALL or a.time_scale is not None or a.base_url is not None:
        return a.time_scale  # type: ignore[no-any-return]
    from ..experiments.floor import choose_time_scale

    choice = choose_time_scale(sc, cfg, seed=a.seed, run_id=a.run_id)
    print(choice.line(), file=sys.stderr if a.json else sys.stdout, flush=True)
    return choice.time_scale


def _today_unless_asked(a: argparse.Namespace, *browser_flags: object) -> None:
    """``sim`` and ``run`` follow today's upstream (``COMMAND_PROFILE``: generation runs)
    unless ``--upstream`` names a profile or a browser-loop flag (``--mode`` and the like)
    asks for the browser loop; then the mode defaults to pipelined as before."""
    if a.upstream is None and a.mode is None and not any(browser_flags):
        a.upstream = COMMAND_PROFILE
    if a.mode is None:
        a.mode = "pipelined"


def _cmd_run(a: argparse.Namespace) -> int:
    from ..store.stamps import provenance
    from ..world.failures import scene_failures
    from ..world.pipeline import ScenePipeline
    from ..world.run import run

    _today_unless_asked(a, a.adaptive != "off", a.base_url)
    if a.upstream == RUNS_PROFILE:  # one server of generation runs, real world (issue 22)
        from .runs_real import run_runs

        return run_runs(a)
    sc = load_scenario(a.scenario, upstream=a.upstream)
    cfg = RunConfig.of(
        a.mode, a.concurrency, tts_concurrency=a.tts_concurrency, adaptive=a.adaptive
    )
    scale = _wall_time_scale(a, sc, cfg)
    base_url = None if a.base_url is None else _check_base_url(a.base_url)
    if base_url is not None and a.clock != ClockKind.VIRTUAL:
        _probe_provider(base_url, a.concurrency is None, sc.client.knob_endpoint)
    pipes: list[ScenePipeline] = []

    async def keep(pipe: ScenePipeline) -> None:
        pipes.append(pipe)

    [res] = run(
        sc, cfg, clock=a.clock, seed=a.seed, run_id=a.run_id, time_scale=scale,
        base_url=base_url, hook=keep,
    )  # fmt: skip
    failures = scene_failures(res.failed_orders, pipes[0].attempt_failures if pipes else [])
    prov = provenance(sc)
    if a.json:
        d = json.loads(res.to_json())
        d["scene_failures"] = [f.to_dict() for f in failures]
        d["provenance"] = prov
        _json_out(d)
    else:
        _print_run(res, prov, failures)
    if res.scenes_ok == 0 and failures and all(f.status == -1 for f in failures):
        raise ProviderUnreachable(
            f"scenebench run: the provider stopped answering ({failures[0].line()})"
        )
    return 0


# -- sim, serve, bench --------------------------------------------------------------------
def _cmd_sim(a: argparse.Namespace) -> int:
    from ..experiments.replications import sim_lines, simulate_summary

    _today_unless_asked(a, a.client == "server", a.key_gate, a.adaptive != "off", a.tenants != 1)
    if a.upstream == RUNS_PROFILE:  # generation runs on the server (issue 22)
        from .runs_sim import sim_runs

        return sim_runs(a)
    if a.client == "server" or a.key_gate or a.key_inflight:  # server jobs, key-wide gate
        from .server_jobs import sim_server

        return sim_server(a)
    sc = load_scenario(a.scenario, upstream=a.upstream)
    cfg = RunConfig.of(
        a.mode, a.concurrency, tts_concurrency=a.tts_concurrency, tenants=a.tenants,
        adaptive=a.adaptive, stagger_s=a.stagger_s, stagger_dist=a.stagger_dist,
    )  # fmt: skip
    s = simulate_summary(sc, cfg, reps=a.reps, seed=a.seed, engine=a.engine)
    if a.json:
        _json_out(s)
    else:
        _print_lines(sim_lines(s, a.reps))
    return 0


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _cmd_serve(a: argparse.Namespace) -> int:
    from ..world.fake_provider import ServerThread, create_app, env_parallel_scene_concurrency

    if a.host not in _LOOPBACK and not a.allow_remote:
        raise UsageError(
            f"scenebench serve: --host {a.host} binds beyond loopback; add "
            "--allow-remote to do that on purpose (allowed without it: "
            "127.0.0.1, localhost, ::1)"
        )
    if a.allow_remote and a.host not in _LOOPBACK:
        print(
            f"WARNING: the fake provider will accept connections on {a.host}, beyond loopback",
            file=sys.stderr,
        )
    sc = load_scenario(a.scenario, upstream=a.upstream)
    if a.preset:  # issue 21: provider presets with their error shapes (LLM and TTS keys)
        from sim.presets import apply_preset

        for name in a.preset:
            sc = apply_preset(sc, name, shape=True)
    pscv = a.parallel_scene_concurrency
    if pscv is None:
        pscv = env_parallel_scene_concurrency()
    app = create_app(
        sc, a.seed, time_scale=a.time_scale or sc.time_scale, parallel_scene_concurrency=pscv
    )
    srv = ServerThread(app, host=a.host, port=a.port).start()
    print(
        f"fake provider for scenario {sc.name!r} listening on {srv.base_url} "
        f"(time scale {app.state.fake.time_scale}, seed {a.seed}); Ctrl-C stops it",
        flush=True,
    )
    print(
        f"provider APIs: OPENAI_BASE_URL={srv.base_url}/v1 (chat/completions, audio/speech), "
        f"ANTHROPIC_BASE_URL={srv.base_url}/v1 (messages), MiniMax {srv.base_url}/v1/t2a_v2 "
        "(docs/provider-api.md)",
        flush=True,
    )
    try:
        while srv.thread.is_alive():
            srv.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from ..experiments.bench import run_bench

    if a.load_only:
        from ..experiments.bench import run_load_bench

        report = run_load_bench(quick=a.quick, soak_requests=a.soak_requests)
    else:
        report = run_bench(quick=a.quick, load=not a.no_load, soak_requests=a.soak_requests)
    if a.json:
        _json_out(report)
    else:
        _print_lines(report["lines"])
    return 0


# -- sweep, report, recommend -------------------------------------------------------------
def _sweep_spec(a: argparse.Namespace, backends: tuple[str, ...]) -> Any:
    """The grid the flags ask for (with ``--resume``: a placeholder, the folder's own spec
    is used)."""
    from ..experiments.sweep import default_spec

    if a.resume is not None:
        return default_spec(quick=True, scenarios=None, backends=backends)
    from .runs_cli import is_runs_sweep, runs_spec_of

    browser_flags = (a.adaptive, a.tenants, a.real_reps, a.stagger_s, a.backend == "real")
    if a.upstream is None and not any(browser_flags):
        a.upstream = [COMMAND_PROFILE]  # today's upstream: the two-knob runs grid
    if is_runs_sweep(a):  # server-side generation runs: the two-knob grid
        return runs_spec_of(a)
    return default_spec(
        quick=a.quick, scenarios=a.scenario, upstreams=a.upstream, backends=backends,
        seed=a.seed, sim_reps=a.reps, real_reps=a.real_reps, real_clock=a.real_clock,
        real_time_scale=a.time_scale, quotas=a.quotas, concurrencies=a.concurrency,
        adaptives=a.adaptive or ("off",), tenants=a.tenants or (1,), stagger_s=a.stagger_s,
        stagger_dist=a.stagger_dist,
    )  # fmt: skip


def _cmd_sweep(a: argparse.Namespace) -> int:
    backends = ("sim", "real") if a.backend == "both" else (a.backend,)
    started: list[Path] = []

    def on_start(folder: Path, n_cells: int, n_done: int) -> None:
        started.append(folder)
        resumed = f", {n_done} already done" if n_done else ""
        print(f"results: {folder} ({n_cells} cells{resumed})", flush=True)

    where: dict[str, Any] = (
        {"resume": Path(a.resume)}
        if a.resume is not None
        else {
            "root": Path(a.results_root),
            "out": Path(a.out) if a.out else None,
            "allow_source_tree": a.allow_source_tree,
        }
    )
    try:  # Ctrl-C anywhere in here, the heavy import included: one line, exit 130
        from ..experiments.sweep import ResultsError, SweepOutcome, run_sweep

        with _as_usage("sweep", ResultsError):
            d = run_sweep(
                _sweep_spec(a, backends), workers=a.workers, dask_scheduler=a.dask_scheduler,
                progress=not a.no_progress, on_start=on_start, **where,
            )  # fmt: skip
            _render_if_any(d)
    except KeyboardInterrupt:
        _quiet_teardown()
        print(f"scenebench sweep: {_interrupted_line(started)}", file=sys.stderr, flush=True)
        return 130
    return _print_sweep_outcome(SweepOutcome.read(d))


def _interrupted_line(started: list[Path]) -> str:
    """What Ctrl-C kept; the sweep module is loaded only once a folder was started."""
    if not started:
        return "interrupted before any cell ran; nothing was written"
    from ..experiments.sweep import interrupted_message

    return interrupted_message(started[0])


def _render_if_any(d: Path) -> None:
    """The sweep's tables, figures, REPORT.md and recommendation, once some cell finished."""
    if (d / "runs.parquet").exists():
        from ..report.sections import render_results

        render_results(d)


def _print_sweep_outcome(o: Any) -> int:
    for cid, reason in sorted(o.failed.items()):
        print(f"scenebench sweep: cell {cid} failed: {reason}", file=sys.stderr)
    if o.recommended is None:
        print(f"every cell failed; after fixing the cause: scenebench sweep --resume {o.folder}")
        return 1
    print(f"report:  {o.folder / 'REPORT.md'}")
    from .runs_cli import print_runs_recommendation, runs_outcome

    runs_rec = runs_outcome(o.folder)
    if runs_rec is not None:
        print_runs_recommendation(runs_rec)
    else:
        print(f"recommended default PARALLEL_SCENE_CONCURRENCY = {o.recommended}")
    if o.failed:
        print(
            f"{len(o.failed)} cell(s) failed (listed in REPORT.md); finish them with "
            f"scenebench sweep --resume {o.folder}"
        )
        return 1
    return 0


def _quiet_teardown() -> None:
    """After Ctrl-C the abandoned cell's event loop is garbage: let it go without the
    asyncio teardown noise ("Task was destroyed but it is pending!", "Event loop is closed",
    "coroutine ... was never awaited"), which would bury the one line that matters."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = lambda _u: None
    warnings.simplefilter("ignore")


def _cmd_report(a: argparse.Namespace) -> int:
    from ..experiments.sweep import ResultsError
    from ..report.sections import render_results

    with _as_usage("report", ResultsError):
        if a.findings is not None:
            from ..report.findings import write_findings

            history = Path(a.history) if a.history is not None else None
            write_findings(Path(a.results), Path(a.findings), history)
            print(f"wrote {a.findings}")
            return 0
        render_results(Path(a.results))
    print(f"re-rendered {Path(a.results) / 'REPORT.md'}")
    return 0


def _cmd_recommend(a: argparse.Namespace) -> int:
    from ..experiments.sweep import ResultsError
    from ..report.sections import recommendation_of

    with _as_usage("recommend", ResultsError):
        rec = recommendation_of(Path(a.results))
    if rec.get("kind") == "runs":  # a runs sweep: the two knobs
        from .runs_cli import print_runs_recommendation

        if a.json:
            _json_out(rec)
        else:
            print_runs_recommendation(rec)
        return 0
    from ..report.server_capacity import (
        server_lines,
    )  # the server path's default, stated apart (capacity)

    rec["server_path"] = server_lines(Path(a.results))
    if a.json:
        _json_out(rec)
        return 0
    from ..store.stamps import provenance_line

    if "provenance" in rec:
        print(provenance_line(rec["provenance"]))
    print(f"recommended default PARALLEL_SCENE_CONCURRENCY = {rec['recommended']}")
    _print_qoe_rec(rec.get("qoe", {}))
    r = rec["rule"]
    print(
        f"rule: smallest c within {100 * r['within_best']:g}% of the best admissible speedup; "
        f"admissible = P(any failed scene) <= serial + {r['failure_budget_pp']:g} pp for every "
        f"key allowing >= {r['min_quota_for_default']} in flight"
    )
    for name, v in rec["scenarios"].items():
        _print_scenario_rec(name, v)
    _print_presets(rec)
    _print_lines(rec["server_path"])  # none unless `scenebench capacity` wrote to the folder
    return 0


def _print_scenario_rec(name: str, v: dict[str, Any]) -> None:
    """A scenario's c with its speedup, and the upstream claim checked per mode."""
    lo, hi = v["speedup_unlimited_ci"]
    print(
        f"  {name}: c = {v['recommended']}, speedup {v['speedup_unlimited']:.2f}x "
        f"(95% CI {lo:.2f}-{hi:.2f}) with an unlimited key"
    )
    for m, cl in v["claim_c3"].items():
        sp = f"{cl['speedup']:.2f}x [{cl['lo']:.2f}, {cl['hi']:.2f}]"
        if not cl.get("counts", True):  # the shared rule: never a plain number
            sp = f"({sp} over the few runs that completed)"
        print(
            f"    upstream claim 2-3x at c = 3 ({m}): {sp} -> {cl['verdict']}; bound "
            f"(C+A+kT)/(A+kT) = {v['bound']['limit_serial_tts']:.2f}x"
        )


def _print_qoe_rec(q: dict[str, Any]) -> None:
    """The QoE rule with its tolerances and, per scenario, policy and quota, the c to set."""
    if not q.get("scenarios"):
        return
    print(f"QoE rule: {q['rule']['text']}")
    for name, per_pol in q["scenarios"].items():
        for pol, d in per_pol.items():
            picks = ", ".join(
                f"{'unlimited' if int(k) == 0 else k}: c = {e['concurrency']}"
                for k, e in d["by_quota"].items()
            )
            print(f"  {name}, adaptive {pol}: default c = {d['default']}; per key quota {picks}")


def _print_presets(rec: dict[str, Any]) -> None:
    """A line per provider preset (issue 12) and the shared-capacity verdicts."""
    for scenario, by in rec.get("presets", {}).items():
        print(f"  provider presets, scenario {scenario}:")
        for name, v in by.items():
            if v["serial_only"]:
                print(f"    on {v['label']} ({name}): keep c = 1 (serial)")
                continue
            print(
                f"    on {v['label']} ({name}): set c = {v['concurrency']}, expect "
                f"{v['speedup']:.2f}x [{v['lo']:.2f}, {v['hi']:.2f}], P(any failed scene) "
                f"{100 * v['p_any_failed']:.1f}% (serial {100 * v['p_any_failed_serial']:.1f}%)"
            )
    for name, v in rec.get("shared_capacity", {}).items():
        what = "no speedup over serial" if v["no_speedup"] else f"{v['speedup']:.2f}x"
        print(
            f"  {name} (shared capacity): pipelined c = {v['concurrency']}: {what}; "
            f"bound {v['bound']:.2f}x"
        )


# -- validate, gate, calibrate, conform ---------------------------------------------------
def _cmd_validate(a: argparse.Namespace) -> int:
    from sim.scenario import builtin_names

    names = a.scenario or builtin_names()
    if (
        a.client == "server"
    ):  # the server path's jobs and key-wide gate (runner/experiments/server_capacity.py)
        from .server_jobs import validate_server

        return validate_server(a, names)
    if a.exact:
        return _validate_exact(a, names)
    return _validate_wall(a, names)


def _validate_exact(a: argparse.Namespace, names: Sequence[str]) -> int:
    from sim.upstream import profile_names

    from ..experiments import validate as v
    from ..store.stamps import provenance, provenance_line

    if a.upstream and RUNS_PROFILE in a.upstream:  # generation runs' cells (issue 22)
        from .runs_real import validate_runs

        return validate_runs(a)
    profiles = a.upstream or profile_names()
    scenarios = [
        load_scenario(n, upstream=p).replace(name=f"{n}@{p}") for n in names for p in profiles
    ]
    bar = None
    if not a.json and not a.no_progress and sys.stderr.isatty():  # a bar only on a terminal
        from tqdm import tqdm

        bar = tqdm(desc="validate --exact", unit="cell")

    def progress(i: int, n: int) -> None:
        if bar is not None:
            bar.total = n
            bar.update(1)

    rep = v.validate_exact(
        scenarios, runs=a.runs or (1 if a.quick else 2), seed=a.seed, progress=progress,
        adaptives=a.adaptive or ("off",), tenants=a.tenants or (1,), stagger_s=a.stagger_s,
        stagger_dist=a.stagger_dist,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    if a.json:
        _json_out(rep.to_json() | {"provenance": provenance(scenarios)})
    else:
        _print_lines([provenance_line(provenance(scenarios)), *rep.lines(names, profiles)])
    return 0 if rep.ok else 1


def _validate_wall(a: argparse.Namespace, names: Sequence[str]) -> int:
    from ..experiments import validate as v
    from ..experiments.sweep import ResultsError

    if a.upstream and RUNS_PROFILE in a.upstream:  # generation runs on the wall clock
        from .runs_wall import validate_runs_wall_cmd

        return validate_runs_wall_cmd(a, None if a.scenario is None else list(names))

    cells = v.wall_cells(a.quick, None if a.scenario is None else names)
    if not cells:
        raise UsageError(
            f"scenebench validate: no wall-clock cell for scenario(s) "
            f"{', '.join(names)}; cells exist for: "
            f"{', '.join(sorted({c.scenario for c in v.FULL_CELLS}))}"
        )
    out = Path(a.out) if a.out else None
    with _as_usage("validate", ResultsError):
        v.check_wall_folder(out, Path(a.results_root))
    report = v.validate_wall(
        cells, reps=a.reps or (16 if a.quick else 40), seed=a.seed, model_reps=2000,
        log=None if a.json else print,
    )  # fmt: skip
    report["provenance"] = v.wall_provenance(cells)
    with _as_usage("validate", ResultsError):
        d = v.write_wall_results(report, out, Path(a.results_root))
    if a.json:
        _json_out(report)
    else:
        print(f"results: {d}")
        _print_lines(v.wall_verdict_lines(report))
    return {v.PASS: 0, v.FAIL: 1}.get(report["verdict"], 3)


def _cmd_gate(a: argparse.Namespace) -> int:
    from ..experiments import gate as g

    path = Path(a.baseline)
    baseline = None
    if not a.update:
        with _as_usage("gate", UsageError):
            baseline = g.load_baseline(path)
    now = g.measure(wall=not a.no_wall)
    if baseline is None:  # --update
        try:
            g.save_baseline(now, path)
        except g.UndefinedMetrics as e:  # the measurement failed: not a user error
            print(f"scenebench gate: error: {e}", file=sys.stderr)
            return 1
        print(f"baseline written: {path} ({len(now['metrics'])} metrics)")
        return 0
    metrics = g.compare(baseline, now)
    if a.junit:
        g.write_junit(metrics, Path(a.junit))
    if a.json:
        _json_out(g.report_json(metrics, now))
    else:
        _print_lines(g.report_lines(metrics, now))
    return 0 if all(m.ok for m in metrics) else 1


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from ..experiments.calibration import calibrate

    with _as_usage("calibrate", UsageError):
        cal = calibrate(a.trace, Path(a.out), base=a.base, name=a.name)
    _print_lines(cal.lines())
    print(f"scenario written: {a.out} (base {a.base}; best fit by AIC per step)")
    return 0


def _cmd_conform(a: argparse.Namespace) -> int:
    from ..experiments.conform import conform

    def progress(name: str) -> None:
        print(f"conform: {name} ...", file=sys.stderr, flush=True)

    try:
        if a.against is not None:
            from ..experiments.conform_against import conform_against

            rep = conform_against(
                a.openmaic,
                a.against,
                a.case,
                time_scale=a.time_scale,
                progress=None if a.json else progress,
            )
        else:
            rep = conform(
                a.openmaic,
                case_names=a.case,
                upstream=a.upstream,
                time_scale=a.time_scale,
                out_dir=a.traces,
                progress=None if a.json else progress,
            )
    except UserError as e:
        print(f"scenebench: error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(rep.table())
        n_bad = sum(1 for r in rep.rows if not r.ok)
        print(
            f"conform: {len(rep.rows) - n_bad} of {len(rep.rows)} cases equal within "
            f"{rep.tol_s:g} model s (time scale {rep.time_scale:g})"
        )
    return 0 if rep.ok else 1


# -- the parser: one function per subcommand ---------------------------------------------
def _add_run(sub: Any) -> None:
    r = sub.add_parser("run", help="run one classroom through the real pipeline")
    add_scenario(r)
    add_cell(r, concurrency_required=False)
    add_adaptive(r)
    r.add_argument("--clock", choices=CLOCKS, default=ClockKind.WALL.value)
    r.add_argument("--time-scale", type=positive_float("--time-scale"), default=None)
    r.add_argument("--run-id", type=int_in("--run-id", 0), default=0)
    r.add_argument("--base-url", default=None, help="an already running provider (wall clock)")
    add_json(r)
    r.set_defaults(fn=_cmd_run)
    from .runs_real import add_run_runs_args  # run --upstream runs (issue 22)

    add_run_runs_args(r)


def _add_sim(sub: Any) -> None:
    from .server_jobs import add_server_args  # the server path

    s = sub.add_parser("sim", help="simulate replications with the model")
    add_scenario(s)
    add_cell(s, concurrency_required=True)
    add_adaptive(s)
    add_stagger(s)
    s.add_argument("--reps", type=int_in("--reps", 1), default=1000)
    s.add_argument("--tenants", type=int_in("--tenants", 1, 1000), default=1)
    s.add_argument(
        "--engine", choices=("auto", "simpy", "fast", "fast_quota", "compiled"), default="auto"
    )
    add_json(s)
    s.set_defaults(fn=_cmd_sim)
    add_server_args(s)
    from .runs_sim import add_runs_args

    add_runs_args(s)


def _add_serve(sub: Any) -> None:
    v = sub.add_parser("serve", help="serve the fake provider (uvicorn)")
    add_scenario(v)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument(
        "--allow-remote", action="store_true", help="required to bind anything but loopback"
    )
    v.add_argument("--port", type=int_in("--port", 0, 65535), default=0, help="0 picks a free port")
    v.add_argument("--time-scale", type=positive_float("--time-scale"), default=None)
    v.add_argument("--seed", type=int_in("--seed", 0), default=0)
    v.add_argument(
        "--parallel-scene-concurrency",
        default=None,
        help="what /api/health reports (default: $PARALLEL_SCENE_CONCURRENCY, "
        "else the scenario's run.parallel_scene_concurrency)",
    )
    v.add_argument(
        "--preset",
        action="append",
        choices=preset_names(),
        default=None,
        help="repeatable: a provider preset for the LLM key or (a TTS preset) the TTS key, "
        "with its error shape on the /v1 endpoints (docs/provider-api.md)",
    )
    v.set_defaults(fn=_cmd_serve)


def _add_sweep(sub: Any) -> None:
    w = sub.add_parser("sweep", help="the grid: modes x concurrency x quotas x scenarios")
    w.add_argument(
        "--upstream",
        type=profile_list,
        default=None,
        help=f"profiles, comma list or 'all' (default: {DEFAULT_PROFILE}); with more than "
        "one, each scenario runs under each and is named <scenario>@<profile>",
    )
    w.add_argument("--backend", choices=("sim", "real", "both"), default="both")
    w.add_argument("--quick", action="store_true", help="small grid, under 2 minutes")
    w.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="repeatable; default: default, content-heavy, tts-heavy (quick: default)",
    )
    _add_sweep_grid(w)
    from .runs_cli import add_runs_flags

    add_runs_flags(w)
    add_dimensions(w)
    w.add_argument("--real-clock", choices=CLOCKS, default=ClockKind.VIRTUAL.value)
    w.add_argument(
        "--time-scale",
        type=positive_float("--time-scale"),
        default=None,
        help="for --real-clock wall",
    )
    w.add_argument("--seed", type=int_in("--seed", 0), default=0)
    _add_sweep_execution(w)
    w.set_defaults(fn=_cmd_sweep)


def _add_sweep_grid(w: argparse.ArgumentParser) -> None:
    """``sweep``'s quotas, concurrencies and runs per cell."""
    w.add_argument(
        "--quotas",
        type=quota_list,
        default=None,
        help="in-flight limits and provider presets, comma-separated; 0 = unlimited "
        "(default 1,2,3,5,10,0); presets: " + ", ".join(preset_names()),
    )
    w.add_argument(
        "--concurrency",
        type=int_list("--concurrency", 1, 10),
        default=None,
        help="comma-separated (default 1..10)",
    )
    w.add_argument(
        "--reps",
        type=int_in("--reps", 2),
        default=None,
        help="model runs per cell (default 2000; quick 1000)",
    )
    w.add_argument(
        "--real-reps",
        type=int_in("--real-reps", 1),
        default=None,
        help="real runs per cell (default 40; quick 10)",
    )


def _add_sweep_execution(w: argparse.ArgumentParser) -> None:
    """``sweep``'s workers, where the results go, and resuming."""
    w.add_argument(
        "--workers",
        type=int_in("--workers", 1, 256),
        default=None,
        help="local processes (default: one per core)",
    )
    w.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the cells on a Dask distributed cluster",
    )
    w.add_argument("--results-root", default="results")
    w.add_argument("--out", default=None, help="the results folder (default: a new one)")
    w.add_argument("--resume", default=None, metavar="DIR", help="finish an interrupted sweep")
    w.add_argument("--no-progress", action="store_true")
    w.add_argument(
        "--allow-source-tree",
        action="store_true",
        help="allow --out/--results-root inside the scenebench checkout's own folders",
    )


def _add_validate(sub: Any) -> None:
    va = sub.add_parser("validate", help="model vs real pipeline: exact (virtual) or wall clock")
    va.add_argument(
        "--exact", action="store_true", help="virtual clock, every cell of the grid, run for run"
    )
    va.add_argument("--quick", action="store_true")
    va.add_argument("--scenario", action="append", default=None)
    va.add_argument(
        "--upstream",
        type=profile_list,
        default=None,
        help="with --exact: profiles to check, comma list or 'all' (default: all); 'runs' "
        "alone: the generation-runs cells (exact, or on the wall clock without --exact)",
    )
    va.add_argument(
        "--runs",
        type=int_in("--runs", 1),
        default=None,
        help="--exact: runs per cell (default 2; quick 1)",
    )
    va.add_argument(
        "--reps",
        type=int_in("--reps", 2),
        default=None,
        help="wall: real runs per cell (default 40; quick 16; --upstream runs: replications, "
        "default 10, quick 5)",
    )
    va.add_argument("--seed", type=int_in("--seed", 0), default=0)
    add_dimensions(va)
    from .runs_sim import add_gate_order  # --upstream runs --adaptive gate

    add_gate_order(va)
    va.add_argument("--results-root", default="results")
    va.add_argument("--out", default=None)
    add_json(va)
    va.add_argument("--no-progress", action="store_true")
    va.add_argument("--client", choices=("browser", "server"), default="browser")
    va.set_defaults(fn=_cmd_validate)


def _add_results_commands(sub: Any) -> None:
    """``report`` and ``recommend``: read a results folder."""
    rp = sub.add_parser("report", help="re-render tables, figures and REPORT.md of a folder")
    rp.add_argument("results")
    rp.add_argument(
        "--findings",
        default=None,
        metavar="FILE",
        help="write the findings page (docs/findings.md) from the folder instead",
    )
    rp.add_argument(
        "--history",
        default=None,
        metavar="DIR",
        help="with --findings on a runs sweep: the browser-era folder, shown as history",
    )
    rp.set_defaults(fn=_cmd_report)
    rc = sub.add_parser("recommend", help="the default PARALLEL_SCENE_CONCURRENCY and why")
    rc.add_argument("--results", required=True)
    add_json(rc)
    rc.set_defaults(fn=_cmd_recommend)


def _add_gate(sub: Any) -> None:
    ga = sub.add_parser("gate", help="regression gate against a committed baseline")
    ga.add_argument("--baseline", default="results/baseline.json")
    ga.add_argument("--update", action="store_true", help="rewrite the baseline deliberately")
    add_json(ga)
    ga.add_argument("--junit", default=None, metavar="FILE")
    ga.add_argument("--no-wall", action="store_true", help="skip the wall-clock check")
    ga.set_defaults(fn=_cmd_gate)


def _add_calibrate(sub: Any) -> None:
    ca = sub.add_parser("calibrate", help="fit latency distributions from a trace")
    ca.add_argument(
        "trace",
        help="CSV or JSONL with columns step, seconds (and optionally input_tokens, "
        "output_tokens: then tokens per call and output speed are fitted too)",
    )
    ca.add_argument("--out", required=True, help="scenario TOML to write")
    ca.add_argument("--base", default="default", help="scenario whose other fields are kept")
    ca.add_argument("--name", default=None)
    ca.set_defaults(fn=_cmd_calibrate)


def _add_bench(sub: Any) -> None:
    b = sub.add_parser("bench", help="speed of the model and the harness, as ratios")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--no-load", action="store_true", help="skip the server load and soak")
    b.add_argument(
        "--soak-requests",
        type=int_in("--soak-requests", 800),
        default=None,
        help="requests to the fake provider in the soak (default 80,000; quick 8,000); "
        "200000 or more checks that its memory stays flat",
    )
    b.add_argument("--load-only", action="store_true", help="only the server load and soak")
    add_json(b)
    b.set_defaults(fn=_cmd_bench)


def _cmd_clients(a: argparse.Namespace) -> int:
    """Issue 21: real clients against the provider endpoints (the Vercel AI SDK under Node,
    installed into the cache folder as conform's esbuild is)."""
    from ..experiments.ai_sdk import ai_sdk_timelines
    from ..experiments.conform import ConformError

    try:
        rows = ai_sdk_timelines(a.cache_dir)
    except ConformError as e:
        raise UsageError(f"clients: {e}") from None
    if a.json:
        print(json.dumps(rows, indent=2))
    bad = 0
    for r in rows:
        header = (
            "none" if r["retry_after_s"] is None else f"retry-after-ms {r['retry_after_s']:g} s"
        )
        ok = all(g >= w for g, w in zip(r["gaps_s"], r["documented_s"], strict=False))
        ok = ok and len(r["gaps_s"]) == len(r["documented_s"])
        bad += not ok
        if not a.json:
            gaps = ", ".join(f"{g:.3f}" for g in r["gaps_s"])
            want = ", ".join(f"{w:g}" for w in r["documented_s"])
            print(
                f"AI SDK, 429 with {header}: attempts {r['statuses']}, gaps {gaps} s "
                f"(documented {want} s) {'ok' if ok else 'DIFFERENT'}"
            )
    return 1 if bad else 0


def _add_clients(sub: Any) -> None:
    cl = sub.add_parser(
        "clients", help="the Vercel AI SDK (Node) against the provider endpoints: retry timeline"
    )
    cl.add_argument("--cache-dir", default=None, help="the Node cache folder (as conform's)")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(fn=_cmd_clients)


def _add_conform(sub: Any) -> None:
    co = sub.add_parser("conform", help="upstream's own TypeScript loop (Node) vs the port")
    co.add_argument("--openmaic", required=True, metavar="PATH", help="an OpenMAIC checkout")
    co.add_argument("--case", action="append", default=None, help="repeatable; default: all")
    co.add_argument("--time-scale", type=positive_float("--time-scale"), default=0.15)
    co.add_argument(
        "--upstream",
        choices=profile_names(),
        default=None,
        help="the port's profile (default: detected from the checkout's loop)",
    )
    co.add_argument(
        "--traces", metavar="DIR", default=None, help="write each upstream trace to DIR/<case>.json"
    )
    co.add_argument(
        "--against",
        metavar="PATH",
        default=None,
        help="another checkout: upstream against upstream on the same cases (no port)",
    )
    add_json(co)
    co.set_defaults(fn=_cmd_conform)


def _parser() -> argparse.ArgumentParser:
    from .server_jobs import add_capacity_parser

    p = _Parser(prog="scenebench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _add_run,
        _add_sim,
        _add_serve,
        _add_sweep,
        _add_validate,
        _add_results_commands,
        _add_gate,
        _add_calibrate,
        _add_bench,
        _add_conform,
        add_capacity_parser,
        _add_clients,
    ):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command. A :class:`~sim.errors.UserError` (a bad flag,
    scenario or argument) is one line on stderr and exit status 2; an unreachable provider
    one line and 1; Ctrl-C 130. Anything else is a bug: it propagates with its traceback."""
    try:
        args = _parser().parse_args(argv)
        rc: int = args.fn(args)
        return rc
    except UserError as e:
        print(_error_line(e), file=sys.stderr)
        return 2
    except ProviderUnreachable as e:
        print(_error_line(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scenebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
