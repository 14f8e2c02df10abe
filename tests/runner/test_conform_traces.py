"""The port against traces ``scenebench conform`` recorded at upstream commits.

``tests/fixtures/upstream_traces/<commit>/<case>.json`` are upstream OpenMAIC's own loop (and,
in the ``fg`` cases, the preview page's first-scene calls) at that commit of upstream main,
run under Node against the fake provider by ``scenebench conform --traces`` (README there).
They are measurements of the rules this project corrected: #788 alone runs a scene's clips
one at a time and passes a provider's refusal through (not retried), #1039 runs the first
scene's clips at c. Each must be reproduced by the port under the commit's profile — by the
real pipeline and by the model, on the virtual clock — and not under its neighbour's. No
Node, no network, no checkout.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from runner.experiments.conform import WALL_REL_TOL, fixed_cases
from runner.experiments.traces import compare, load_trace, trace_from_result
from runner.world.run import run
from sim import RunConfig, simulate
from sim.upstream import HISTORY, ErrorShape

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_traces"
# (commit, case, its profile, a neighbouring rule that must not reproduce it)
RECORDED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("243e9f3a", "case1-c3", "pr788", {"upstream": "pr696"}),  # clips at c: #696, later
    ("243e9f3a", "case6-c3", "pr788", {"provider_errors": ErrorShape.ROUTE}),  # 401 as a 500
    ("ceb05adb", "fg1-c3", "pr1039", {"upstream": "pr696"}),  # the first scene's clips one by one
    ("ceb05adb", "fg4-c3", "pr1039", {"upstream": "pr696"}),
]


def _case(name: str, profile: str, **client: Any):
    (case,) = fixed_cases([name], upstream=profile)
    sc = case.scenario
    if "upstream" in client:
        (other,) = fixed_cases([name], upstream=client.pop("upstream"))
        sc = other.scenario
    return case, sc.with_client(**client)


def test_the_traces_are_there_and_name_their_commit() -> None:
    files = sorted(HERE.glob("*/*.json"))
    assert [(p.parent.name, p.stem) for p in files] == sorted((c, n) for c, n, _, _ in RECORDED)
    for commit, _, profile, _ in RECORDED:
        assert HISTORY[profile][1] == commit  # each is the commit its profile is named for


@pytest.mark.parametrize(("commit", "name", "profile", "other"), RECORDED)
def test_the_port_reproduces_upstream_at_the_commit(
    commit: str, name: str, profile: str, other: dict[str, Any]
) -> None:
    ref = load_trace(HERE / commit / f"{name}.json")
    case, sc = _case(name, profile)
    assert ref.concurrency == case.concurrency
    cfg = RunConfig.of("pipelined", case.concurrency, records=True)
    [real] = run(sc, cfg, clock="virtual", seed=case.seed)
    assert compare(ref, trace_from_result(real), 1.0, WALL_REL_TOL) == []
    [model] = simulate(sc, cfg, seed=case.seed)
    assert compare(ref, trace_from_result(model), 1.0, WALL_REL_TOL) == []
    # the neighbouring rule does not
    _, wrong = _case(name, profile, **other)
    [got] = simulate(wrong, cfg, seed=case.seed)
    assert compare(ref, trace_from_result(got), 1.0, WALL_REL_TOL) != []


def test_what_the_traces_show() -> None:
    # derived from the cases' constant latencies (content 25 s, actions 8 s, a clip 2 s, 3
    # clips per scene, 5 outlines, c = 3), read off the recorded requests
    def load(commit: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((HERE / commit / f"{name}.json").read_text("utf-8"))
        return data

    # #788 alone: each scene's 3 clips one after another (2 s apart)
    reqs = load("243e9f3a", "case1-c3")["requests"]
    clips0 = [r["t_arrival_s"] for r in reqs if r["step"] == "tts" and r["order"] == 0]
    assert [round(b - a) for a, b in itertools.pairwise(clips0)] == [2, 2]
    # a 401 from every LLM call: one attempt per content, no retry, every outline failed
    d = load("243e9f3a", "case6-c3")
    assert [(r["step"], r["attempt"], r["status"]) for r in d["requests"]] == [
        ("content", 0, 401)
    ] * 5
    assert d["summary"]["status"] == "paused" and d["summary"]["failed_orders"] == [0, 1, 2, 3, 4]
    # #1039: the first scene's 3 clips at once, each with the page's 3 attempts when all 429
    first = [r for r in load("ceb05adb", "fg1-c3")["requests"] if r["order"] == 0]
    starts = [r["t_arrival_s"] for r in first if r["step"] == "tts"]
    assert len(starts) == 3 and max(starts) - min(starts) < 1.0
    d = load("ceb05adb", "fg4-c3")
    tts = [(r["clip"], r["attempt"]) for r in d["requests"] if r["step"] == "tts"]
    assert sorted(tts) == [(k, a) for k in range(3) for a in range(3)]
    assert d["summary"]["status"] == "first_scene_failed"
