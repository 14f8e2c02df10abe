"""Seeded PCG64 streams, compiled: :func:`sim.runs_nb_tables.seeded_of` for many streams of
one seed at once (the limited-key engine seeds a few streams per table it draws cell by cell;
numpy's ``PCG64(SeedSequence(seed, spawn_key=key))`` costs ~10 µs each).

numpy's :class:`~numpy.random.SeedSequence` re-stated (its entropy pool of four 32-bit words:
the seed's words, zero-padded to the pool's size, then the spawn key's words; O'Neill's
``hashmix`` and ``mix``; ``generate_state``), then PCG64's seeding (``pcg64_set_seed``:
``srandom`` with the first two 64-bit words as the 128-bit state and the last two as the
increment). tests/sim/test_seeds_nb.py holds it to numpy's on many seeds and keys. Keys of
words of 32 bits or more are seeded by numpy (:func:`seeded_many` falls back).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock, njit_cached

__all__ = ["seeded_many", "seeded_row"]

U64 = NDArray[np.uint64]
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_POOL = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (2549297995355413924 << 64) | 4865540595714422341


def _hashmix(value: np.uint64, h: np.uint64, mult: int) -> tuple[np.uint64, np.uint64]:
    """SeedSequence's ``hashmix``: ``value`` hashed with the running constant ``h``, and
    ``h`` stepped by ``mult`` (32-bit words in uint64)."""
    m32 = np.uint64(_M32)
    v = (value ^ h) & m32
    h = (h * np.uint64(mult)) & m32
    v = (v * h) & m32
    return v ^ (v >> np.uint64(16)), h


def _mix(x: np.uint64, y: np.uint64) -> np.uint64:
    """SeedSequence's ``mix`` of two 32-bit words."""
    r = (np.uint64(_MIX_L) * x - np.uint64(_MIX_R) * y) & np.uint64(_M32)
    return r ^ (r >> np.uint64(16))  # type: ignore[no-any-return]


_hashmix_nb = njit_cached(_hashmix, inline="always")
_mix_nb = njit_cached(_mix, inline="always")


def _pool_words(entropy: U64, pool: U64, out: U64) -> None:
    """SeedSequence's mixed pool (``mix_entropy``) of ``entropy`` (32-bit words in uint64),
    then ``generate_state(4, uint64)``'s eight 32-bit words into ``out``."""
    h = np.uint64(_INIT_A)
    n = entropy.size
    for i in range(_POOL):
        pool[i], h = _hashmix_nb(entropy[i] if i < n else np.uint64(0), h, _MULT_A)
    for i_src in range(_POOL):
        for i_dst in range(_POOL):
            if i_src != i_dst:
                v, h = _hashmix_nb(pool[i_src], h, _MULT_A)
                pool[i_dst] = _mix_nb(pool[i_dst], v)
    for i_src in range(_POOL, n):
        for i_dst in range(_POOL):
            v, h = _hashmix_nb(entropy[i_src], h, _MULT_A)
            pool[i_dst] = _mix_nb(pool[i_dst], v)
    hb = np.uint64(_INIT_B)
    for i in range(out.size):
        out[i], hb = _hashmix_nb(pool[i % _POOL], hb, _MULT_B)


_pool_nb = njit_cached(_pool_words, inline="always")


def _states(entropy: U64, keys: U64, pool: U64, out: U64) -> None:
    """Per row of ``keys`` (its words) after the seed's words (``entropy``'s head, zero
    padded to the pool's size), the eight 32-bit words of its PCG64 seed."""
    n = entropy.size
    for k in range(keys.shape[0]):
        for j in range(keys.shape[1]):
            entropy[n - keys.shape[1] + j] = keys[k, j]
        _pool_nb(entropy, pool, out[k])


_states_nb = njit_cached(_states)
_LOCK = CompileLock(Path(__file__), "numba-seeds")


def _words(x: int) -> list[int]:
    """numpy's ``_int_to_uint32_array``: little-endian 32-bit words (0: one word)."""
    out = [x & _M32]
    x >>= 32
    while x:
        out.append(x & _M32)
        x >>= 32
    return out


def _pcg(words: Sequence[int]) -> tuple[int, int, int, int]:
    """PCG64 seeded from ``generate_state(4, uint64)``'s words (32-bit, little-endian):
    its state's and increment's high and low 64-bit words."""
    w64 = [words[2 * i] | (words[2 * i + 1] << 32) for i in range(4)]
    init, seq = (w64[0] << 64) | w64[1], (w64[2] << 64) | w64[3]
    inc = ((seq << 1) | 1) & _M128
    state = inc  # 0 * mult + inc
    state = (state + init) & _M128
    state = (state * _PCG_MULT + inc) & _M128
    return state >> 64, state & _M64, inc >> 64, inc & _M64


def seeded_many(seed: int, keys: Sequence[tuple[int, ...]]) -> U64:
    """Rows of :func:`sim.runs_nb_tables.seeded_of` (seed, key) for ``keys`` (all of one
    length), shape ``(len(keys), 4)`` uint64."""
    from .runs_nb_tables import seeded_of

    lens = {len(k) for k in keys}
    small = all(0 <= x <= _M32 for k in keys for x in k)
    if seed < 0 or len(lens) != 1 or not small or not keys or not len(keys[0]):
        return np.array([seeded_of(seed, k) for k in keys], dtype=np.uint64).reshape(-1, 4)
    run = _words(seed)
    entropy = np.zeros(max(len(run), _POOL) + len(keys[0]), dtype=np.uint64)
    entropy[: len(run)] = run
    words = np.empty((len(keys), 8), dtype=np.uint64)
    with _LOCK.first_use():
        _states_nb(entropy, np.array(keys, dtype=np.uint64), np.empty(_POOL, np.uint64), words)
    return np.array([_pcg(w) for w in words.tolist()], dtype=np.uint64)


def seeded_row(seed: int, key: tuple[int, ...]) -> U64:
    """:func:`sim.runs_nb_tables.seeded_of` as a (1, 4) row, a stream not kept yet seeded
    here (numpy's numbers, cheaper than numpy's own seeding for a stream met once, as a
    cell's arrivals) and kept as it keeps them."""
    from .runs_nb_tables import seeded_of

    return np.array([seeded_of(seed, key, _seeded_one)], dtype=np.uint64)


def _seeded_one(seed: int, key: tuple[int, ...]) -> tuple[int, int, int, int]:
    a, b, c, d = seeded_many(seed, [key])[0].tolist()
    return int(a), int(b), int(c), int(d)
