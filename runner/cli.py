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
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sim.catalog import preset_names
from sim.rules import MODES, ScenarioError, parse_knob
from sim.upstream import DEFAULT_PROFILE, PROFILES, profile_names

from .argtypes import _add_scenario, _int_in, _int_list, _positive_float
from .summary import _summary

if TYPE_CHECKING:  # the model and pandas load only when a command needs them (fast --help)
    from sim.scenario import Scenario
    from sim.schema import RunResult


def load_scenario(name_or_path: str | Path, *, upstream: str | None = None) -> Scenario:
    """:func:`sim.scenario.load_scenario`, imported when a command first needs it."""
    from sim.scenario import load_scenario as load

    return load(name_or_path, upstream=upstream)


__all__ = ["main"]


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


class ProviderUnreachable(Exception):
    """The provider (or its health endpoint) cannot be reached: one line, exit status 1."""


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


def _knob(s: str) -> int:
    """``--concurrency`` as upstream reads PARALLEL_SCENE_CONCURRENCY (parseInt, clamp)."""
    return parse_knob(s)


def _profile_list(s: str) -> list[str]:
    names = profile_names() if s == "all" else [x.strip() for x in s.split(",") if x.strip()]
    for n in names:
        if n not in PROFILES:
            raise argparse.ArgumentTypeError(
                f"--upstream must be 'all' or a comma list of {', '.join(PROFILES)}; got {n!r}"
            )
    if not names:
        raise argparse.ArgumentTypeError("--upstream must name at least one profile")
    return names


def _add_cell(p: argparse.ArgumentParser, *, concurrency_required: bool) -> None:
    p.add_argument("--mode", choices=MODES, default="pipelined")
    p.add_argument(
        "--concurrency",
        type=_knob,
        required=concurrency_required,
        default=None,
        help="PARALLEL_SCENE_CONCURRENCY, read as upstream does (parseInt, then [0, 10]: "
        "'3abc' is 3, '1e1' is 1, 'inf' is 0; 0 and 1 mean serial)",
    )
    p.add_argument(
        "--tts-concurrency",
        type=_int_in("--tts-concurrency", 1),
        default=None,
        help="within-scene clips at once (default: follows --concurrency in "
        "parallel modes, 1 in serial)",
    )
    p.add_argument("--seed", type=_int_in("--seed", 0), default=0)


def _add_adaptive(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--adaptive",
        choices=("off", "halve", "aimd", "gate"),
        default="off",
        help="adaptive limiter for content calls and within-scene clips (README: Adaptive)",
    )


