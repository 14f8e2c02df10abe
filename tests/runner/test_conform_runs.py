"""conform on the run-engine era (issue 23): era detection, the comparison with the runs model,
recorded traces of upstream's engine reproduced by the model (no Node, no checkout), and the
driver's plumbing on a stand-in engine written for these tests (tests/fixtures/mini_runs_engine,
scenebench's own code; Node needed, skipped without it)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from runner.cli.commands import main
from runner.experiments import conform_runs as cr
from runner.experiments.conform_checkout import CheckoutError, ConformError, Era, detect_era
from runner.experiments.conform_node import Bundle, HarnessError, ensure_esbuild

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "fixtures" / "mini_runs_engine"
BROWSER = ROOT / "tests" / "fixtures" / "mini_openmaic"
TRACES = ROOT / "tests" / "fixtures" / "runs_engine_traces"


# -- detection (no Node) ---------------------------------------------------------------------
def test_the_engine_era_is_detected_and_checked() -> None:
    assert detect_era(MINI) is Era.RUN_ENGINE
    assert cr.check_engine_checkout(MINI) == MINI.resolve()
    with pytest.raises(CheckoutError, match=r"is not a run-engine checkout \(no lib/server/gen"):
        cr.check_engine_checkout(BROWSER)
    with pytest.raises(CheckoutError, match=r"does not exist$"):
        cr.check_engine_checkout(MINI / "nope")


def test_engine_cases_by_name() -> None:
    assert [c.name for c in cr.engine_cases()] == list(cr.ENGINE_CASES)
    (case,) = cr.engine_cases(["run4-c3"])
    assert (case.concurrency, case.seed, case.scenario.outlines) == (3, 0, 5)
    with pytest.raises(ConformError, match=r"^--case: case1-c0 not a run-engine case; one of "):
        cr.engine_cases(["case1-c0"])


# -- the comparison (no Node) ----------------------------------------------------------------
def _serial_trace(content: float, actions: float, tts: float, clips: int, n: int) -> cr.EngineTrace:
    """The serial scene phase (c = 0, no faults) in closed form: content, actions, then each
    clip one at a time; the next scene's content when the last clip ends."""
    rows, t = [], 0.0
    for k in range(n):
        rows.append((t, t + content, "content", k, 0, 0, 200))
        t += content
        rows.append((t, t + actions, "actions", k, 0, 0, 200))
        t += actions
        for j in range(clips):
            rows.append((t, t + tts, "tts", k, j, 0, 200))
            t += tts
    return cr.EngineTrace(tuple(rows), "completed")


def test_the_model_side_of_the_serial_case_is_the_closed_form() -> None:
    (case,) = cr.engine_cases(["run1-c0"])  # case1: 25 s, 8 s, 2 s, 3 clips, 5 scenes
    model = cr.model_trace(case)
    assert cr.compare_engine(_serial_trace(25.0, 8.0, 2.0, 3, 5), model, tol_s=0.0) == []
    m = model.metrics()
    assert (m["requests"], m["ttfs_s"], m["makespan_s"]) == (25, 39.0, 5 * 39.0)


def test_differences_are_named() -> None:
    base = _serial_trace(25.0, 8.0, 2.0, 3, 2)
    late = cr.EngineTrace(
        tuple((r[0] + 2.0, r[1] + 2.0, *r[2:]) if r[3] == 1 else r for r in base.rows),
        "completed",
    )
    diffs = cr.compare_engine(late, base, tol_s=1.0)
    # scene 1's 5 requests, sent and ended 2 s late: beyond 1 s + 1 % of <= 78 s
    assert len(diffs) == 10
    assert diffs[0] == "request ('content', 1, 0, 0): sent at 41.000 s, model 39.000 s"
    failed = cr.EngineTrace((*base.rows[:-1], (*base.rows[-1][:6], 429)), "paused at x")
    diffs = cr.compare_engine(failed, base)
    assert diffs[0] == "outcome: upstream paused at x, model completed"
    assert diffs[1:] == ["request ('tts', 1, 2, 0): status 429 upstream, 200 model"]
    fewer = cr.EngineTrace(base.rows[:-1], "completed")
    assert cr.compare_engine(fewer, base) == ["request ('tts', 1, 2, 0): model only (status 200)"]


# -- recorded traces of upstream's own engine (no Node, no checkout) -------------------------
def _recorded() -> list[Path]:
    return sorted(TRACES.glob("*.json"))


