import threading

import numpy as np
import pytest

from sim import load_scenario
from sim.draws import Draws


def test_a_classrooms_draws_do_not_depend_on_the_batch():
    sc = load_scenario("default")
    batch = Draws(sc, 42, 0, 50)
    one = Draws(sc, 42, 37, 38)
    for step in (0, 1, 2):
        for attempt in (0, 2):
            assert np.array_equal(
                batch.latency_us(step, attempt)[37], one.latency_us(step, attempt)[0]
            )
            assert np.array_equal(
                batch.fault_u(step, attempt, 1)[37], one.fault_u(step, attempt, 1)[0]
            )
    assert np.array_equal(batch.speeches()[37], one.speeches()[0])
    offset = Draws(sc, 42, 30, 40)
    assert np.array_equal(offset.latency_us(2, 0)[7], one.latency_us(2, 0)[0])


def test_streams_are_distinct_and_seeded():
    sc = load_scenario("default")
    a = Draws(sc, 1, 0, 5)
    b = Draws(sc, 1, 0, 5)
    c = Draws(sc, 2, 0, 5)
    assert np.array_equal(a.latency_us(0, 0), b.latency_us(0, 0))
    assert not np.array_equal(a.latency_us(0, 0), c.latency_us(0, 0))
    # content and actions, attempt 0 and 1: different streams
    assert not np.array_equal(a.uniforms((0, 0, 0), 10), a.uniforms((1, 0, 0), 10))
    assert not np.array_equal(a.uniforms((0, 0, 0), 10), a.uniforms((0, 1, 0), 10))


def test_latencies_are_whole_microseconds_of_the_distribution():
    sc = load_scenario("default")
    d = Draws(sc, 3, 0, 2000)
    lat = d.latency_us(0, 0) / 1e6
    # lognormal median 26 s: the sample median is close to it
    assert abs(np.median(lat) - 26.0) < 0.5
    k = d.speeches()
    assert k.min() >= 3 and k.max() <= 6


def test_kept_stream_states_give_the_numbers_of_a_freshly_seeded_pcg64():
    # the definition in the module docstring: stream (step, attempt, kind) of the seed is
    # PCG64(SeedSequence(seed, spawn_key=key)), classroom cid's block starts cid * per in
    sc = load_scenario("default")
    per = sc.outlines

    def fresh(seed, key, lo, hi):
        bitgen = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key))
        bitgen.advance(lo * per)
        return np.random.Generator(bitgen).random((hi - lo) * per).reshape(hi - lo, per)

    cases = [
        (7, (0, 0, 0), 0, 3),
        (7, (0, 1, 2), 5, 6),
        (8, (0, 0, 0), 5, 6),
        (7, (0, 0, 0), 9, 11),
    ]
    for _ in range(2):  # the second time from the kept states, interleaved
        for seed, key, lo, hi in cases:
            got = Draws(sc, seed, lo, hi).uniforms(key, per)
            assert np.array_equal(got, fresh(seed, key, lo, hi))
    out: list[np.ndarray] = []
    worker = threading.Thread(
        target=lambda: out.append(Draws(sc, 7, 5, 6).uniforms((0, 1, 2), per))
    )
    worker.start()
    worker.join()
    assert np.array_equal(out[0], fresh(7, (0, 1, 2), 5, 6))  # another thread's own scratch


@pytest.mark.parametrize("compiled", [True, False])
def test_the_playback_table_is_each_scenes_clips_summed_one_by_one(compiled: bool) -> None:
    """playback_table_us draws the audio of the clips scenes have only (compiled: gathered
    and summed by sim.clips_nb): each scene's sum is playback_us's (the non-speech constant
    plus its clips' audio from the whole table), and the same when the whole table was drawn
    first."""
    sc = load_scenario("default")
    fresh, whole = Draws(sc, 8, 4, 24, compiled=compiled), Draws(sc, 8, 4, 24)
    whole.audio_us()
    table = fresh.playback_table_us()
    speeches = fresh.speeches()
    want = [
        [whole.playback_us(r, o, int(speeches[r, o])) for o in range(fresh.n)] for r in range(20)
    ]
    assert table.tolist() == want
    assert whole.playback_table_us().tolist() == want
    assert (speeches < fresh.kmax).any() and (speeches > 0).any()  # clips left out and in
