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

import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.scenario import Scenario

    from .traces import Trace

__all__ = [
    "ENTRY",
    "ESBUILD_VERSION",
    "MIN_NODE",
    "PORT_CLIENT",
    "Bundle",
    "ConformCase",
    "ConformError",
    "ConformReport",
    "ConformRow",
    "build_bundle",
    "check_checkout",
    "conform",
    "default_cache_dir",
    "ensure_esbuild",
    "fixed_cases",
    "node_version",
    "run_case",
    "run_driver",
    "trace_dict",
]

ESBUILD_VERSION = "0.28.2"
MIN_NODE = 18
ENTRY = "lib/hooks/use-scene-generator.ts"
STEP_NAMES = ("content", "actions", "tts")
# The port's profile that matches how upstream's loop is driven here (loop alone, fixed jitter).
# Upstream runs on sockets: each hop adds ~0.03 model s at time scale 0.15, so besides the 1-s
# tolerance a time may be off by 1 % of itself (the wall clock's fidelity target).
WALL_REL_TOL = 0.01
PORT_CLIENT: dict[str, Any] = {
    "upstream": "pr788",
    "foreground_first_scene": False,
    "jitter_u": 0.5,
}
# name -> (scenario file in runner/experiments/conform_cases, c, seed)
_CASES: dict[str, tuple[str, int, int]] = {
    "case1-c0": ("case1", 0, 0),
    "case1-c3": ("case1", 3, 0),
    "case2-c2": ("case2", 2, 0),
    "case2-c3": ("case2", 3, 0),
    "case3-c0": ("case3", 0, 0),
    "case3-c3": ("case3", 3, 0),
    "case4-c0": ("case4", 0, 0),
    "case5-c3": ("case5", 3, 644),
}


class ConformError(Exception):
    """Conformance could not run (no Node, bad checkout, build or driver failure): one line."""


# -- Node and esbuild ------------------------------------------------------------------------
def _js_dir() -> Path:
    return Path(str(resources.files("runner.experiments").joinpath("conform_js")))


