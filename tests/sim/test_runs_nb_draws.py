"""The compiled runs engine's draw tables (sim/runs_nb_tables.py ``Batch.draw``): latency
tables of one distribution drawn by one quantile call over their uniforms laid end to end are,
byte for byte, the tables :class:`sim.runs_world.RunDraws` draws one at a time (a value is a
pure function of seed, classroom, order, step, clip and attempt), whether a batch's streams
come from one compiled call (a small batch) or a distribution at a time (a large one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.runs import RunsConfig, RunsSettings
from sim.runs_nb import NbCell, nb_fits
from sim.runs_nb_loop import NK
from sim.runs_world import RunDraws, runs_scenario
from sim.scenario import Scenario, load_scenario


def _plain_keys(sc: Scenario) -> Scenario:
    """The scenario with its keys' token limits taken off (the compiled engine's keys)."""
    off = {"tpm": 0, "itpm": 0, "otpm": 0}
    return sc.replace(
        quota_llm=dataclasses.replace(sc.quota_llm, **off),
        quota_tts=dataclasses.replace(sc.quota_tts, **off),
    )


CASES = [
    # one content distribution; random 429s and 5xx (retries: later attempts, jitter)
    ("default", {"p_429": 0.1, "p_5xx": 0.1}, 0, {0, 1, 2, 4}),
    # content by scene type (step 0 drawn by RunDraws itself), a gamma actions step
    # and the media lane (its latencies and failures' draws: kind 3)
    ("content-heavy", {"p_5xx": 0.2}, 2, {0, 2, 3, 4}),
    # latency = time to first token + decoded output tokens (drawn by RunDraws itself)
    ("output-tpm", {"p_5xx": 0.2}, 0, {0, 2, 4}),
]


@pytest.mark.parametrize("one_call", [1 << 16, 0])  # (batches drawn small, or large)
@pytest.mark.parametrize(("name", "llm", "media", "kinds"), CASES)
def test_every_table_equals_the_reference_draws(
    name: str,
    llm: dict[str, float],
    media: int,
    kinds: set[int],
    one_call: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sim import runs_nb_tables

    monkeypatch.setattr(runs_nb_tables, "ONE_CALL_DRAWS", one_call)
    sc = _plain_keys(load_scenario(name, upstream="runs"))
    sc = runs_scenario(sc.replace(quota_llm=dataclasses.replace(sc.quota_llm, **llm)))
    cfg = RunsConfig(
        concurrency=3,
        runs=12,
        arrival_per_hour=120.0,
        run_id=3,
        settings=RunsSettings(media_items=media, media_p_fail=0.3),
    )
    assert nb_fits(sc, cfg)
    cell = NbCell(sc, cfg, 11)
    cell.run()
    ref = RunDraws(sc, cfg.settings, 11, cell.base, cell.base + cell.runs)
    drawn = np.flatnonzero(cell.OFF >= 0).tolist()
    assert {at % NK for at in drawn} == kinds  # (latencies, 429s, 5xx, faults, jitter)
    assert any(at % NK == 0 and at // NK % cell.attempts > 0 for at in drawn)  # retries' too
    for at in drawn:
        step, att, kind = at // NK // cell.attempts, at // NK % cell.attempts, at % NK
        want = (
            ref.latency_us(step, att)
            if kind == 0
            else ref.uniforms((step, att, kind), ref._per(step))
        ).reshape(-1)
        buf = cell.LT if kind == 0 else cell.U
        got = buf[cell.OFF[at] : cell.OFF[at] + want.size]
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes(), (step, att, kind)
    # the clips per scene and their audio, drawn with the first tables (the records' playback)
    assert cell.d.speeches().tobytes() == ref.speeches().tobytes()
    assert cell.d.audio_us().tobytes() == ref.audio_us().tobytes()
    assert cell.d.playback_table_us().tobytes() == ref.playback_table_us().tobytes()