def test_recorded_traces_exist_for_every_case() -> None:
    assert [p.stem for p in _recorded()] == sorted(cr.ENGINE_CASES)


@pytest.mark.parametrize("path", _recorded(), ids=lambda p: p.stem)
def test_the_runs_model_reproduces_upstreams_engine(path: Path) -> None:
    case, upstream = cr.load_trace(path)
    # recorded with the case's seed (the draws of its latencies): a case changed since must be
    # recorded again, not compared with a trace of the old one
    assert json.loads(path.read_text(encoding="utf-8"))["seed"] == case.seed
    assert cr.compare_engine(upstream, cr.model_trace(case)) == []


def test_the_recorded_traces_tell_the_rules_apart() -> None:
    """Under c = 0 the model of run1-c3 is another schedule: the comparison would see it."""
    case, upstream = cr.load_trace(TRACES / "run1-c3.json")
    serial = cr.EngineCase(case.name, case.scenario, 0, case.seed)
    assert cr.compare_engine(upstream, cr.model_trace(serial)) != []


# -- the driver on the stand-in engine (Node) ------------------------------------------------
@pytest.fixture(scope="session")
def esbuild_dir() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node not on PATH")
    try:
        return ensure_esbuild()
    except ConformError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"esbuild could not be installed here: {e}")


@pytest.fixture(scope="session")
def mini_engine(esbuild_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return cr.build_engine_bundle(MINI, tmp_path_factory.mktemp("engine"), esbuild_dir)


def test_the_bundle_uses_the_stand_ins(mini_engine: Bundle) -> None:
    assert "lib/server/generation/run/store" in mini_engine.stubbed
    assert "lib/server/generation/run/document" in mini_engine.stubbed
    assert "lib/server/generation/run/engine.ts" in mini_engine.inputs
    # a name the stand-in store lacks is listed (a harness error only if the run uses it)
    assert mini_engine.missing_names == {
        "lib/server/generation/run/store": ["readGenerationRunLeaseOwner"]
    }


@pytest.mark.wallclock  # real sockets at a time scale: a quiet core
def test_the_stand_in_engine_equals_the_model_when_clips_fail(mini_engine: Bundle) -> None:
    (case,) = cr.engine_cases(["run4-c0"])
    out: dict[str, object] = {}
    upstream = cr.run_engine_case(case, mini_engine, time_scale=0.1, driver_out=out)
    assert out["outcome"] == "paused" and out["step"] == "scene:0:narration"
    assert cr.compare_engine(upstream, cr.model_trace(case)) == []
    # scene 0 gets 2 retries: 3 attempts of clip 0, sleeps 1.1 s and 2.2 s (U = 0.5)
    tts = [r for r in upstream.rows if r[2] == "tts"]
    assert [(r[4], r[5], r[6]) for r in tts] == [(0, 0, 429), (0, 1, 429), (0, 2, 429)]


def test_a_missing_stand_in_the_run_uses_is_a_harness_error(mini_engine: Bundle) -> None:
    (case,) = cr.engine_cases(["run4-c0"])
    with pytest.raises(HarnessError, match=r"store:readGenerationRunLeaseOwner"):
        cr.run_engine_case(case, mini_engine, time_scale=0.1, run_input={"SB_TOUCH_UNSTUBBED": 1})


@pytest.mark.wallclock  # the case on real sockets at time scale 0.1, as above: a quiet core
def test_cli_routes_the_engine_era_and_a_harness_error_is_one_line(
    esbuild_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["conform", "--openmaic", str(MINI), "--case", "run4-c0", "--time-scale", "0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "profile runs" in out and "run4-c0    model" in out
    assert re.search(r"1 of 1 cases equal", out)
    broken = tmp_path / "engine"
    shutil.copytree(MINI, broken)
    src = broken / "lib/server/generation/run/engine.ts"
    text = src.read_text(encoding="utf-8").replace("if (run.input.SB_TOUCH_UNSTUBBED)", "if (1)")
    src.write_text(text, encoding="utf-8")
    assert main([*argv[:2], str(broken), *argv[3:], "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == (
        "scenebench: error: harness: upstream's engine used 1 name(s) that scenebench does not "
        "stand in for: lib/server/generation/run/store:readGenerationRunLeaseOwner; add them to "
        "their stand-in in runner/experiments/conform_js/runs_stubs"
    )
