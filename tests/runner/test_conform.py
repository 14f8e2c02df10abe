"""``scenebench conform``: bundling, stubs, the Node driver and the CLI, on a mini checkout.

No OpenMAIC checkout is needed: ``tests/fixtures/mini_openmaic`` is a small TypeScript module of
scenebench's own with the same shape. Tests that run Node skip when ``node`` is not on PATH;
esbuild is installed once (npm) into the default cache (``$SCENEBENCH_CACHE`` if set).
Expected times are derived from the scenarios' constant latencies; every tolerance is in model
seconds (the provider runs on a real socket, so the harness adds a little per hop).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli.commands import main
from runner.experiments import conform as cf
from runner.experiments import conform_node as cn
from runner.experiments.conform import Bundle, ConformCase, ConformError, HarnessError
from runner.experiments.conform_checkout import ENGINE, Era, detect_era, detect_profile
from sim.draws import KIND_5XX, Draws
from sim.scenario import Quota
from tests.conftest import const_scenario

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini_openmaic"
TOL_S = 1.0  # model seconds, as conform's own tolerance
HOP_S = 0.3  # model seconds for one client hop (~0.03 at time scale 0.15; loaded machines more)

needs_node = pytest.mark.skipif(
    shutil.which("node") is None, reason="node not on PATH (conform needs Node >= 18; CI has 20)"
)


@pytest.fixture(scope="session")
def esbuild_dir() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node not on PATH")
    try:
        return cf.ensure_esbuild()
    except ConformError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"esbuild could not be installed here: {e}")


@pytest.fixture(scope="session")
def mini_bundle(esbuild_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return cf.build_bundle(MINI, tmp_path_factory.mktemp("bundle"), esbuild_dir)


def _checkout(tmp: Path, source: str) -> Path:
    entry = tmp / cf.ENTRY
    entry.parent.mkdir(parents=True)
    entry.write_text(source, encoding="utf-8")
    return tmp


def _schedule(n: int, content: float, actions: float, tts: float, clips: int) -> list[Any]:
    """Expected (step, order, clip, arrival) of the mini loop (serial, one clip at a time)."""
    out, t = [], 0.0
    for o in range(n):
        out.append(("content", o, 0, t))
        t += content
        out.append(("actions", o, 0, t))
        t += actions
        for k in range(clips):
            out.append(("tts", o, k, t))
            t += tts
    return out


# -- bundling ----------------------------------------------------------------------------------
@needs_node
def test_bundle_maps_stubbed_imports_and_keeps_the_checkout_modules(mini_bundle: Bundle) -> None:
    assert set(mini_bundle.stubbed) == {
        "react",
        "sonner",
        "@/lib/store/stage",
        "@/lib/store/settings",
        "@/lib/utils/model-config",
        "@/lib/logger",
    }
    # a package that is not installed becomes a recorded no-op, and is reported
    assert mini_bundle.auto_stubbed == ("scenebench-absent-analytics",)
    assert mini_bundle.missing_names == {}
    # '@/' resolves to the checkout root and the workspace package to its TypeScript source
    # (its package.json names dist/index.js, which does not exist): both bundled as they are
    assert mini_bundle.workspace == {"@mini/retry": "packages/mini-retry/src/index.ts"}
    own = {p for p in mini_bundle.inputs if not p.startswith("..") and "conform_js" not in p}
    assert own == {
        "lib/hooks/use-scene-generator.ts",
        "lib/utils/ids.ts",
        "packages/mini-retry/src/index.ts",
    }
    text = mini_bundle.path.read_text(encoding="utf-8")
    # both determinism hooks replace references as well as calls
    assert "Math.random" not in text and "globalThis.__sbRandom" in text
    assert "globalThis.__sbSetTimeout" in text


@needs_node
def test_a_name_the_stub_lacks_becomes_a_recorded_noop(esbuild_dir: Path, tmp_path: Path) -> None:
    src = (
        "import { useStageStore, selectSomethingNew } from '@/lib/store/stage';\n"
        "export function useSceneGenerator() {\n"
        "  const run = async () => selectSomethingNew(useStageStore.getState());\n"
        "  return { generateRemaining: run };\n"
        "}\n"
    )
    root = _checkout(tmp_path / "co", src)
    b = cf.build_bundle(root, tmp_path, esbuild_dir)
    assert b.missing_names == {"@/lib/store/stage": ["selectSomethingNew"]}
    assert b.path.is_file()
    # the run calls it: a harness error naming it, not a result
    case = ConformCase("x", const_scenario(n=1), 0)
    want = r"@/lib/store/stage:selectSomethingNew; add them to their stub in runner/"
    with pytest.raises(HarnessError, match=want) as ei:
        cf.run_case(case, b, time_scale=0.2)
    assert "\n" not in str(ei.value)


def _mini_without_workspace(tmp: Path) -> Path:
    """The mini checkout as a checkout without its pnpm-workspace.yaml: its retry helper's
    package (@mini/retry) cannot be found (nothing is installed), so it is auto-stubbed."""
    root = tmp / "mini"
    shutil.copytree(MINI, root)
    (root / "pnpm-workspace.yaml").unlink()
    return root


@needs_node
def test_an_auto_stubbed_name_the_run_uses_is_a_harness_error_not_a_difference(
    esbuild_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # upstream's case at 2cbe4ae2 before workspace packages were resolved: the retry helper
    # became a recorded no-op, and the loop ran on without it
    root = _mini_without_workspace(tmp_path)
    b = cf.build_bundle(root, tmp_path, esbuild_dir)
    assert "@mini/retry" in b.auto_stubbed and b.workspace == {}
    assert main(["conform", "--openmaic", str(root), "--case", "case1-c0", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no report, no row of differences
    assert err.count("\n") == 1, err
    assert err.startswith(
        "scenebench: error: harness: upstream used 1 name(s) that scenebench does not stub: "
        "@mini/retry:retrying; @mini/retry could not be found: make it resolvable (a pnpm "
        "workspace package"
    )


@needs_node
def test_a_build_error_is_one_line(esbuild_dir: Path, tmp_path: Path) -> None:
    root = _checkout(tmp_path / "co", "export function useSceneGenerator( {\n")
    with pytest.raises(ConformError, match=r"^build\.mjs: .*use-scene-generator\.ts:\d+: ") as ei:
        cf.build_bundle(root, tmp_path, esbuild_dir)
    assert "\n" not in str(ei.value)


def test_the_stub_table_is_documented() -> None:
    table = (ROOT / "runner" / "experiments" / "conform_js" / "build.mjs").read_text(
        encoding="utf-8"
    )
    body = table.split("export const STUBS = {", 1)[1].split("};", 1)[0]
    names = re.findall(r"^\s*'?([@\w/.*-]+)'?:\s*'[\w.-]+\.mjs',", body, re.M)
    assert "react" in names and "@/lib/store/stage" in names and "@openmaic/storage/*" in names
    doc = (ROOT / "docs" / "conform.md").read_text(encoding="utf-8")
    assert [n for n in names if f"`{n}`" not in doc] == []
    stubs = ROOT / "runner" / "experiments" / "conform_js" / "stubs"
    for f in re.findall(r":\s*'([\w.-]+\.mjs)',", body):
        assert (stubs / f).is_file(), f


# -- the driver against the fake provider -------------------------------------------------------
@pytest.mark.wallclock  # real sleeps at a time scale, timed one-sidedly: a quiet core
@needs_node
def test_the_driver_runs_the_loop_and_the_trace_has_the_expected_requests(
    mini_bundle: Bundle,
) -> None:
    n, content, actions, tts, clips = 2, 2.0, 1.0, 0.5, 2
    sc = const_scenario(n=n, content=content, actions=actions, tts=tts, clips=clips)
    # time scale 0.4: a hop of HOP_S is 120 ms of real time (at 0.2, a 96 ms hop under a
    # neighbour's load failed it), still below the 0.5 model s a wrong wait would add
    t = cf.run_case(ConformCase("mini", sc, 0), mini_bundle, time_scale=0.4, classroom=7)
    want = _schedule(n, content, actions, tts, clips)
    got = [(r.step, r.order, r.clip, r.attempt, r.status) for r in t.requests]
    # every clip reached the provider under its own (order, clip): the audioId adapter works
    assert got == [(s, o, k, 0, 200) for s, o, k, _ in want]
    prev_end = 0.0
    for r, (*_, t_arr) in zip(t.requests, want, strict=True):
        assert r.t_arrival_s == pytest.approx(t_arr, abs=TOL_S)
        # each request leaves as soon as the one before it is answered (one hop later)
        assert 0.0 <= r.t_arrival_s - prev_end <= HOP_S
        lat = {"content": content, "actions": actions, "tts": tts}[r.step]
        assert r.t_end_s - r.t_arrival_s == pytest.approx(lat, abs=1e-6)
        prev_end = r.t_end_s
    per_scene = content + actions + clips * tts
    s = t.summary
    assert (s.status, s.scene_order, s.failed_orders) == ("completed", (0, 1), ())
    assert s.ttfs_s == pytest.approx(per_scene, abs=TOL_S)
    assert s.makespan_s == pytest.approx(n * per_scene, abs=TOL_S)
    assert (t.concurrency, t.tts_concurrency, t.recorded_time_scale) == (0, 1, 0.4)


@pytest.mark.wallclock  # real sleeps at a time scale, timed one-sidedly: a quiet core
@needs_node
@pytest.mark.parametrize("u", [0.0, 0.5])
def test_set_timeout_is_scaled_and_math_random_pinned(mini_bundle: Bundle, u: float) -> None:
    # every LLM attempt is a 429: the mini retry helper waits 1 s * 2^n plus delay * u
    sc = const_scenario(n=2, content=2.0, actions=1.0, tts=0.5, clips=1, quota_llm=Quota(p_429=1.0))
    t = cf.run_case(ConformCase("retry", sc, 0), mini_bundle, time_scale=0.1, random_u=u)
    assert [(r.step, r.order, r.attempt, r.status) for r in t.requests] == [
        ("content", 0, a, 429) for a in range(3)
    ]
    gaps = [b.t_arrival_s - a.t_arrival_s for a, b in zip(t.requests, t.requests[1:], strict=False)]
    # in model seconds: unscaled sleeps would show up as gaps of 10 and 20 (1/0.1 times longer).
    # Hop overhead varies a little either way and only grows on a loaded machine.
    for gap, want in zip(gaps, [1.0 * (1 + u), 2.0 * (1 + u)], strict=True):
        assert want - HOP_S <= gap <= want + TOL_S
    assert (t.summary.status, t.summary.failed_orders, t.summary.scene_order) == (
        "paused",
        (0,),
        (),
    )
    assert t.summary.ttfs_s is None and t.summary.makespan_s is None


@pytest.mark.wallclock  # real sleeps at a time scale, timed one-sidedly: a quiet core
@needs_node
def test_conform_on_a_small_case_equal_to_the_port(tmp_path: Path) -> None:
    sc = const_scenario(n=2, content=2.0, actions=1.0, tts=0.5, clips=2)
    rep = cf.conform(MINI, [ConformCase("small", sc, 0)], time_scale=0.2, out_dir=tmp_path)
    assert rep.ok, rep.table()
    (row,) = rep.rows
    assert row.upstream["request_order"] == row.port["request_order"]
    assert row.upstream["requests"] == 2 * (2 + 2)
    # the auto-stubbed package is never called: no harness error, and no note
    assert rep.auto_stubbed == ("scenebench-absent-analytics",) and row.note == ""
    assert row.upstream["log_warnings"] == 0
    saved = json.loads((tmp_path / "small.json").read_text(encoding="utf-8"))
    assert set(saved) == {
        "case",
        "concurrency",
        "tts_concurrency",
        "recorded_time_scale",
        "summary",
        "requests",
    }
    table = rep.table()
    assert "small" in table and json.dumps(rep.to_json())
    # the table names the profile (the mini loop has no bounded map: v0.2.1) and the build
    assert f"checkout {MINI.resolve()} · profile v0.2.1 (detected: " in table.splitlines()[0]
    assert "auto_stubbed (not found, unused by the run): scenebench-absent-analytics" in table
    assert "missing_names (not in their stub, unused by the run): none" in table


# -- trace format, cases, esbuild and Node checks (no Node needed) -----------------------------
def test_trace_dict_converts_the_provider_log() -> None:
    t0 = 5_000_000
    rows = [
        (0, 0, 1, 0, 0, "llm-key", t0 + 250_000, t0 + 250_000, t0 + 25_250_000, 200, 0, "ok"),
        (0, 2, 1, 2, 3, "tts-key", t0 + 30_000_000, t0 + 30_000_000, t0 + 30_000_000, 429, 1, "x"),
    ]
    out = {"t0_us": t0, "status": "completed", "scene_order": [1], "scene_ready_s": [31.5]}
    d = cf.trace_dict("x", 3, rows, out, 0.15)
    assert d["requests"] == [
        {
            "step": "content",
            "order": 1,
            "clip": 0,
            "attempt": 0,
            "t_arrival_s": 0.25,
            "t_end_s": 25.25,
            "status": 200,
        },
        {
            "step": "tts",
            "order": 1,
            "clip": 2,
            "attempt": 3,
            "t_arrival_s": 30.0,
            "t_end_s": 30.0,
            "status": 429,
        },
    ]
    assert d["tts_concurrency"] == 3 and d["recorded_time_scale"] == 0.15
    assert d["summary"] == {
        "ttfs_s": 31.5,
        "makespan_s": 31.5,
        "status": "completed",
        "failed_orders": [],
        "scene_order": [1],
        "scene_ready_s": [31.5],
    }


def test_the_fixed_cases() -> None:
    cases = cf.fixed_cases(upstream="pr1039")
    got = {c.name: (c.concurrency, c.scenario.outlines, c.foreground) for c in cases}
    assert got == {
        "case1-c0": (0, 5, False),
        "case1-c3": (3, 5, False),
        "case2-c2": (2, 5, False),
        "case2-c3": (3, 5, False),
        "case3-c0": (0, 5, False),
        "case3-c3": (3, 5, False),
        "case4-c0": (0, 5, False),
        "case5-c3": (3, 5, False),
        "case6-c3": (3, 5, False),
        "fg1-c3": (3, 5, True),
        "fg4-c3": (3, 5, True),
    }
    by = {c.name: c.scenario for c in cases}
    assert by["case2-c2"].quota_llm.max_inflight == 2
    assert by["case3-c0"].quota_llm.p_429 == 1.0 and by["case4-c0"].quota_tts.p_429 == 1.0
    assert (by["case6-c3"].quota_llm.p_5xx, by["case6-c3"].quota_llm.status_5xx) == (1.0, 401)
    # the port runs the profile, the case's foreground rule, the driver's jitter
    for c in cases:
        client = c.scenario.client
        assert (client.upstream, client.foreground_first_scene) == ("pr1039", c.foreground)
        assert client.jitter_u == 0.5
    # the first scene's cases need a page that calls the loop's exports (#1039 and later)
    assert [c.name for c in cf.fixed_cases(upstream="pr788")] == list(got)[:9]
    with pytest.raises(ConformError, match=r"^--case: unknown 'nope'; allowed: case1-c0"):
        cf.fixed_cases(["nope"])


def test_case5_seed_fails_exactly_one_content_for_good() -> None:
    (case,) = cf.fixed_cases(["case5-c3"])
    sc, p = case.scenario, case.scenario.quota_llm.p_5xx
    d = Draws(sc, case.seed, 0, 1)

    def fails(step: int, order: int, attempt: int) -> bool:
        return bool(d.fault_u(step, attempt, KIND_5XX)[0, d.column(step, order, 0)] < p)

    assert [o for o in range(5) if all(fails(0, o, a) for a in range(6))] == [2]
    assert not any(fails(0, o, 0) for o in range(5) if o != 2)
    assert not any(fails(1, o, 0) for o in range(5))


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCENEBENCH_CACHE", str(tmp_path / "sb"))
    assert cf.default_cache_dir() == tmp_path / "sb"
    monkeypatch.delenv("SCENEBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cf.default_cache_dir() == tmp_path / "xdg" / "scenebench" / "node"


@pytest.fixture
def no_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = shutil.which
    monkeypatch.setattr(cn.shutil, "which", lambda n: None if n == "node" else real(n))
    yield


def test_missing_node_is_one_clear_error(no_node: None, tmp_path: Path) -> None:
    with pytest.raises(ConformError, match=r"^node: not found on PATH; conform needs Node >= 18"):
        cf.ensure_esbuild(tmp_path)


def test_old_node_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cn.shutil, "which", lambda n: f"/usr/bin/{n}")

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 0, stdout="v16.20.2\n", stderr="")

    monkeypatch.setattr(cn.subprocess, "run", fake_run)
    with pytest.raises(ConformError, match=r"version v16\.20\.2 found; conform needs Node >= 18"):
        cf.ensure_esbuild(tmp_path)


@needs_node
def test_an_installed_esbuild_is_not_installed_again(
    esbuild_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which
    monkeypatch.setattr(cn.shutil, "which", lambda n: None if n == "npm" else real(n))
    assert cf.ensure_esbuild(esbuild_dir.parent.parent) == esbuild_dir


# -- the CLI -----------------------------------------------------------------------------------
def _one_line_error(capsys: pytest.CaptureFixture[str], pattern: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(pattern, err), err


def test_cli_bad_checkout_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["conform", "--openmaic", str(tmp_path)]) == 2
    _one_line_error(capsys, r"scenebench: error: --openmaic: .* is not an OpenMAIC checkout")


def test_cli_unknown_case_and_bad_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--openmaic", str(MINI), "--case", "nope"]) == 2
    _one_line_error(capsys, r"scenebench: error: --case: unknown 'nope'")
    assert main(["conform", "--openmaic", str(MINI), "--time-scale", "0"]) == 2
    _one_line_error(capsys, r"scenebench conform: error: --time-scale must be a number > 0")


def test_cli_without_node_is_one_line_exit_2(
    no_node: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conform", "--openmaic", str(MINI), "--case", "case3-c0"]) == 2
    _one_line_error(capsys, r"scenebench: error: node: not found on PATH")


@needs_node
def test_cli_exits_1_on_a_difference(esbuild_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the mini loop's own retry rule (2 retries, 100 % jitter) is not the port's
    args = ["conform", "--openmaic", str(MINI), "--case", "case3-c0", "--time-scale", "0.05"]
    args += ["--upstream", "pr696"]
    assert main([*args, "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    (row,) = rep["rows"]
    assert rep["ok"] is False and row["ok"] is False and row["differences"]
    assert row["upstream"]["requests"] == 3 and row["upstream"]["status"] == "paused"
    assert rep["auto_stubbed"] == ["scenebench-absent-analytics"]


def test_public_names_exist() -> None:
    for name in cf.__all__:
        assert hasattr(cf, name), name


def _trace(rows: list[tuple[int, int, int, float, float, int]]) -> Any:
    log = [
        (0, s, o, 0, a, "k", round(t0 * 1e6), 0, round(t1 * 1e6), st, 0, "")
        for s, o, a, t0, t1, st in rows
    ]
    d = cf.trace_dict("t", 2, log, {"t0_us": 0}, 0.15)
    return cf._to_trace(d, None)


def test_status_differences_at_a_near_tie_are_flagged() -> None:
    up = _trace(
        [(1, 0, 0, 25.1, 33.1, 200), (0, 3, 3, 32.93, 32.93, 429), (0, 4, 0, 1.0, 1.0, 429)]
    )
    port = _trace(
        [(1, 0, 0, 25.0, 33.0, 200), (0, 3, 3, 32.9, 57.9, 200), (0, 4, 0, 1.0, 26.0, 200)]
    )
    (note,) = cf._near_ties(up, port, 1.0)
    assert note.startswith("content 3/0 attempt 3 arrived 0.170 model s from a slot freeing")


# -- what conform reads of a checkout (no Node needed) -----------------------------------------
def _touch(root: Path, rel: str, text: str = "") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return root


def test_checkout_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConformError, match=r"^--openmaic: '.*/nope' does not exist$"):
        cf.check_checkout(tmp_path / "nope")
    with pytest.raises(ConformError, match=r"is not an OpenMAIC checkout \(no lib/hooks/use-sc"):
        cf.check_checkout(tmp_path)
    engine = _touch(tmp_path / "runs", ENGINE)
    assert detect_era(engine) is Era.RUN_ENGINE
    with pytest.raises(ConformError, match=r"is a run-engine era checkout .*not supported yet"):
        cf.check_checkout(engine)
    both = _touch(_touch(tmp_path / "both", ENGINE), cf.ENTRY)  # a transition: the loop drives
    assert detect_era(both) is Era.BROWSER_LOOP and cf.check_checkout(both) == both.resolve()


# Each change that defines a profile added one marker to the loop's source (the identifiers
# below; the sources are scenebench's own one-liners, not upstream's).
_MARKERS = [
    ("", "v0.2.1"),
    ("lazyBoundedMap(x); parallelSceneConcurrency;", "pr660"),
    ("lazyBoundedMap(x); withGenerationRetry(f); parallelSceneConcurrency;", "pr788"),
    (
        "lazyBoundedMap withGenerationRetry parallelSceneConcurrency parallelSceneConcurrency",
        "pr696",
    ),
    (
        "lazyBoundedMap withGenerationRetry parallelSceneConcurrency parallelSceneConcurrency\n"
        "export async function generateTTSForScene() {}",
        "pr1039",
    ),
]


@pytest.mark.parametrize(("source", "want"), _MARKERS)
def test_the_profile_is_detected_from_the_loops_markers(
    tmp_path: Path, source: str, want: str
) -> None:
    found = detect_profile(_touch(tmp_path, cf.ENTRY, source))
    assert found.profile == want and found.markers
    assert found.describe().startswith(f"{want} (detected: ")


@needs_node
def test_workspace_packages_resolve_through_exports_to_their_source(
    esbuild_dir: Path, tmp_path: Path
) -> None:
    # exports with a subpath pattern, a tsconfig with its own outDir/rootDir (JSONC), a
    # negated glob, and a package whose dist is missing: all from the TypeScript source
    root = tmp_path / "co"
    _touch(root, "pnpm-workspace.yaml", "packages:\n  - 'libs/**'\n  - '!libs/skip'\n")
    pkg = {"name": "@x/util", "exports": {"./parts/*": {"import": "./out/parts/*.js"}}}
    _touch(root, "libs/util/package.json", json.dumps(pkg))
    _touch(
        root,
        "libs/util/tsconfig.json",
        '{"compilerOptions": {"outDir": "out", "rootDir": "ts",}, /* a comment */}',
    )
    _touch(root, "libs/util/ts/parts/clock.ts", "export const tick = (): number => 7;\n")
    _touch(root, "libs/skip/package.json", json.dumps({"name": "@x/skip", "main": "a.ts"}))
    _touch(root, "libs/skip/a.ts", "export const never = 1;\n")
    src = (
        "import { tick } from '@x/util/parts/clock';\n"
        "import { never } from '@x/skip';\n"
        "export function useSceneGenerator() {\n"
        "  return { generateRemaining: async () => tick() + never };\n"
        "}\n"
    )
    _touch(root, cf.ENTRY, src)
    b = cf.build_bundle(root, tmp_path, esbuild_dir)
    assert b.workspace == {"@x/util/parts/clock": "libs/util/ts/parts/clock.ts"}
    assert "libs/util/ts/parts/clock.ts" in b.inputs
    assert b.auto_stubbed == ("@x/skip",)  # excluded by the negated glob: not found


@needs_node
def test_a_foreground_case_needs_the_loops_exports(
    mini_bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    (case,) = cf.fixed_cases(["fg1-c3"], upstream="pr1039")
    with pytest.raises(
        ConformError, match=r"foreground: the checkout's scene loop exports no"
    ) as ei:
        cf.run_case(case, mini_bundle, time_scale=0.2)
    assert "\n" not in str(ei.value) and not isinstance(ei.value, HarnessError)


@needs_node
@pytest.mark.wallclock  # two checkouts' runs on real sleeps at time scale 0.1: a quiet core
def test_against_compares_two_checkouts_on_the_same_cases(
    esbuild_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every LLM attempt a 429: the mini loop's retry helper makes 1 + 2 requests; a copy whose
    # loop allows 1 retry makes 1 + 1 — the change shows as b's differences against a
    same = tmp_path / "same"
    shutil.copytree(MINI, same)
    fewer = tmp_path / "fewer"
    shutil.copytree(MINI, fewer)
    loop = fewer / cf.ENTRY
    src = loop.read_text(encoding="utf-8")
    assert "retries: 2," in src
    loop.write_text(src.replace("retries: 2,", "retries: 1,"), encoding="utf-8")
    args = ["conform", "--openmaic", str(MINI), "--case", "case3-c0", "--time-scale", "0.1"]
    assert main([*args, "--against", str(same)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"a = {MINI.resolve()} (v0.2.1) · b = {same.resolve()} (v0.2.1)")
    assert main([*args, "--against", str(fewer), "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    # both sides detect v0.2.1 (no bounded map), whose routes retry like the AI SDK: each of
    # the loop's requests is 1 + 2 provider attempts
    assert (row["upstream"]["requests"], row["port"]["requests"]) == (3 * 3, 2 * 3)
    assert sum(d.startswith("missing request ('content', 0, 0, ") for d in row["differences"]) == 3
    assert main([*args, "--against", str(MINI)]) == 2
    _one_line_error(capsys, r"scenebench: error: --against: .* is the --openmaic checkout itself")


# scenebench's own statement of #788's rule in TypeScript (not upstream's code): the status of
# the AI SDK's call error, unwrapped from a retry error, passed through; none: 500
_PASS_THROUGH = """
import { APICallError, RetryError } from 'ai';
import { NextResponse } from 'next/server';
function statusOf(e: unknown): number | undefined {
  if (RetryError.isInstance(e)) return statusOf((e as { lastError: unknown }).lastError);
  if (!APICallError.isInstance(e)) return undefined;
  const s = (e as { statusCode?: number }).statusCode;
  return s !== undefined && s >= 400 && s <= 599 ? s : undefined;
}
export function llmApiError(e: unknown) {
  const s = statusOf(e);
  const code = s === undefined ? 'INTERNAL_ERROR' : s === 429 ? 'RATE_LIMITED' : 'UPSTREAM_ERROR';
  return NextResponse.json({ success: false, errorCode: code, error: 'x' }, { status: s ?? 500 });
}
"""
_ALWAYS_500 = """
import { NextResponse } from 'next/server';
export function llmApiError(_e: unknown) {
  return NextResponse.json({ success: false, errorCode: 'GENERATION_FAILED' }, { status: 500 });
}
"""


@needs_node
def test_the_route_probe_compares_upstreams_error_mapping_with_the_fake_providers(
    esbuild_dir: Path, tmp_path: Path
) -> None:
    from runner.experiments.conform_routes import ROUTE_ERRORS, ROUTE_STATUSES, route_differences

    assert route_differences(MINI, esbuild_dir) is None  # no llmApiError: before #788
    same = _touch(_touch(tmp_path / "same", cf.ENTRY, "export {};\n"), ROUTE_ERRORS, _PASS_THROUGH)
    assert route_differences(same, esbuild_dir) == ()
    old = _touch(_touch(tmp_path / "old", cf.ENTRY, "export {};\n"), ROUTE_ERRORS, _ALWAYS_500)
    diffs = route_differences(old, esbuild_dir)
    # every probed status and "none" differ (a 500 GENERATION_FAILED is not INTERNAL_ERROR),
    # each bare and in a retry error
    assert diffs is not None and len(diffs) == 2 * (len(ROUTE_STATUSES) + 1)
    assert (
        "provider 401 (bare): upstream's route answers 500 GENERATION_FAILED, the fake "
        in (diffs[2])
    )


def test_the_port_side_runs_as_upstreams_loop_does() -> None:
    # v0.2.1 has no knob: its loop is serial whatever c the settings hold. Case 5 (seed 644)
    # fails outline 2's content for good: serially the loop pauses there, after scenes 0 and
    # 1 of C + A + 3T = 39 s each; the makespan is the last scene added (78 s), not the
    # moment the loop gave up on outline 2
    (case,) = cf.fixed_cases(["case5-c3"], upstream="v0.2.1")
    t = cf.port_side(case)
    assert (t.status, t.scene_order, t.failed_orders) == ("paused", (0, 1), (2,))
    assert t.makespan_s == pytest.approx(2 * (25.0 + 8.0 + 3 * 2.0))
    assert max(r.t_end_s for r in t.requests) > t.makespan_s
    # pr660 on: the knob's c — pipelined, every other outline's scene still made
    (case,) = cf.fixed_cases(["case5-c3"], upstream="pr660")
    assert cf.port_side(case).scene_order == (0, 1, 3, 4)
