"""Generation runs in the real world (issue 22, item 2): the asyncio + httpx driver of the run and
server machines against the fake provider's ``/v1`` endpoints, under the virtual clock.

Identity with the SimPy model is checked cell by cell; the check is shown to fail on a perturbed
real world; and the real world alone is held to rules derived by hand (a deadline is a real
abort that frees the slot only when the provider does; an answer at its deadline is in time).
"""

from __future__ import annotations

import dataclasses

import pytest

from runner.cli.commands import main
from runner.experiments import runs_exact as rx
from runner.world.runs_port import PortRun, run_runs_real
from sim.dists import Constant
from sim.rules import Step
from sim.runs import RunsConfig, RunsSettings
from sim.scenario import Scenario, load_scenario

US = 1_000_000


def _cells(*names: str) -> list[rx.Cell]:
    cells = {c[0]: c for c in rx.exact_cells()}
    return [cells[n] for n in names]


@pytest.mark.parametrize(
    "name",
    ["limited-key", "deadlines", "refused", "countdown", "faults-free", "deadline-tie"],
)
def test_real_world_equals_the_model_request_for_request(name: str) -> None:
    rep = rx.validate_runs_exact(_cells(name), runs=1)
    assert rep.ok, rep.divergences
    assert rep.cells == 1 and rep.requests > 50


def test_the_cells_cover_what_validate_promises() -> None:
    """Several runs on one limited key, arrivals against the cap, deadlines firing (504 and a
    pause's abort), refused starts, injected statusless answers: each happens somewhere."""
    seen: dict[str, set[int]] = {}
    refused = 0
    for name, sc, cfg, seed in rx.exact_cells():
        m = rx.model_side(sc, cfg, seed)
        seen[name] = {row[6] for row in m.result.log}
        refused += sum(r.refused for r in m.result.records)
    statuses = set().union(*seen.values())
    assert {200, 429, 504, -3, -1} <= statuses
    assert refused >= 1
    assert 504 in seen["deadlines"] and 429 in seen["limited-key"]


