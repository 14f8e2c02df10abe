"""The compiled gathers and sums over speech clips (sim.clips_nb) and where the limited-key
engine and the model's draws use them: each equals numpy's masked version (the mask
``clip < speeches``), the playback times and the engine's first TTS table equal the ones
drawn without them, and the arrays the engine keeps between calls change no result."""

from __future__ import annotations

import numpy as np
import pytest

import sim.fast_quota as fq
from sim import Quota, RunConfig, load_scenario
from sim.clips_nb import at_clips, put_clips_us, sum_clips_us
from sim.draws import Draws, seconds_to_us
from sim.fast_quota import simulate_quota


def _case(kmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Speeches from below 0 to above ``kmax`` (none, some, all clips), seconds per cell."""
    rng = np.random.default_rng(kmax)
    speeches = rng.integers(-1, kmax + 2, size=(7, 5))
    x = rng.lognormal(0.0, 1.0, size=(7, 5, kmax))
    mask = np.arange(kmax)[None, None, :] < speeches[:, :, None]
    return speeches, x, mask


@pytest.mark.parametrize("kmax", [1, 4])
def test_the_clip_loops_equal_numpys_masked_gather_put_and_sum(kmax: int) -> None:
    speeches, x, mask = _case(kmax)
    got = at_clips(x, speeches, kmax)
    np.testing.assert_array_equal(got, x[mask])  # the same values, in row-major order
    out = np.zeros(x.size, dtype=np.int64)
    put_clips_us(got, speeches, kmax, out)
    want = np.where(mask, seconds_to_us(x), -1)
    np.testing.assert_array_equal(out.reshape(x.shape), want)
    sums = sum_clips_us(got, speeches, kmax, 17)
    np.testing.assert_array_equal(sums, 17 + np.where(mask, seconds_to_us(x), 0).sum(axis=2))
    with pytest.raises(AssertionError, match="out holds"):
        at_clips(x, speeches, kmax, np.empty(x.size - 1))


@pytest.mark.parametrize("name", ["default", "content-heavy"])
def test_the_model_draws_playback_times_through_them_the_same(name: str) -> None:
    """Draws.playback_table_us compiled (the clip loops) and not (numpy's mask)."""
    sc = load_scenario(name)
    got = Draws(sc, 5, 3, 203).playback_table_us()
    want = Draws(sc, 5, 3, 203, compiled=False).playback_table_us()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_tts_at_its_clips_is_the_table_drawn_cell_by_cell_there() -> None:
    """The first TTS latencies through the clip loops equal :meth:`_Tables.cells` at every
    clip: values at the clips, -1 elsewhere; codes and jitter whole."""
    q = Quota(max_inflight=2, p_429=0.2, p_5xx=0.1)
    sc = load_scenario("default").replace(quota_llm=q, quota_tts=q)

    def tables() -> fq._Tables:
        d = Draws(sc, 11, 3, 43)
        return fq._Tables(fq._Cell(sc, RunConfig.of("serial", 1), d), d, True, [np.zeros(1)])

    loops, cells = tables(), tables()
    loops.tts_at_clips(0)
    cells.cells(1, 0, 0, np.flatnonzero(cells.clips(np.arange(cells.reps))))
    for kind in cells.kinds(1, 0):
        assert loops.have[kind, 1, 0, 0] == cells.have[kind, 1, 0, 0]
        got, want = loops.view(kind, 1, 0, 0), cells.view(kind, 1, 0, 0)
        np.testing.assert_array_equal(got, want)
    assert loops.have[0, 1, 0, 0] == 3 and (loops.view(0, 1, 0, 0) == -1).any()


def test_the_arrays_kept_between_calls_change_no_result() -> None:
    """A cell, another cell of other shapes (its arrays bigger or smaller), the first again:
    the same runs as the first call's, which owned fresh arrays."""
    base = load_scenario("default")
    sc = base.replace(outlines=4, quota_llm=Quota(max_inflight=1, p_429=0.3))
    big = base.replace(outlines=6, quota_tts=Quota(max_inflight=2, p_5xx=0.2))
    fq._KEPT.__dict__.pop("arrays", None)
    first = simulate_quota(sc, RunConfig.of("pipelined", 3), 30, seed=4).runs.frame()
    simulate_quota(big, RunConfig.of("serial", 1), 50, seed=9)
    again = simulate_quota(sc, RunConfig.of("pipelined", 3), 30, seed=4).runs.frame()
    assert first.equals(again)
    assert {"T", "F", "R", "S", "W"} <= set(fq._KEPT.arrays)