def default_cache_dir() -> Path:
    """``$SCENEBENCH_CACHE``, else ``$XDG_CACHE_HOME/scenebench/node``, else ``~/.cache/...``."""
    env = os.environ.get("SCENEBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "scenebench" / "node"


def node_version() -> tuple[int, int, int]:
    """The version of ``node`` on PATH; :class:`ConformError` if missing or older than 18."""
    node = shutil.which("node")
    if node is None:
        raise ConformError(f"node: not found on PATH; conform needs Node >= {MIN_NODE}")
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise ConformError(f"node: `node --version` failed ({e})") from None
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise ConformError(f"node: cannot read the version from {out!r}")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if version[0] < MIN_NODE:
        raise ConformError(f"node: version {out} found; conform needs Node >= {MIN_NODE}")
    return version


def _installed_version(pkg: Path) -> str | None:
    try:
        data = json.loads((pkg / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    v = data.get("version")
    return v if isinstance(v, str) else None


def ensure_esbuild(cache_dir: str | Path | None = None) -> Path:
    """The esbuild package folder, installed from npm into ``cache_dir`` if not there yet."""
    node_version()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    pkg = cache / "node_modules" / "esbuild"
    if _installed_version(pkg) == ESBUILD_VERSION:
        return pkg
    npm = shutil.which("npm")
    if npm is None:
        raise ConformError("npm: not found on PATH; conform installs esbuild with npm")
    cache.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(cache / ".scenebench-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time per cache folder
        if _installed_version(pkg) != ESBUILD_VERSION:
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund"]
            cmd += ["--loglevel=error", f"esbuild@{ESBUILD_VERSION}"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                raise ConformError(f"npm: installing esbuild failed ({e})") from None
            if proc.returncode != 0 or _installed_version(pkg) != ESBUILD_VERSION:
                tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
                raise ConformError(f"npm: installing esbuild@{ESBUILD_VERSION} failed: {tail}")
    return pkg


# -- bundling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A bundled scene loop and what the build replaced."""

    path: Path
    checkout: Path
    stubbed: tuple[str, ...]
    auto_stubbed: tuple[str, ...]
    missing_names: dict[str, list[str]]
    inputs: tuple[str, ...]


def check_checkout(path: str | Path) -> Path:
    """The checkout's root; :class:`ConformError` unless ``lib/hooks/use-scene-generator.ts``."""
    root = Path(path).expanduser()
    if not (root / ENTRY).is_file():
        raise ConformError(
            f"--openmaic: {str(path)!r} is not an OpenMAIC checkout (no {ENTRY} under it)"
        )
    return root.resolve()


def _node_json(script: str, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``node <script> <json>`` and parse the JSON object on its last stdout line."""
    cmd = ["node", str(_js_dir() / script), json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConformError(f"{script}: no answer within {timeout_s:g} s") from None
    except OSError as e:
        raise ConformError(f"{script}: cannot run node ({e})") from None
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        out = None
    if not isinstance(out, dict):
        tail = " ".join(proc.stderr.split())[-300:]
        raise ConformError(f"{script}: exited {proc.returncode} without a result: {tail}")
    err = out.get("error")
    if err is not None or proc.returncode != 0:
        first = " ".join(str(err).split())[:400]
        raise ConformError(f"{script}: {first}")
    return out


def build_bundle(
    openmaic: str | Path, out_dir: str | Path, esbuild_dir: str | Path | None = None
) -> Bundle:
    """Bundle the checkout's scene loop with the stubs into ``out_dir/scene-loop.mjs``."""
    root = check_checkout(openmaic)
    esb = Path(esbuild_dir) if esbuild_dir is not None else ensure_esbuild()
    outfile = Path(out_dir) / "scene-loop.mjs"
    cfg = {"root": str(root), "entry": ENTRY, "outfile": str(outfile), "esbuild": str(esb)}
    res = _node_json("build.mjs", cfg, timeout_s=300)
    return Bundle(
        path=outfile,
        checkout=root,
        stubbed=tuple(res.get("stubbed", [])),
        auto_stubbed=tuple(res.get("auto_stubbed", [])),
        missing_names=dict(res.get("missing_names", {})),
        inputs=tuple(res.get("inputs", [])),
    )


# -- cases ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConformCase:
    """One run: a scenario, the concurrency c the loop reads and the provider's seed."""

    name: str
    scenario: Scenario
    concurrency: int
    seed: int = 0
    note: str = ""


def _case_scenario(stem: str) -> tuple[Scenario, str]:
    """The case's scenario with :data:`PORT_CLIENT` when the scenario spec knows ``[client]``."""
    from sim.scenario import ScenarioError, scenario_from_mapping

    ref = resources.files("runner.experiments").joinpath("conform_cases", f"{stem}.toml")
    data = tomllib.loads(ref.read_text(encoding="utf-8"))
    try:
        return scenario_from_mapping({**data, "client": dict(PORT_CLIENT)}), ""
    except ScenarioError as e:
        if not str(e).startswith("client"):
            raise
        note = f"the scenario spec refused the port's [client] profile ({e}); the port ran its own"
    return scenario_from_mapping(data), note


def fixed_cases(names: Sequence[str] | None = None) -> list[ConformCase]:
    """The fixed case set (5 outlines, constant latencies), or the named ones in that order."""
    wanted = list(_CASES) if not names else list(names)
    unknown = [n for n in wanted if n not in _CASES]
    if unknown:
        raise ConformError(
            f"--case: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(_CASES)}"
        )
    out = []
    for name in wanted:
        stem, c, seed = _CASES[name]
        sc, note = _case_scenario(stem)
        out.append(ConformCase(name, sc, c, seed, note))
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
) -> dict[str, Any]:
    """Run the bundled loop once under Node against ``base_url``; the driver's JSON result."""
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
    }
    return _node_json("driver.mjs", cfg, timeout_s)


def trace_dict(
    name: str,
    concurrency: int,
    log_rows: Sequence[Sequence[Any]],
    driver_out: dict[str, Any],
    time_scale: float,
) -> dict[str, Any]:
    """The trace (``shared/upstream-traces`` format) of one driver run and the provider's log."""
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
        "tts_concurrency": concurrency if concurrency > 1 else 1,
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
        )
        rows = _provider_log(server.base_url, classroom)
    if driver_out is not None:
        driver_out.update(out)
    d = trace_dict(case.name, case.concurrency, rows, out, time_scale)
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

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkout": self.checkout,
            "time_scale": self.time_scale,
            "tol_s": self.tol_s,
            "ok": self.ok,
            "stubbed": list(self.stubbed),
            "auto_stubbed": list(self.auto_stubbed),
            "missing_names": self.missing_names,
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
        """The report as text: one line per case and side, then the differences."""
        head = (
            f"{'case':<10} {'side':<9} {'reqs':>4} {'retry':>5} {'429':>4} {'5xx':>4} "
            f"{'ttfs_s':>8} {'makespan':>8} {'status':<10} {'failed':<10} result"
        )
        lines = [head]
        for r in self.rows:
            for side, m in (("upstream", r.upstream), ("port", r.port)):
                result = ("ok" if r.ok else f"{len(r.differences)} diff") if side == "port" else ""
                lines.append(
                    f"{r.case:<10} {side:<9} {m['requests']:>4} {m['retries']:>5} "
                    f"{m['http_429']:>4} {m['http_5xx']:>4} {_fmt(m['ttfs_s']):>8} "
                    f"{_fmt(m['makespan_s']):>8} {m['status']!s:<10} "
                    f"{','.join(map(str, m['failed_orders'])) or '-':<10} {result}"
                )
            lines.extend(f"  {r.case}: {d}" for d in r.differences[:20])
            if len(r.differences) > 20:
                lines.append(f"  {r.case}: ... {len(r.differences) - 20} more")
            if r.note:
                lines.append(f"  {r.case}: note: {r.note}")
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _metrics(t: Trace) -> dict[str, Any]:
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


def _conform_case(
    case: ConformCase,
    bundle: Bundle,
    time_scale: float,
    random_u: float,
    tol_s: float,
    out_dir: str | Path | None,
) -> ConformRow:
    from .traces import compare, port_trace

    info: dict[str, Any] = {}
    up = run_case(
        case, bundle, time_scale=time_scale, random_u=random_u, out_dir=out_dir, driver_out=info
    )
    port = port_trace(case.scenario, case.concurrency, seed=case.seed)
    diffs = compare(up, port, tol_s, WALL_REL_TOL)
    notes = [case.note, *(_near_ties(up, port, tol_s) if diffs else [])]
    if info.get("noop_calls"):
        notes.append(f"upstream called no-op stubs: {', '.join(info['noop_calls'])}")
    upstream = {**_metrics(up), "log_warnings": info.get("warnings", 0)}
    return ConformRow(
        case.name,
        case.concurrency,
        upstream,
        _metrics(port),
        tuple(diffs),
        "; ".join(n for n in notes if n),
    )


def conform(
    openmaic_path: str | Path,
    cases: Sequence[ConformCase] | None = None,
    *,
    time_scale: float = 0.15,
    tol_s: float = 1.0,
    random_u: float = 0.5,
    cache_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConformReport:
    """Run every case through upstream's loop (under Node) and the port; compare them."""
    root = check_checkout(openmaic_path)
    chosen = list(cases) if cases is not None else fixed_cases()
    esb = ensure_esbuild(cache_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scenebench-conform-") as tmp:
        bundle = build_bundle(root, tmp, esb)
        for case in chosen:
            if progress is not None:
                progress(case.name)
            rows.append(_conform_case(case, bundle, time_scale, random_u, tol_s, out_dir))
    return ConformReport(
        str(root),
        time_scale,
        tol_s,
        bundle.stubbed,
        bundle.auto_stubbed,
        bundle.missing_names,
        tuple(rows),
    )
