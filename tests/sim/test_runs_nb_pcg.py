"""numpy's PCG64 re-stated for the compiled runs engine's draws (sim/runs_nb_pcg.py,
sim/runs_nb_tables.py): every stream gives numpy's own numbers, byte for byte, at any block
start (the tables made of them: tests/sim/test_runs_nb_draws.py)."""

from __future__ import annotations

import numpy as np

from sim.runs_nb_tables import seeded_of, uniforms_of


def _numpy(seed: int, key: tuple[int, int, int], skip: int, count: int) -> np.ndarray:
    bitgen = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key))
    bitgen.advance(skip)
    return np.random.Generator(bitgen).random(count)


def test_streams_equal_numpys_at_any_start() -> None:
    """Streams of random seeds and keys, advanced 0 to 2**62 draws (the jump ahead walks
    every bit of the distance), blocks of 0 to 40 draws: numpy's numbers, in order."""
    rng = np.random.default_rng(7)
    streams = []
    for i in range(200):
        seed = int(rng.integers(0, 1 << 40))
        key = (int(rng.integers(0, 100)), int(rng.integers(0, 30)), int(rng.integers(0, 7)))
        skip = 0 if i < 3 else int(rng.integers(0, 1 << int(rng.integers(1, 63))))
        count = int(rng.integers(0, 41))
        streams.append((seed, key, skip, count))
    for rows in (1, 3):  # a block of rows classrooms from lo: skip lo * per, draw rows * per
        seeded = np.array([seeded_of(s, k) for s, k, _, _ in streams], dtype=np.uint64)
        pers = np.array([c for _, _, _, c in streams], dtype=np.int64)
        for lo in (0, 5):
            got = uniforms_of(seeded, pers, lo, rows)
            want = [_numpy(s, k, lo * c, rows * c) for s, k, _, c in streams]
            assert got.tobytes() == np.concatenate(want).tobytes()
    one = [(s, k, sk, c) for s, k, sk, c in streams if c]
    for s, k, sk, c in one[:50]:  # (any start: a block of one classroom of width 1 at sk)
        got = uniforms_of(np.array([seeded_of(s, k)], dtype=np.uint64), np.ones(1, np.int64), sk, c)
        assert got.tobytes() == _numpy(s, k, sk, c).tobytes()


def test_the_engines_arrivals_equal_arrivals_of() -> None:
    """The compiled engine's Poisson arrivals (sim.runs_nb._arrivals: the reference's formula
    on uniforms drawn here) are sim.runs_world.arrivals_of's, owners and blocks included;
    a replay and a single run are arrivals_of's own."""
    import itertools

    from sim.runs import RunsConfig
    from sim.runs_nb import _arrivals
    from sim.runs_world import arrivals_of

    cases = itertools.product((1, 2, 20, 57), (0.5, 30.0, 1e6), (0, 3), (0, 7), (0, 11))
    for runs, per_h, owners, block, seed in cases:
        cfg = RunsConfig(runs=runs, arrival_per_hour=per_h, owners=owners, run_id=block)
        assert _arrivals(cfg, seed) == arrivals_of(cfg, seed), (runs, per_h, owners, block)
    replay = RunsConfig(arrivals=((0.0, 0), (2.5, 1), (2.5, 0)))
    assert (
        _arrivals(replay, 0) == arrivals_of(replay, 0) == [(0, 0), (2_500_000, 0), (2_500_000, 1)]
    )


def test_draws_at_chosen_cells_are_numpys_draws_there() -> None:
    """uniforms_at: a few draws of each stream, from any start, at cells one apart, a few
    apart (stepped over) and far apart (jumped): numpy's numbers at those places."""
    from sim.runs_nb_tables import seeded_of, uniforms_at

    keys = [(2, 1, 4), (0, 3, 1)]
    seeded = np.array([seeded_of(9, k) for k in keys], dtype=np.uint64)
    start = 37 * 60
    rng = np.random.default_rng(1)
    far = np.unique(rng.integers(0, 100_000, 300))
    cells = np.unique(np.concatenate([[0, 1, 2, 5, 20, 21, 40], far, far + 1, far + 7]))
    got = uniforms_at(seeded, start, cells.astype(np.int64))
    for i, k in enumerate(keys):
        bitgen = np.random.PCG64(np.random.SeedSequence(9, spawn_key=k))
        bitgen.advance(start)
        want = np.random.Generator(bitgen).random(int(cells[-1]) + 1)[cells]
        assert got[i].tobytes() == want.tobytes()