def _perturbed(field: str) -> PortRun:
    _, sc, cfg, seed = _cells("limited-key")[0]
    out = run_runs_real(sc, cfg, seed)
    if field == "request":
        log = sorted(out.result.log)
        row = log[len(log) // 2]
        log[len(log) // 2] = (*row[:8], row[8] + 1)  # one request ends 1 µs later
        return PortRun(dataclasses.replace(out.result, log=log), out.provider_log)
    if field == "provider":
        rows = sorted(out.provider_log)
        rows[3] = (*rows[3][:10], rows[3][10] + 1, *rows[3][11:])  # one more in flight
        return PortRun(out.result, rows)
    recs = list(out.result.records)
    recs[0] = dataclasses.replace(recs[0], stalls=recs[0].stalls + 1)
    return PortRun(dataclasses.replace(out.result, records=recs), out.provider_log)


@pytest.mark.parametrize(
    ("field", "words"),
    [("request", "request row"), ("provider", "provider row"), ("record", "run 0 stalls")],
)
def test_a_perturbed_real_world_is_a_divergence(field: str, words: str) -> None:
    bad = _perturbed(field)
    rep = rx.validate_runs_exact(_cells("limited-key"), runs=1, real=lambda *_: bad)
    assert not rep.ok
    assert "cell limited-key" in rep.divergences[0] and words in rep.divergences[0]


def _one_slot_slow(free: bool) -> tuple[Scenario, RunsConfig]:
    """One run on an LLM key of one slot whose every content call takes 320 s (> the 300 s
    deadline); serial (c = 0), agents from presets."""
    base = load_scenario("default", upstream="runs").with_quota(llm_inflight=1)
    sc = base.replace(content=Constant(320.0), content_by_type={})
    st = RunsSettings(free_on_give_up=free, agents_mode="preset")
    return sc, RunsConfig(0, arrivals=((0.0, 0),), settings=st)


def _content0(out: PortRun) -> tuple[list[tuple[int, ...]], list[tuple[object, ...]]]:
    client = sorted(r for r in out.result.log if r[2] == Step.CONTENT and r[3] == 0)
    prov = sorted(
        (r for r in out.provider_log if r[1] == Step.CONTENT and r[2] == 0), key=lambda r: r[4]
    )
    return client, prov


def test_a_deadline_aborts_the_request_and_a_provider_that_notices_frees_the_slot() -> None:
    """Scene 0's content, 3 attempts (first-scene budget): each is given up on at exactly
    sent + 300 s (504). The provider frees the slot when the client goes away, so each retry is
    admitted (0 in flight) and times out too; the run pauses at scene:0:content with 504."""
    sc, cfg = _one_slot_slow(free=True)
    out = run_runs_real(sc, cfg)
    client, prov = _content0(out)
    assert [r[6] for r in client] == [504, 504, 504]
    assert all(r[8] - r[0] == 300 * US for r in client)
    assert [(r[9], r[10]) for r in prov] == [(200, 0)] * 3  # admitted; nobody else in flight
    rec = out.result.records[0]
    assert (rec.state, rec.paused_at, rec.pause_status) == ("paused", "scene:0:content", 504)


def test_a_provider_that_keeps_the_slot_refuses_the_retries() -> None:
    """Same run, but the provider keeps an abandoned request's slot to its scheduled end
    (sent + 320 s): the retries come 1.0-1.2 s and then 2.0-2.4 s after the give-up, before
    that end, so both are refused (429, one in flight) and the run pauses with 429."""
    sc, cfg = _one_slot_slow(free=False)
    out = run_runs_real(sc, cfg)
    client, prov = _content0(out)
    assert [r[6] for r in client] == [504, 429, 429]
    t0 = client[0][0]
    assert 301 * US <= client[1][0] - t0 <= 301_200_000
    assert all(r[0] < t0 + 320 * US for r in client[1:])
    assert [(r[9], r[10], r[11]) for r in prov[1:]] == [(429, 1, "inflight")] * 2
    rec = out.result.records[0]
    assert (rec.paused_at, rec.pause_status) == ("scene:0:content", 429)


def test_an_answer_exactly_at_its_deadline_is_in_time() -> None:
    """Every clip takes exactly its 30 s deadline: on the virtual clock the answer and the
    client's timeout come at the same instant; the answer wins (docs/runs.md)."""
    base = load_scenario("default", upstream="runs")
    no_5xx = dataclasses.replace(base.quota_tts, p_5xx=0.0)
    sc = base.replace(tts=Constant(30.0), quota_tts=no_5xx)
    out = run_runs_real(sc, RunsConfig(2, runs=2, arrival_per_hour=60.0))
    clips = [r for r in out.result.log if r[2] == Step.TTS]
    assert clips and all(r[6] == 200 and r[8] - r[0] == 30 * US for r in clips)


def test_validate_exact_upstream_runs_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _cells("refused")
    monkeypatch.setattr(rx, "exact_cells", lambda names=None: one)
    assert main(["validate", "--exact", "--upstream", "runs", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cells x 1 replications" in out and "agree request for request" in out
    assert main(["validate", "--exact", "--upstream", "runs,pr788"]) == 2
    assert "name it alone" in capsys.readouterr().err


def test_validate_upstream_runs_refuses_shared_capacity_scenarios_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "--exact", "--upstream", "runs", "--scenario", "shared-flat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shared-flat" in err[0] and "shared-capacity" in err[0]


def test_run_upstream_runs_on_the_virtual_clock_is_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--upstream", "runs", "--concurrency", "3", "--runs", "3", "--key-inflight", "3"]
    assert main(["run", "--clock", "virtual", *args]) == 0
    real = capsys.readouterr().out.splitlines()
    assert main(["sim", "--engine", "simpy", *args]) == 0
    model = capsys.readouterr().out.splitlines()
    assert real[0].startswith("real world, virtual clock")
    assert model[0].startswith("scenario default · models upstream runs")  # provenance first
    assert real[1:] == model[1:]


@pytest.mark.wallclock
def test_run_upstream_runs_on_the_wall_clock_finishes() -> None:
    """The same driver on a real socket (uvicorn in a thread), time compressed: every run
    ends (no timing asserted: the wall clock is approximate)."""
    sc = load_scenario("default", upstream="runs")
    out = run_runs_real(sc, RunsConfig(2, runs=2, arrival_per_hour=120.0), clock="wall",
                        time_scale=0.01)  # fmt: skip
    assert [r.state in ("completed", "paused") for r in out.result.records] == [True, True]
    assert out.result.log and out.provider_log


def test_random_cells_are_identical_too() -> None:
    """Three cells drawn at random (:func:`runner.experiments.runs_exact.random_cells`)."""
    cells = rx.random_cells(22, 3)
    rep = rx.validate_runs_exact(cells, runs=1)
    assert rep.ok, rep.divergences
    assert rep.cells == 3 and rep.requests > 0


@pytest.mark.parametrize("name", ["gate-one-slot", "gate-outline-expires", "limited-key@gate"])
def test_the_key_wide_gate_is_the_model_request_for_request(name: str) -> None:
    cells = {c[0]: c for c in rx.gate_cells()}
    rep = rx.validate_runs_exact([cells[name]], runs=1)
    assert rep.ok, rep.divergences
    assert rep.cells == 1 and rep.requests > 50


def test_validate_exact_upstream_runs_adaptive_gate_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    one = [c for c in rx.gate_cells() if c[0] == "gate-one-slot"]
    off = _cells("refused")
    monkeypatch.setattr(rx, "gate_cells", lambda names=None, order="tiers": one)
    monkeypatch.setattr(rx, "exact_cells", lambda names=None: off)
    args = ["validate", "--exact", "--upstream", "runs", "--runs", "1"]
    assert main([*args, "--adaptive", "off,gate"]) == 0
    out = capsys.readouterr().out
    assert "2 cells x 1 replications" in out and "adaptive off,gate" in out
    assert main([*args, "--adaptive", "halve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "off and gate" in err[0]


def test_run_upstream_runs_with_the_gate_on_the_virtual_clock_is_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--upstream", "runs", "--concurrency", "3", "--runs", "3", "--key-inflight", "1"]
    assert main(["run", "--clock", "virtual", *args, "--adaptive", "gate"]) == 0
    real = capsys.readouterr().out.splitlines()
    assert main(["sim", "--engine", "simpy", *args, "--adaptive", "gate"]) == 0
    model = capsys.readouterr().out.splitlines()
    assert "adaptive gate" in real[1] and real[1:] == model[1:]


def test_the_wall_clock_runs_validation_refuses_the_gate_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "--upstream", "runs", "--quick", "--adaptive", "gate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--exact" in err[0]