def _nonneg_float(name: str) -> Callable[[str], float]:
    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number >= 0, got {s!r}") from None
        if not (v >= 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{name} must be a number >= 0, got {s!r}")
        return v

    return conv


def _fmt_s(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f} s"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def _print_run(r: RunResult, prov: dict[str, Any], failures: Sequence[Any] = ()) -> None:
    from .provenance import provenance_line

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

    from .failures import describe_transport_error

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
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnreachable(
            f"scenebench run: {health} answered HTTP {resp.status_code} without a JSON "
            "body, so PARALLEL_SCENE_CONCURRENCY is unknown; give --concurrency"
        )


def _cmd_run(a: argparse.Namespace) -> int:
    from .failures import scene_failures
    from .pipeline import ScenePipeline
    from .provenance import dumps, provenance
    from .run import run_classroom

    sc = load_scenario(a.scenario, upstream=a.upstream)
    scale = a.time_scale
    if a.clock == "wall" and scale is None and a.base_url is None:
        from .floor import choose_time_scale

        choice = choose_time_scale(
            sc,
            a.mode,
            a.concurrency,
            tts_concurrency=a.tts_concurrency,
            seed=a.seed,
            run_id=a.run_id,
            adaptive=a.adaptive,
        )
        scale = choice.time_scale
        print(choice.line(), file=sys.stderr if a.json else sys.stdout, flush=True)
    base_url = None
    if a.base_url is not None:
        base_url = _check_base_url(a.base_url)
        if a.clock != "virtual":
            _probe_provider(base_url, a.concurrency is None, sc.client.knob_endpoint)
    pipes: list[ScenePipeline] = []

    async def keep(pipe: ScenePipeline) -> None:
        pipes.append(pipe)

    res = run_classroom(
        sc,
        a.mode,
        a.concurrency,
        tts_concurrency=a.tts_concurrency,
        seed=a.seed,
        run_id=a.run_id,
        clock=a.clock,
        time_scale=scale,
        base_url=base_url,
        records=False,
        hook=keep,
        adaptive=a.adaptive,
    )
    failures = scene_failures(res.failed_orders, pipes[0].attempt_failures if pipes else [])
    prov = provenance(sc)
    if a.json:
        d = json.loads(res.to_json())
        d["scene_failures"] = [f.to_dict() for f in failures]
        d["provenance"] = prov
        print(dumps(d))
    else:
        _print_run(res, prov, failures)
    if res.scenes_ok == 0 and failures and all(f.status == -1 for f in failures):
        raise ProviderUnreachable(
            f"scenebench run: the provider stopped answering ({failures[0].line()})"
        )
    return 0


def _cmd_sim(a: argparse.Namespace) -> int:
    from sim.fast import quota_free, simulate_fast

    from .provenance import dumps, provenance, provenance_line

    if a.client == "server" or a.key_gate or a.key_inflight:  # server jobs, key-wide gate
        from .capacity import sim_server  # (runner/capacity.py)

        return sim_server(a)

    sc = load_scenario(a.scenario, upstream=a.upstream)
    engine = a.engine
    if engine == "auto":
        engine = (
            "fast"
            if quota_free(sc) and a.tenants == 1 and a.reps >= 200 and a.adaptive == "off"
            else "simpy"
        )
    t0 = time.perf_counter()
    if engine == "fast":
        if a.tenants != 1 or a.adaptive != "off":
            raise UsageError(
                "scenebench sim: --engine fast supports --tenants 1 and --adaptive off only"
            )
        results = simulate_fast(
            sc, a.mode, a.concurrency or 0, a.reps, seed=a.seed, tts_concurrency=a.tts_concurrency
        ).results()
    else:
        from sim.model import simulate_many

        results = simulate_many(
            sc,
            a.mode,
            a.concurrency or 0,
            a.reps,
            seed=a.seed,
            tts_concurrency=a.tts_concurrency,
            tenants=a.tenants,
            adaptive=a.adaptive,
            stagger_s=a.stagger_s,
            stagger_dist=a.stagger_dist,
        )
    elapsed = time.perf_counter() - t0
    s = _summary(results)
    s.update(
        {
            "scenario": sc.name,
            "upstream": sc.upstream,
            "mode": a.mode,
            "concurrency": results[0].concurrency,
            "tts_concurrency": results[0].tts_concurrency,
            "seed": a.seed,
            "tenants": a.tenants,
            "adaptive": a.adaptive,
            "stagger_s": a.stagger_s,
            "engine": engine,
            "cpu_s": elapsed,
            "provenance": provenance(sc),
        }
    )
    if a.json:
        print(dumps(s))
        return 0
    print(provenance_line(s["provenance"]))
    print(
        f"scenario {sc.name}  upstream {sc.upstream}  mode {a.mode}  concurrency "
        f"{s['concurrency']}  "
        f"tts_concurrency {s['tts_concurrency']}  tenants {a.tenants}  reps {a.reps}  "
        f"seed {a.seed}  engine {engine}"
    )

    def row(name: str, d: dict[str, float | None]) -> str:
        vals = ["-" if v is None else f"{v:9.2f}" for v in (d["mean"], d["p50"], d["p95"])]
        return f"{name:<22}{vals[0]:>10}{vals[1]:>10}{vals[2]:>10}"

    print(f"{'(model seconds)':<22}{'mean':>10}{'p50':>10}{'p95':>10}")
    print(row("makespan", s["makespan_s"]))
    print(row("time to first scene", s["ttfs_s"]))
    print(row("startup delay", s["startup_s"]))
    print(row("stall time", s["stall_s"]))
    print(row("time to last scene", s["last_scene_s"]))
    sr = s["stall_ratio"]
    print(f"stalls per run {s['stalls_mean']:.2f}  stall ratio {_fmt_pct(sr)}")
    print(
        f"429s per run {s['http_429_mean']:.2f}  retries per run {s['retries_mean']:.2f}  "
        f"failed scenes per run {s['failed_scenes_mean']:.3f}  "
        f"P(any failed) {s['p_any_failed']:.3f}  P(paused) {s['p_paused']:.3f}"
    )
    print(f"({elapsed:.2f} s of CPU)")
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from .server import ServerThread, create_app, env_parallel_scene_concurrency

    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.allow_remote:
        raise UsageError(
            f"scenebench serve: --host {a.host} binds beyond loopback; add "
            "--allow-remote to do that on purpose (allowed without it: "
            "127.0.0.1, localhost, ::1)"
        )
    if a.allow_remote and a.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"WARNING: the fake provider will accept connections on {a.host}, beyond loopback",
            file=sys.stderr,
        )
    sc = load_scenario(a.scenario, upstream=a.upstream)
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
    try:
        while srv.thread.is_alive():
            srv.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench import run_bench

    report = run_bench(quick=a.quick, load=not a.no_load)
    if a.json:
        from .provenance import dumps

        print(dumps(report))
    else:
        for line in report["lines"]:
            print(line)
    return 0


