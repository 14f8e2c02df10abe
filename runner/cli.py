"""The ``scenebench`` command line.

Every user error (bad scenario, bad flag) prints one line naming the field or
flag and the allowed values, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from sim.model import simulate_many
from sim.scenario import MODES, ScenarioError, builtin_names, load_scenario
from sim.schema import RunResult

__all__ = ["main"]


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _positive_float(name: str) -> Callable[[str], float]:
    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {s!r}")
        return v

    return conv


def _int_in(name: str, lo: int, hi: int | None = None) -> Callable[[str], int]:
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {lo}{'' if hi is None else f' and <= {hi}'}, "
                f"got {s!r}"
            ) from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {lo}{'' if hi is None else f' and <= {hi}'}, got {v}"
            )
        return v

    return conv


def _add_scenario(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        default="default",
        help=f"built-in name ({', '.join(builtin_names())}) or a TOML path",
    )


def _add_cell(p: argparse.ArgumentParser, *, concurrency_required: bool) -> None:
    p.add_argument("--mode", choices=MODES, default="pipelined")
    p.add_argument(
        "--concurrency",
        type=_int_in("--concurrency", 0),
        required=concurrency_required,
        default=None,
        help="PARALLEL_SCENE_CONCURRENCY (clamped to [0, 10]; 0 and 1 mean serial)",
    )
    p.add_argument(
        "--tts-concurrency",
        type=_int_in("--tts-concurrency", 1),
        default=None,
        help="within-scene clips at once (default: follows --concurrency in "
        "parallel modes, 1 in serial)",
    )
    p.add_argument("--seed", type=_int_in("--seed", 0), default=0)


def _fmt_s(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f} s"


def _print_run(r: RunResult) -> None:
    print(
        f"scenario {r.scenario}  mode {r.mode}  concurrency {r.concurrency}  "
        f"tts_concurrency {r.tts_concurrency}  clock {r.world}  seed {r.seed}"
    )
    print(
        f"status {r.status}: {r.scenes_ok} scenes added, {r.scenes_failed} failed "
        f"{list(r.failed_orders) if r.failed_orders else ''}".rstrip()
    )
    print(
        f"makespan {_fmt_s(r.makespan_s)}  time to first scene {_fmt_s(r.ttfs_s)}  (model seconds)"
    )
    print(
        f"requests {r.requests}  429s {r.http_429}  5xx {r.http_5xx}  retries {r.retries}  "
        f"timeouts {r.timeouts}"
    )
    if r.scene_order:
        print("timeline (scene order: ready at)")
        for o, t in zip(r.scene_order, r.scene_ready_s, strict=True):
            print(f"  scene {o:>3}: {t:9.2f} s")


def _cmd_run(a: argparse.Namespace) -> int:
    from .run import run_classroom

    sc = load_scenario(a.scenario)
    res = run_classroom(
        sc,
        a.mode,
        a.concurrency,
        tts_concurrency=a.tts_concurrency,
        seed=a.seed,
        run_id=a.run_id,
        clock=a.clock,
        time_scale=a.time_scale,
        base_url=a.base_url,
        records=False,
    )
    if a.json:
        print(res.to_json())
    else:
        _print_run(res)
    return 0


def _summary(results: Sequence[RunResult]) -> dict[str, Any]:
    mk = np.array([r.makespan_s for r in results])
    tf = np.array([r.ttfs_s for r in results])
    tfv = tf[~np.isnan(tf)]

    def q(x: np.ndarray[Any, Any], p: float) -> float | None:
        return float(np.percentile(x, p)) if len(x) else None

    return {
        "reps": len(results),
        "makespan_s": {"mean": float(mk.mean()), "p50": q(mk, 50), "p95": q(mk, 95)},
        "ttfs_s": {
            "mean": float(tfv.mean()) if len(tfv) else None,
            "p50": q(tfv, 50),
            "p95": q(tfv, 95),
        },
        "http_429_mean": float(np.mean([r.http_429 for r in results])),
        "retries_mean": float(np.mean([r.retries for r in results])),
        "failed_scenes_mean": float(np.mean([r.scenes_failed for r in results])),
        "p_any_failed": float(np.mean([r.scenes_failed > 0 for r in results])),
        "p_paused": float(np.mean([r.status == "paused" for r in results])),
    }


def _cmd_sim(a: argparse.Namespace) -> int:
    from sim.fast import quota_free, simulate_fast

    sc = load_scenario(a.scenario)
    engine = a.engine
    if engine == "auto":
        engine = "fast" if quota_free(sc) and a.tenants == 1 and a.reps >= 200 else "simpy"
    t0 = time.perf_counter()
    if engine == "fast":
        if a.tenants != 1:
            raise UsageError("scenebench sim: --engine fast supports --tenants 1 only")
        results = simulate_fast(
            sc, a.mode, a.concurrency or 0, a.reps, seed=a.seed, tts_concurrency=a.tts_concurrency
        ).results()
    else:
        results = simulate_many(
            sc,
            a.mode,
            a.concurrency or 0,
            a.reps,
            seed=a.seed,
            tts_concurrency=a.tts_concurrency,
            tenants=a.tenants,
        )
    elapsed = time.perf_counter() - t0
    s = _summary(results)
    s.update(
        {
            "scenario": sc.name,
            "mode": a.mode,
            "concurrency": results[0].concurrency,
            "tts_concurrency": results[0].tts_concurrency,
            "seed": a.seed,
            "tenants": a.tenants,
            "engine": engine,
            "cpu_s": elapsed,
        }
    )
    if a.json:
        print(json.dumps(s))
        return 0
    print(
        f"scenario {sc.name}  mode {a.mode}  concurrency {s['concurrency']}  "
        f"tts_concurrency {s['tts_concurrency']}  tenants {a.tenants}  reps {a.reps}  "
        f"seed {a.seed}  engine {engine}"
    )

    def row(name: str, d: dict[str, float | None]) -> str:
        vals = ["-" if v is None else f"{v:9.2f}" for v in (d["mean"], d["p50"], d["p95"])]
        return f"{name:<22}{vals[0]:>10}{vals[1]:>10}{vals[2]:>10}"

    print(f"{'(model seconds)':<22}{'mean':>10}{'p50':>10}{'p95':>10}")
    print(row("makespan", s["makespan_s"]))
    print(row("time to first scene", s["ttfs_s"]))
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
    sc = load_scenario(a.scenario)
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

    report = run_bench(quick=a.quick)
    if a.json:
        print(json.dumps(report))
    else:
        for line in report["lines"]:
            print(line)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scenebench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one classroom through the real pipeline")
    _add_scenario(r)
    _add_cell(r, concurrency_required=False)
    r.add_argument("--clock", choices=("wall", "virtual"), default="wall")
    r.add_argument("--time-scale", type=_positive_float("--time-scale"), default=None)
    r.add_argument("--run-id", type=_int_in("--run-id", 0), default=0)
    r.add_argument("--base-url", default=None, help="an already running provider (wall clock)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=_cmd_run)

    s = sub.add_parser("sim", help="simulate replications with the model")
    _add_scenario(s)
    _add_cell(s, concurrency_required=True)
    s.add_argument("--reps", type=_int_in("--reps", 1), default=1000)
    s.add_argument("--tenants", type=_int_in("--tenants", 1, 1000), default=1)
    s.add_argument("--engine", choices=("auto", "simpy", "fast"), default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_sim)

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

    b = sub.add_parser("bench", help="speed of the model and the harness, as ratios")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        rc: int = args.fn(args)
        return rc
    except (UsageError, ScenarioError) as e:
        print(f"scenebench: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # validation errors from the library (field: message)
        print(f"scenebench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scenebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
