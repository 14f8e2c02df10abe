"""Compiled gathers and sums over the speech clips runs have (the limited-key engine's TTS
tables and playback times, :mod:`sim.fast_quota`).

A TTS table of runs ``(runs, outlines * kmax)`` holds a value at the clips a run has:
column ``order * kmax + clip`` with ``clip < speeches[run, order]`` (the mask
``arange(kmax) < speeches[..., None]`` of :class:`sim.draws.Draws`). These loops do in one
pass what numpy does in several (the mask, a boolean gather, a scatter, a masked sum): the
same numbers, as they only move values and add integers; every float operation on the drawn
values (the quantiles) stays the caller's (:meth:`sim.draws.Draws.quantile`), and a second to
µs is :func:`sim.draws.seconds_to_us`'s ``rint(x * 1e6)``. numba is imported only when this
module is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock, njit_cached

__all__ = ["at_clips", "put_clips_us", "sum_clips_us"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


def _gather(u: F64, speeches: I64, kmax: int, out: F64) -> int:
    k = 0
    for c in range(speeches.size):
        b = c * kmax
        for j in range(min(speeches[c], kmax)):
            out[k] = u[b + j]
            k += 1
    return k


def _put_us(x_s: F64, speeches: I64, kmax: int, out: I64) -> None:
    k = 0
    for c in range(speeches.size):
        b = c * kmax
        m = max(0, min(speeches[c], kmax))
        for j in range(m):
            out[b + j] = int(np.rint(x_s[k] * 1e6))
            k += 1
        for j in range(m, kmax):
            out[b + j] = -1


def _sum_us(x_s: F64, speeches: I64, kmax: int, base_us: int, out: I64) -> None:
    k = 0
    for c in range(speeches.size):
        t = 0
        for _ in range(min(speeches[c], kmax)):
            t += int(np.rint(x_s[k] * 1e6))
            k += 1
        out[c] = base_us + t


_gather_nb = njit_cached(_gather)
_put_nb = njit_cached(_put_us)
_sum_nb = njit_cached(_sum_us)
_LOCK = CompileLock(Path(__file__), "numba-clips")


def _flat(speeches: I64) -> I64:
    return np.ascontiguousarray(speeches, dtype=np.int64).reshape(-1)


def at_clips(u: F64, speeches: I64, kmax: int, out: F64 | None = None) -> F64:
    """``u`` (flat, runs by outlines by ``kmax``) at the clips runs have, in order:
    ``u[mask]``; written to the head of ``out`` (flat, ``u``'s size or more) if given."""
    flat = np.ascontiguousarray(u, dtype=np.float64).reshape(-1)
    if out is None:
        out = np.empty(flat.size)
    if out.size < flat.size:
        raise AssertionError(f"at_clips: out holds {out.size} values, {flat.size} needed")
    with _LOCK.first_use():
        k = _gather_nb(flat, _flat(speeches), kmax, out)
    got: F64 = out[:k]
    return got


def put_clips_us(x_s: F64, speeches: I64, kmax: int, out: I64) -> None:
    """``out`` (flat, runs by outlines by ``kmax``): at the clips runs have the seconds
    ``x_s`` (:func:`at_clips`' order) in µs, elsewhere -1."""
    with _LOCK.first_use():
        _put_nb(x_s, _flat(speeches), kmax, out)


def sum_clips_us(x_s: F64, speeches: I64, kmax: int, base_us: int) -> I64:
    """Per run and outline (``speeches``' shape): ``base_us`` plus the sum of its clips'
    seconds ``x_s`` (:func:`at_clips`' order) each in µs."""
    out = np.empty(np.shape(speeches), dtype=np.int64)
    with _LOCK.first_use():
        _sum_nb(x_s, _flat(speeches), kmax, int(base_us), out.reshape(-1))
    return out