def _quota_list(s: str) -> list[int | str]:
    """``--quotas``: in-flight limits (0..1000) and provider preset names (sim.presets)."""
    conv = _int_in("--quotas", 0, 1000)
    out: list[int | str] = []
    for x in (x.strip() for x in s.split(",")):
        if not x:
            continue
        if x.lstrip("-").isdigit():
            out.append(conv(x))
        elif x in preset_names():
            out.append(x)
        else:
            raise argparse.ArgumentTypeError(
                f"--quotas: {x!r} is neither an in-flight limit (0..1000) nor a preset "
                f"({', '.join(preset_names())})"
            )
    return out


def _choice_list(name: str, allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def f(s: str) -> list[str]:
        out = [x.strip() for x in s.split(",") if x.strip()]
        for x in out:
            if x not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{name} must be a comma-separated list of {', '.join(allowed)}; got {x!r}"
                )
        return out

    return f


def _add_dimensions(p: argparse.ArgumentParser) -> None:
    """The adaptive and shared-key grid dimensions (sweep, validate --exact)."""
    p.add_argument(
        "--adaptive",
        type=_choice_list("--adaptive", ("off", "halve", "aimd", "gate")),
        default=None,
        help="comma-separated limiter policies (default off)",
    )
    p.add_argument(
        "--tenants",
        type=_int_list("--tenants", 1, 100),
        default=None,
        help="comma-separated classrooms per key (default 1)",
    )
    p.add_argument(
        "--stagger-s",
        type=_nonneg_float("--stagger-s"),
        default=0.0,
        help="tenants start this many model seconds apart (the gap, or its mean)",
    )
    p.add_argument("--stagger-dist", choices=("constant", "exponential"), default="constant")


