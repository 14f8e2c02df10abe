"""``scenebench sim --upstream runs``: the generation-runs cell on the command line."""

import json
import subprocess
import sys

CMD = [sys.executable, "-m", "runner.cli"]


def sb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120)


def test_sim_upstream_runs_json_has_the_per_run_and_deployment_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    replay = tmp_path / "arrivals.csv"
    replay.write_text("t_s,owner\n0,0\n0,0\n0,0\n30,1\n", encoding="utf-8")
    p = sb(
        "sim",
        "--upstream",
        "runs",
        "--concurrency",
        "2",
        "--key-inflight",
        "4",
        "--arrivals",
        str(replay),
        "--max-concurrent",
        "2",
        "--json",
        "--per-run",
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    s = d["summary"]
    assert s["runs"] == 4 and s["refused"] == 1 and s["llm_inflight"] == 4
    for key in ("runs_per_hour", "p_paused", "first_scene_s", "wait_s", "stall_s"):
        assert key in s
    assert {"p50", "p95", "p99"} <= set(s["first_scene_s"])
    assert [r["state"] for r in d["runs"]][2] == "refused"
    assert d["runs"][3]["wait_s"] >= 0


def test_sim_upstream_runs_table_and_a_bad_flag() -> None:
    p = sb("sim", "--upstream", "runs", "--concurrency", "3", "--runs", "4")
    assert p.returncode == 0, p.stderr
    assert "time to first scene" in p.stdout and "runs/hour" in p.stdout
    bad = sb("sim", "--upstream", "runs", "--concurrency", "3", "--max-concurrent", "0")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "--max-concurrent" in lines[0]


def test_sim_engine_compiled_names_the_compiled_runs_engine_and_refuses_elsewhere() -> None:
    """``--engine compiled``: the compiled runs engine, the same summary as the SimPy model's
    (it is proven equal request for request); where it does not apply (the key-wide gate, a
    classroom profile) one line naming the engine, exit 2."""
    cell = ["sim", "--upstream", "runs", "--runs", "6", "--concurrency", "2", "--json"]
    by = {}
    for engine in ("compiled", "simpy"):
        p = sb(*cell, "--key-inflight", "2", "--engine", engine)
        assert p.returncode == 0, p.stderr
        by[engine] = json.loads(p.stdout)["summary"]
    assert by["compiled"].pop("engine") == "compiled" and by["simpy"].pop("engine") == "simpy"
    assert by["compiled"] == by["simpy"]
    classroom = ["sim", "--upstream", "pr660", "--concurrency", "2"]
    for bad, engine, says in (
        ([*cell, "--adaptive", "gate"], "compiled", "compiled runs engine needs adaptive off"),
        (classroom, "compiled", "compiled is the generation-runs engine"),
        (cell, "fast_quota", "--engine fast_quota: the limited-key engine is for classroom"),
    ):
        p = sb(*bad, "--engine", engine)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and says in lines[0], p.stderr
