"""The SimPy model's shortcuts change nothing: with ``sim.model._SHORTCUTS`` off a world runs on
SimPy's own ``run()`` (every event made and processed), every call is a generator and every
decision is ``Provider.decide``'s; its results, request logs included, are the ones the model
gives with its shortcuts (decisions read from the draws' tables, requests inline, an event
that would be the next one processed taken at once, sleeps without events)."""

import dataclasses

import pytest

from sim import RunConfig, load_scenario
from sim import model as m
from sim.draws import Draws
from sim.provider import Provider
from tests.conftest import const_scenario


def _cells() -> list[tuple[str, object, RunConfig]]:
    base = load_scenario("default")
    quota = base.replace(
        quota_llm=dataclasses.replace(base.quota_llm, max_inflight=2, p_429=0.05),
        quota_tts=dataclasses.replace(base.quota_tts, max_inflight=3, rpm=60, rpm_burst=4),
    )
    faults = base.replace(
        request_timeout_s=20.0,
        quota_llm=dataclasses.replace(
            base.quota_llm, p_5xx=0.1, p_reset=0.05, p_stall=0.05, p_truncate=0.05
        ),
        quota_tts=dataclasses.replace(base.quota_tts, p_429=0.1, disconnect_frees=True),
    )
    of = RunConfig.of
    return [
        ("default serial", base, of("serial", 1)),
        ("default pipelined", base, of("pipelined", 3)),
        ("default hybrid", base, of("hybrid", 4, tts_concurrency=2)),
        ("quota pipelined, tenants", quota, of("pipelined", 3, tenants=3, stagger_s=1.5)),
        ("quota gate", quota, of("pipelined", 4, adaptive="gate")),
        ("faults, short timeout", faults, of("pipelined", 2, adaptive="aimd")),
        ("route retries (v0.2.1)", load_scenario("low-quota", upstream="v0.2.1"), of("serial", 1)),
        ("shared capacity", load_scenario("shared-flat"), of("pipelined", 3)),
        # constant latencies: every step of every classroom ends at the same instants (ties)
        ("ties", const_scenario(5, 3.0, 1.0, 0.5, clips=3), of("pipelined", 3, tenants=2)),
    ]


@pytest.mark.parametrize("name", [c[0] for c in _cells()])
def test_results_and_request_logs_are_the_same_without_the_shortcuts(name, monkeypatch):
    _, sc, cfg = next(c for c in _cells() if c[0] == name)
    got = {}
    for on in (True, False):
        monkeypatch.setattr(m, "_SHORTCUTS", on)
        for records in (True, False):
            runs = m.simulate_simpy(sc, dataclasses.replace(cfg, records=records), 3, seed=5)
            got[on, records] = repr(runs)  # every field, the request log's records included
    assert got[True, True] == got[False, True]
    assert got[True, False] == got[False, False]
    assert "requests_log=()" not in got[True, True]


def _events(sc: object, cfg: RunConfig) -> tuple[int, tuple[object, ...]]:
    """One classroom's run: the events its world made (ids taken), and its time line."""
    prov = Provider(sc, 3, draws=Draws(sc, 3, 0, 1), keep_log=False)  # type: ignore[arg-type]
    w = m._World(sc, prov)  # type: ignore[arg-type]
    cr = m._Classroom(w, 0, cfg.mode, cfg.c, cfg.c, cfg.adaptive)
    m._Task(w.env, cr.run(0))
    w.env.run_out()
    return next(w.env._eid), (cr.ready, cr.failed, cr.stats, cr.status, cr.end)  # type: ignore[attr-defined]


def test_the_shortcuts_are_taken(monkeypatch):
    # not vacuous: the same time lines out of fewer events. A serial classroom on keys without
    # limits is one process: without the shortcuts, its start and a sleep per request (every
    # request answered 200 after its latency here); with them, its start alone (every sleep
    # would be the next event). A pipelined one has several processes: fewer events.
    sc = load_scenario("default")
    got = {}
    for on in (True, False):
        monkeypatch.setattr(m, "_SHORTCUTS", on)
        for mode, c in (("serial", 1), ("pipelined", 3)):
            got[on, mode] = _events(sc, RunConfig.of(mode, c))
    for mode in ("serial", "pipelined"):
        assert got[True, mode][1] == got[False, mode][1]
    ready, _, counts, _, _ = got[True, "serial"][1]
    assert len(ready) == sc.outlines and counts.requests > sc.outlines
    assert counts.http_5xx == counts.timeouts == 0  # (so every request is one sleep)
    assert got[True, "serial"][0] == 1
    assert got[False, "serial"][0] == 1 + counts.requests
    assert got[True, "pipelined"][0] < got[False, "pipelined"][0]