def _cmd_sweep(a: argparse.Namespace) -> int:
    from .sweep import ResultsError, default_spec, finished_cells, run_sweep

    backends = ("sim", "real") if a.backend == "both" else (a.backend,)
    started: list[Path] = []

    def on_start(folder: Path, n_cells: int, n_done: int) -> None:
        started.append(folder)
        resumed = f", {n_done} already done" if n_done else ""
        print(f"results: {folder} ({n_cells} cells{resumed})", flush=True)

    try:
        if a.resume is not None:
            d = run_sweep(
                default_spec(quick=True, scenarios=None, backends=backends),
                resume=Path(a.resume),
                workers=a.workers,
                dask_scheduler=a.dask_scheduler,
                progress=not a.no_progress,
                on_start=on_start,
            )
        else:
            spec = default_spec(
                quick=a.quick,
                scenarios=a.scenario,
                upstreams=a.upstream,
                backends=backends,
                seed=a.seed,
                sim_reps=a.reps,
                real_reps=a.real_reps,
                real_clock=a.real_clock,
                real_time_scale=a.time_scale,
                quotas=a.quotas,
                concurrencies=a.concurrency,
                adaptives=a.adaptive or ("off",),
                tenants=a.tenants or (1,),
                stagger_s=a.stagger_s,
                stagger_dist=a.stagger_dist,
            )
            d = run_sweep(
                spec,
                root=Path(a.results_root),
                out=Path(a.out) if a.out else None,
                workers=a.workers,
                dask_scheduler=a.dask_scheduler,
                progress=not a.no_progress,
                allow_source_tree=a.allow_source_tree,
                on_start=on_start,
            )
    except ResultsError as e:
        raise UsageError(f"scenebench sweep: {e}") from None
    except KeyboardInterrupt:
        _quiet_teardown()
        if not started:
            msg = "interrupted before any cell ran; nothing was written"
        else:
            folder = started[0]
            try:
                kept = len(finished_cells(folder))
            except ResultsError:
                kept = 0
            msg = (
                f"interrupted; {kept} finished cell(s) kept in {folder}; continue with: "
                f"scenebench sweep --resume {folder}"
            )
        print(f"scenebench sweep: {msg}", file=sys.stderr, flush=True)
        return 130
    failed = json.loads((d / "failed_cells.json").read_text())
    for cid, reason in sorted(failed.items()):
        print(f"scenebench sweep: cell {cid} failed: {reason}", file=sys.stderr)
    if not (d / "recommendation.json").is_file():
        print(f"every cell failed; after fixing the cause: scenebench sweep --resume {d}")
        return 1
    rec = json.loads((d / "recommendation.json").read_text())
    print(f"report:  {d / 'REPORT.md'}")
    print(f"recommended default PARALLEL_SCENE_CONCURRENCY = {rec['recommended']}")
    if failed:
        print(
            f"{len(failed)} cell(s) failed (listed in REPORT.md); finish them with "
            f"scenebench sweep --resume {d}"
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
    from .report import render_results
    from .sweep import ResultsError

    try:
        if a.findings is not None:
            from .findings import write_findings

            write_findings(Path(a.results), Path(a.findings))
            print(f"wrote {a.findings}")
            return 0
        render_results(Path(a.results))
    except ResultsError as e:
        raise UsageError(f"scenebench report: {e}") from None
    print(f"re-rendered {Path(a.results) / 'REPORT.md'}")
    return 0


def _cmd_recommend(a: argparse.Namespace) -> int:
    from .report import render_results
    from .sweep import ResultsError

    try:
        rec = render_results(Path(a.results))
    except ResultsError as e:
        raise UsageError(f"scenebench recommend: {e}") from None
    from .capacity import server_lines  # the server path's default, stated apart (capacity)

    rec["server_path"] = server_lines(Path(a.results))
    if a.json:
        from .provenance import dumps

        print(dumps(rec))
        return 0
    from .provenance import provenance_line

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
    _print_presets(rec)
    for line in rec["server_path"]:  # none unless `scenebench capacity` wrote to the folder
        print(line)
    return 0


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


def _cmd_validate(a: argparse.Namespace) -> int:
    from sim.scenario import builtin_names

    from . import validate as v
    from .provenance import dumps, provenance, provenance_line

    names = a.scenario or builtin_names()
    if a.client == "server":  # the server path's jobs and key-wide gate (runner/capacity.py)
        from .capacity import validate_server

        return validate_server(a, names)
    if a.exact:
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
            scenarios,
            runs=a.runs or (1 if a.quick else 2),
            seed=a.seed,
            progress=progress,
            adaptives=a.adaptive or ("off",),
            tenants=a.tenants or (1,),
            stagger_s=a.stagger_s,
            stagger_dist=a.stagger_dist,
        )
        if bar is not None:
            bar.close()
        if a.json:
            print(
                dumps(
                    {
                        "cells": rep.cells,
                        "runs": rep.runs,
                        "requests": rep.requests,
                        "http_429": rep.http_429,
                        "retries": rep.retries,
                        "ok": rep.ok,
                        "divergences": rep.divergences,
                        "provenance": provenance(scenarios),
                    }
                )
            )
        else:
            print(provenance_line(provenance(scenarios)))
            print(
                f"validate --exact: {rep.cells} cells, {rep.runs} runs, {rep.requests} "
                f"requests ({rep.http_429} answered 429, {rep.retries} retries) over "
                f"{', '.join(names)} x upstream {', '.join(profiles)}"
            )
            print(
                "real pipeline (virtual clock) and model agree on every timeline"
                if rep.ok
                else f"DIVERGED: {rep.divergences[0]}"
            )
        return 0 if rep.ok else 1
    cells = [
        c
        for c in (v.QUICK_CELLS if a.quick else v.FULL_CELLS)
        if a.scenario is None or c.scenario in names
    ]
    if not cells:
        raise UsageError(
            f"scenebench validate: no wall-clock cell for scenario(s) "
            f"{', '.join(names)}; cells exist for: "
            f"{', '.join(sorted({c.scenario for c in v.FULL_CELLS}))}"
        )
    from .sweep import ResultsError, check_new_folder, in_source_tree

    try:
        if a.out:
            out = Path(a.out)
            if out.exists() and not out.is_dir():
                raise ResultsError(f"--out {out} is a file, not a folder; name a folder")
            if in_source_tree(out):
                check_new_folder(out, flag="--out")
        else:
            check_new_folder(Path(a.results_root), flag="--results-root")
    except ResultsError as e:
        raise UsageError(f"scenebench validate: {e}") from None
    log = None if a.json else print
    report = v.validate_wall(
        cells, reps=a.reps or (16 if a.quick else 40), seed=a.seed, model_reps=2000, log=log
    )
    from .sweep import new_results_dir, write_json_atomic

    report["provenance"] = provenance(
        [load_scenario(n) for n in sorted({c.scenario for c in cells})]
    )
    try:
        d = Path(a.out) if a.out else new_results_dir(Path(a.results_root), "validate")
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"scenebench validate: cannot write the results folder: {e.strerror or e}"
        ) from None
    write_json_atomic(d / "validate.json", report)
    figs = v.render_wall_figure(report, d / "model-vs-real")
    worst = sorted(report["cells"], key=lambda c: -abs(c["makespan_mean_rel_err"]))
    md = [
        "# scenebench validate (wall clock)",
        "",
        provenance_line(report["provenance"]) + ".",
        "",
        f"Harness overhead floor {report['overhead_floor_s'] * 1e3:.2f} ms per request; "
        f"{report['reps']} real runs per cell (paired with model runs on the same seeds), "
        f"model population {report['model_reps']} runs. Tolerance: mean makespan "
        f"{100 * report['mean_tol']:g}%, p95 {100 * report['p95_tol']:g}%, time to first "
        f"scene {100 * report['ttfs_tol']:g}%; a cell passes only when every 95% interval "
        "lies inside its band (docs/validation.md). Verdict: "
        f"**{report['verdict']}**.",
        "",
        f"![model vs real]({figs[0].name})",
        "",
        "| cell | time scale | real mean (s) | model mean (s) | rel. err (95% CI) | p95 err | "
        "TTFS err | 429/run real / model | ok |",
        "|" + "---|" * 9,
    ]
    for c in worst:
        lo, hi = c["makespan_mean_rel_ci"]
        md.append(
            f"| {c['cell']} | {c['time_scale']} | {c['real_makespan_mean_s']:.1f} | "
            f"{c['model_makespan_mean_s']:.1f} | {100 * c['makespan_mean_rel_err']:+.2f}% "
            f"({100 * lo:+.2f}%, {100 * hi:+.2f}%) | {100 * c['makespan_p95_rel_err']:+.2f}%"
            f" | {100 * c['ttfs_mean_rel_err']:+.2f}% | {c['real_429_mean']:.1f} / "
            f"{c['model_429_mean']:.1f} | {c['verdict']}"
            + (f" ({c['runs_needed']} runs would decide)" if c["runs_needed"] else "")
            + " |"
        )
    (d / "VALIDATE.md").write_text("\n".join(md) + "\n")
    if a.json:
        from .provenance import dumps

        print(dumps(report))
    else:
        print(f"results: {d}")
        _print_wall_verdict(report)
    return {v.PASS: 0, v.FAIL: 1}.get(report["verdict"], 3)


