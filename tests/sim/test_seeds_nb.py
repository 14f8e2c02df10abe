"""The compiled seeding (sim.seeds_nb) gives numpy's PCG64(SeedSequence(seed, spawn_key=key))
states (sim.runs_nb_tables.seeded_of, which asks numpy) on seeds of one to several 32-bit
words, keys of several lengths and words at their edges; what it does not compile (words of
32 bits or more in a key, keys of mixed lengths) it asks numpy for."""

from __future__ import annotations

import numpy as np
import pytest

from sim import runs_nb_tables
from sim.runs_nb_tables import seeded_of
from sim.seeds_nb import seeded_many, seeded_row


@pytest.mark.parametrize("length", [1, 3, 5])
def test_compiled_seeding_is_numpys(length: int) -> None:
    rng = np.random.default_rng(length)
    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 + 3, 2**128 + 9, *rng.integers(0, 2**62, 40).tolist()]
    for seed in seeds:
        keys = [tuple(int(x) for x in rng.integers(0, 2**32, length)) for _ in range(3)]
        keys += [(0,) * length, (2**32 - 1,) * length]
        want = np.array([seeded_of(seed, k) for k in keys], dtype=np.uint64)
        np.testing.assert_array_equal(seeded_many(seed, keys), want)


def test_what_is_not_compiled_is_numpys() -> None:
    for keys in ([(2**32, 1)], [(1,), (1, 2)], [()]):
        want = np.array([seeded_of(5, k) for k in keys], dtype=np.uint64).reshape(-1, 4)
        np.testing.assert_array_equal(seeded_many(5, keys), want)


def test_a_row_seeded_once_is_numpys_and_kept_as_seeded_of_keeps_it() -> None:
    keys = [(97, 1), (97, 2**32 - 1), (97, 2**32 + 5), (3, 1, 4)]  # (one not compiled)
    for seed in (0, 7, 2**40):
        for key in keys:
            runs_nb_tables._SEEDED.pop((seed, key), None)
            got = seeded_row(seed, key)  # seeded (compiled where it can), then kept
            assert (seed, key) in runs_nb_tables._SEEDED
            assert got.dtype == np.uint64 and got.shape == (1, 4)
            kept = seeded_row(seed, key)
            runs_nb_tables._SEEDED.pop((seed, key))
            want = np.array([seeded_of(seed, key)], dtype=np.uint64)  # numpy's, afresh
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(kept, want)