def _print_wall_verdict(report: dict[str, Any]) -> None:
    from . import validate as v

    for c in report["cells"]:
        if c["verdict"] == v.ALL_PAUSED:
            print(f"reported apart (every run paused early): {c['cell']}")
    print(
        {
            v.PASS: "every cell's 95% intervals lie inside the tolerance bands",
            v.FAIL: "SOME CELLS OUT OF TOLERANCE",
            v.INCONCLUSIVE: "INCONCLUSIVE: too few runs to decide some cells (see above)",
        }[report["verdict"]]
    )


def _cmd_gate(a: argparse.Namespace) -> int:
    from . import gate as g

    path = Path(a.baseline)
    baseline = None
    if not a.update:
        if not path.is_file():
            raise UsageError(
                f"scenebench gate: --baseline {path} does not exist; create it with --update"
            )
        try:
            baseline = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"scenebench gate: --baseline {path} is not JSON ({e})") from None
        if not isinstance(baseline, dict):
            raise UsageError(f"scenebench gate: --baseline {path} is not a gate baseline")
        if baseline.get("gate_version") != g.GATE_VERSION:
            raise UsageError(
                f"scenebench gate: --baseline {path} has gate_version "
                f"{baseline.get('gate_version')!r}; this gate writes "
                f"{g.GATE_VERSION} (refresh it with --update)"
            )
    now = g.measure(wall=not a.no_wall)
    if a.update:
        try:
            g.save_baseline(now, path)
        except ValueError as e:
            print(f"scenebench gate: error: {e}", file=sys.stderr)
            return 1
        print(f"baseline written: {path} ({len(now['metrics'])} metrics)")
        return 0
    assert baseline is not None
    metrics = g.compare(baseline, now)
    failed = [m for m in metrics if not m.ok]
    if a.junit:
        g.write_junit(metrics, Path(a.junit))
    if a.json:
        from .provenance import dumps

        print(
            dumps(
                {
                    "ok": not failed,
                    "provenance": now.get("provenance"),
                    "metrics": [m.to_json() for m in metrics],
                    "notes": now["notes"],
                }
            )
        )
    else:
        from .provenance import provenance_line

        print(provenance_line(now["provenance"]))
        print(
            g.render_table(metrics, only_failed=bool(failed)) if failed else g.render_table(metrics)
        )
        for n in now["notes"]:
            print(f"note: {n}")
        undefined = sum("undefined" in m.note for m in metrics)
        print(
            f"gate: {len(metrics) - len(failed)} metrics within tolerance, {len(failed)} failed"
            + (f" ({undefined} undefined: failures to measure)" if undefined else "")
        )
    return 1 if failed else 0


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from sim.calibrate import (
        fit_summary,
        fit_trace,
        read_trace,
        scenario_from_fits,
        write_scenario,
    )
    from sim.calibrate_tokens import apply_token_fits, fit_tokens

    from .sweep import write_atomic

    out = Path(a.out)
    if out.is_dir():
        raise UsageError(f"scenebench calibrate: --out {out} is a folder; name a .toml file")
    if not out.parent.is_dir():
        raise UsageError(
            f"scenebench calibrate: --out {out}: folder {str(out.parent)!r} does not exist"
        )
    trace = read_trace(a.trace)
    fits = fit_trace(trace)
    sc = scenario_from_fits(load_scenario(a.base), fits, trace, name=a.name)
    token_fits = fit_tokens(trace)  # with token columns: tokens per call and output speed
    sc = apply_token_fits(sc, token_fits)
    try:
        write_atomic(out, lambda p: write_scenario(sc, p))
    except OSError as e:
        raise UsageError(
            f"scenebench calibrate: cannot write --out {out}: {e.strerror or e}"
        ) from None
    summary = fit_summary(fits)
    with_cols = summary[["step", "rank", "candidate", "n", "mean_s", "aic", "ks_stat", "ks_pvalue"]]
    print(with_cols.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for f in token_fits.values():
        speed = f"{f.output_tps:.1f} tok/s" if f.output_tps else "no speed (flat)"
        print(
            f"{f.step}: tokens per call {f.output.mean:.0f} out"
            + (f", {f.input.mean:.0f} in" if f.input is not None else "")
            + f"; output speed {speed}, time to first token {f.ttft_mean_s:.2f} s "
            f"(R² {f.r2:.3f}, {f.n} calls)"
        )
    print(f"scenario written: {a.out} (base {a.base}; best fit by AIC per step)")
    return 0


def _cmd_conform(a: argparse.Namespace) -> int:
    from .conform import ConformError, conform, fixed_cases

    def progress(name: str) -> None:
        print(f"conform: {name} ...", file=sys.stderr, flush=True)

    try:
        cases = fixed_cases(a.case)
        rep = conform(
            a.openmaic,
            cases,
            time_scale=a.time_scale,
            progress=None if a.json else progress,
        )
    except ConformError as e:
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
        if rep.auto_stubbed:
            print(f"conform: auto-stubbed (not found): {', '.join(rep.auto_stubbed)}")
    return 0 if rep.ok else 1


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scenebench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one classroom through the real pipeline")
    _add_scenario(r)
    _add_cell(r, concurrency_required=False)
    _add_adaptive(r)
    r.add_argument("--clock", choices=("wall", "virtual"), default="wall")
    r.add_argument("--time-scale", type=_positive_float("--time-scale"), default=None)
    r.add_argument("--run-id", type=_int_in("--run-id", 0), default=0)
    r.add_argument("--base-url", default=None, help="an already running provider (wall clock)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=_cmd_run)

    s = sub.add_parser("sim", help="simulate replications with the model")
    _add_scenario(s)
    _add_cell(s, concurrency_required=True)
    _add_adaptive(s)
    s.add_argument(
        "--stagger-s",
        type=_nonneg_float("--stagger-s"),
        default=0.0,
        help="tenants start this many model seconds apart (the gap, or its mean)",
    )
    s.add_argument("--stagger-dist", choices=("constant", "exponential"), default="constant")
    s.add_argument("--reps", type=_int_in("--reps", 1), default=1000)
    s.add_argument("--tenants", type=_int_in("--tenants", 1, 1000), default=1)
    s.add_argument("--engine", choices=("auto", "simpy", "fast"), default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_sim)
    from .server_cli import add_capacity_parser, add_server_args  # the server path

    add_server_args(s)

    v = sub.add_parser("serve", help="serve the fake provider (uvicorn)")
    _add_scenario(v)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument(
        "--allow-remote", action="store_true", help="required to bind anything but loopback"
    )
    v.add_argument(
        "--port", type=_int_in("--port", 0, 65535), default=0, help="0 picks a free port"
    )
    v.add_argument("--time-scale", type=_positive_float("--time-scale"), default=None)
    v.add_argument("--seed", type=_int_in("--seed", 0), default=0)
    v.add_argument(
        "--parallel-scene-concurrency",
        default=None,
        help="what /api/health reports (default: $PARALLEL_SCENE_CONCURRENCY, "
        "else the scenario's run.parallel_scene_concurrency)",
    )
    v.set_defaults(fn=_cmd_serve)

    w = sub.add_parser("sweep", help="the grid: modes x concurrency x quotas x scenarios")
    w.add_argument(
        "--upstream",
        type=_profile_list,
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
    w.add_argument(
        "--quotas",
        type=_quota_list,
        default=None,
        help="in-flight limits and provider presets, comma-separated; 0 = unlimited "
        "(default 1,2,3,5,10,0); presets: " + ", ".join(preset_names()),
    )
    w.add_argument(
        "--concurrency",
        type=_int_list("--concurrency", 1, 10),
        default=None,
        help="comma-separated (default 1..10)",
    )
    w.add_argument(
        "--reps",
        type=_int_in("--reps", 2),
        default=None,
        help="model runs per cell (default 2000; quick 1000)",
    )
    w.add_argument(
        "--real-reps",
        type=_int_in("--real-reps", 1),
        default=None,
        help="real runs per cell (default 40; quick 10)",
    )
    _add_dimensions(w)
    w.add_argument("--real-clock", choices=("virtual", "wall"), default="virtual")
    w.add_argument(
        "--time-scale",
        type=_positive_float("--time-scale"),
        default=None,
        help="for --real-clock wall",
    )
    w.add_argument("--seed", type=_int_in("--seed", 0), default=0)
    w.add_argument(
        "--workers",
        type=_int_in("--workers", 1, 256),
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
    w.set_defaults(fn=_cmd_sweep)

    va = sub.add_parser("validate", help="model vs real pipeline: exact (virtual) or wall clock")
    va.add_argument(
        "--exact", action="store_true", help="virtual clock, every cell of the grid, run for run"
    )
    va.add_argument("--quick", action="store_true")
    va.add_argument("--scenario", action="append", default=None)
    va.add_argument(
        "--upstream",
        type=_profile_list,
        default=None,
        help="with --exact: profiles to check, comma list or 'all' (default: all)",
    )
    va.add_argument(
        "--runs",
        type=_int_in("--runs", 1),
        default=None,
        help="--exact: runs per cell (default 2; quick 1)",
    )
    va.add_argument(
        "--reps",
        type=_int_in("--reps", 2),
        default=None,
        help="wall: real runs per cell (default 40; quick 16)",
    )
    va.add_argument("--seed", type=_int_in("--seed", 0), default=0)
    _add_dimensions(va)
    va.add_argument("--results-root", default="results")
    va.add_argument("--out", default=None)
    va.add_argument("--json", action="store_true")
    va.add_argument("--no-progress", action="store_true")
    va.add_argument("--client", choices=("browser", "server"), default="browser")
    va.set_defaults(fn=_cmd_validate)

    rp = sub.add_parser("report", help="re-render tables, figures and REPORT.md of a folder")
    rp.add_argument("results")
    rp.add_argument(
        "--findings",
        default=None,
        metavar="FILE",
        help="write the findings page (docs/findings.md) from the folder instead",
    )
    rp.set_defaults(fn=_cmd_report)

    rc = sub.add_parser("recommend", help="the default PARALLEL_SCENE_CONCURRENCY and why")
    rc.add_argument("--results", required=True)
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(fn=_cmd_recommend)

    ga = sub.add_parser("gate", help="regression gate against a committed baseline")
    ga.add_argument("--baseline", default="results/baseline.json")
    ga.add_argument("--update", action="store_true", help="rewrite the baseline deliberately")
    ga.add_argument("--json", action="store_true")
    ga.add_argument("--junit", default=None, metavar="FILE")
    ga.add_argument("--no-wall", action="store_true", help="skip the wall-clock check")
    ga.set_defaults(fn=_cmd_gate)

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

    b = sub.add_parser("bench", help="speed of the model and the harness, as ratios")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--no-load", action="store_true", help="skip the server load and soak")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=_cmd_bench)

    co = sub.add_parser("conform", help="upstream's own TypeScript loop (Node) vs the port")
    co.add_argument("--openmaic", required=True, metavar="PATH", help="an OpenMAIC checkout")
    co.add_argument("--case", action="append", default=None, help="repeatable; default: all")
    co.add_argument("--time-scale", type=_positive_float("--time-scale"), default=0.15)
    co.add_argument("--json", action="store_true")
    co.set_defaults(fn=_cmd_conform)
    add_capacity_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        rc: int = args.fn(args)
        return rc
    except (UsageError, ScenarioError) as e:
        print(_error_line(e), file=sys.stderr)
        return 2
    except ProviderUnreachable as e:
        print(_error_line(e), file=sys.stderr)
        return 1
    except ValueError as e:  # validation errors from the library (field: message)
        print(_error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scenebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
