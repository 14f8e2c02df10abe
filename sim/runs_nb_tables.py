"""The compiled runs engine's draw tables (:mod:`sim.runs_nb`): which tables a batch holds,
and their numbers drawn at once.

A table is one keyed stream of :class:`sim.runs_world.RunDraws` — (step, attempt, kind) —
for the cell's block of runs, flat, at ``OFF[(step * attempts + attempt) * NK + kind]`` in
``LT`` (latencies, µs) or ``U`` (uniforms). A :class:`Batch` is a list of tables in the order
they are drawn: the uniform tables, then the latency tables grouped by distribution. Its
streams' uniforms come from one compiled call (:func:`sim.runs_nb_pcg.fill_uniforms`: numpy's
PCG64 numbers, every stream at once), and each group's latencies from one quantile call over
its uniforms laid end to end (an element's value depends on its uniform only: the same numbers
as :meth:`RunDraws.latency_us`, tests/sim/test_runs_nb_draws.py). A batch depends on the
scenario and the settings only, so a cell's first batch is made once for every cell of them
(:mod:`sim.runs_nb`'s shapes); the seeded streams once per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock
from .dists import Dist, LogNormal, lognormal_quantile
from .draws import seconds_to_us

__all__ = [
    "Batch", "Need", "Seeder", "put", "room", "seeded_of", "uniforms_at", "uniforms_of",
]  # fmt: skip

Need = tuple[int, int, int]  # a table: (step, attempt, kind)
I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


def room(buf: NDArray[Any], need: int, used: int) -> NDArray[Any]:
    """``buf`` with room for ``need`` items (a copy of its ``used`` head, twice as big, when
    it has not)."""
    if need > buf.size:
        grown = np.empty(max(2 * buf.size, need), dtype=buf.dtype)
        grown[:used] = buf[:used]
        buf = grown
    return buf


def put(buf: NDArray[Any], used: int, arr: NDArray[Any]) -> tuple[NDArray[Any], int]:
    """``arr`` written after the ``used`` head of ``buf`` (:func:`room`): the buffer, and
    where ``arr`` starts."""
    buf = room(buf, used + arr.size, used)
    buf[used : used + arr.size] = arr
    return buf, used


_SEEDED: dict[tuple[int, tuple[int, ...]], tuple[int, int, int, int]] = {}
_MAX_SEEDED = 1 << 14
_M64 = (1 << 64) - 1


Seeder = Callable[[int, tuple[int, ...]], tuple[int, int, int, int]]


def seeded_of(
    seed: int, key: tuple[int, ...], seeder: Seeder | None = None
) -> tuple[int, int, int, int]:
    """Stream ``key`` of ``seed`` as :mod:`sim.draws` seeds it (``PCG64(SeedSequence(seed,
    spawn_key=key))``): its state's and increment's high and low words (kept per stream);
    ``seeder`` seeds a stream not kept yet (numpy's own by default; the same numbers:
    :func:`sim.seeds_nb.seeded_row`'s)."""
    got = _SEEDED.get((seed, key))
    if got is None:
        if len(_SEEDED) >= _MAX_SEEDED:
            _SEEDED.clear()
        got = (_numpy_seeded if seeder is None else seeder)(seed, key)
        _SEEDED[(seed, key)] = got
    return got


def _numpy_seeded(seed: int, key: tuple[int, ...]) -> tuple[int, int, int, int]:
    st = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)).state["state"]
    s, inc = int(st["state"]), int(st["inc"])
    return s >> 64, s & _M64, inc >> 64, inc & _M64


ONE_CALL_DRAWS = 1 << 16  # a batch's draws at most for one compiled call (Batch.draw)
_KERNELS: dict[str, Callable[..., None]] = {}  # runs_nb_pcg's, once imported and called
_LOCKS = {
    name: CompileLock(Path(__file__).with_name("runs_nb_pcg.py"), tag)
    for name, tag in (("fill_uniforms", "numba-pcg"), ("fill_at", "numba-pcg-at"))
}


def _pcg(name: str, *args: Any) -> None:
    """:mod:`sim.runs_nb_pcg`'s kernel ``name`` called; its first call in the process under
    its lock (it compiles then, or loads from numba's cache)."""
    kernel = _KERNELS.get(name)
    if kernel is not None:
        kernel(*args)
        return
    with _LOCKS[name].first_use():
        from . import runs_nb_pcg

        kernel = getattr(runs_nb_pcg, name)
        kernel(*args)
    _KERNELS[name] = kernel


def uniforms_of(
    seeded: NDArray[np.uint64], pers: I64, lo: int, rows: int, out: F64 | None = None
) -> F64:
    """The uniforms :meth:`sim.draws.Draws.uniforms` gives the block of ``rows`` classrooms
    from ``lo`` for each stream (``seeded``: :func:`seeded_of`'s rows; ``pers``: its width per
    classroom), one table after another (flat; into ``out`` if given)."""
    if out is None:
        out = np.empty(int(pers.sum()) * rows)
    _pcg("fill_uniforms", seeded, lo * pers, rows * pers, out)
    return out


def uniforms_at(seeded: NDArray[np.uint64], start: int, cells: I64) -> F64:
    """Per stream (``seeded``: :func:`seeded_of`'s rows), its draws number ``start + cells``
    (``cells`` ascending, without repeats): shape (streams, cells); the numbers
    :func:`uniforms_of` gives there, without drawing those between."""
    out = np.empty((seeded.shape[0], cells.size))
    _pcg("fill_at", seeded, np.int64(start), cells, out)
    return out


class Batch:
    """Tables to draw together (see the module doc): ``needs`` without repeats and without
    ``skip``'s tables; ``dists`` per step the one distribution of its latency table (``None``:
    drawn by :meth:`RunDraws.latency_us` itself, a table of :attr:`slow`); ``per`` a step's
    width per classroom; ``attempts`` the cell's attempts (``OFF``'s layout); ``side``
    streams (key, width per classroom) drawn with them for :class:`RunDraws`' own use (kept
    in its cache, as :meth:`sim.draws.Draws.uniforms` keeps them: the clips and their audio)."""

    def __init__(
        self,
        needs: list[Need],
        dists: dict[int, Dist | None],
        per: Callable[[int], int],
        attempts: int,
        skip: Callable[[int], bool] = lambda at: False,
        side: tuple[tuple[Need, int], ...] = (),
    ) -> None:
        from .runs_nb_loop import NK

        unif: list[tuple[int, Need]] = []
        groups: dict[int, tuple[Dist, list[tuple[int, Need]]]] = {}
        self.slow: list[tuple[int, int, int]] = []  # (at, step, attempt)
        seen: set[int] = set()
        for need in needs:
            step, att, kind = need
            at = (step * attempts + att) * NK + kind
            if at in seen or skip(at):
                continue
            seen.add(at)
            if kind != 0:
                unif.append((at, need))
            elif (dist := dists[step]) is None:
                self.slow.append((at, step, att))
            else:
                groups.setdefault(id(dist), (dist, []))[1].append((at, need))
        tables = unif + [t for _, ts in groups.values() for t in ts]
        self.side = side
        self.keys = [key for key, _ in side] + [need for _, need in tables]
        self.ats = np.array([at for at, _ in tables], dtype=np.int64)
        pers = [w for _, w in side] + [per(step) for _, (step, _, _) in tables]
        self.pers = np.array(pers, dtype=np.int64)
        self.n_unif = len(unif)
        # per run: where each stream starts in the batch's uniforms, then their end
        self.starts = np.concatenate([[0], np.cumsum(self.pers)]).astype(np.int64)
        self.groups: list[tuple[Dist, int, int]] = []  # (distribution, first stream, end)
        i = len(side) + self.n_unif
        for dist, ts in groups.values():
            self.groups.append((dist, i, i + len(ts)))
            i += len(ts)
        self._seeded: dict[int, NDArray[np.uint64]] = {}
        # every group a log-normal: their values by one quantile call (_scales' per value)
        self._one_quantile = len(self.groups) > 1 and all(
            isinstance(dist, LogNormal) for dist, _, _ in self.groups
        )
        self._scales: dict[int, tuple[F64, F64]] = {}

    def seeded(self, seed: int) -> NDArray[np.uint64]:
        """The batch's streams seeded (:func:`seeded_of`), kept per seed (a few)."""
        got = self._seeded.get(seed)
        if got is None:
            if len(self._seeded) >= 64:
                self._seeded.clear()
            got = np.array([seeded_of(seed, key) for key in self.keys], dtype=np.uint64)
            got = got.reshape(len(self.keys), 4)
            self._seeded[seed] = got
        return got

    def per_run(self) -> int:
        """The batch's draws per run (its slow tables aside, its side streams in)."""
        return int(self.starts[-1])

    def draw(self, cell: Any) -> None:
        """The batch's tables into ``cell``'s ``LT``, ``U`` and ``OFF`` (an :class:`sim.runs_nb.
        NbCell`; its ``d``: the runs' :class:`RunDraws`): a small batch's streams by one
        compiled call (what a call costs matters most), a large one's uniform tables straight
        into ``U`` and its latencies a distribution at a time (arrays that stay in cache)."""
        d, OFF, runs = cell.d, cell.OFF, cell.runs
        for at, step, att in self.slow:
            cell.LT, OFF[at] = put(cell.LT, cell.n_lt, d.latency_us(step, att).ravel())
            cell.n_lt += runs * d.per_classroom(step)
        if not len(self.keys):
            return
        rel = self.starts * runs  # where each stream starts in the batch's uniforms
        a = len(self.side)
        b = a + self.n_unif
        seeded = self.seeded(d.seed)
        if rel[-1] > ONE_CALL_DRAWS:
            self._draw_large(cell, rel, seeded)
            return
        u = uniforms_of(seeded, self.pers, d.lo, runs)
        for i, (key, per) in enumerate(self.side):  # (as Draws.uniforms keeps them)
            d.keep_uniforms(key, u[rel[i] : rel[i + 1]].reshape(runs, per))
        if b > a:
            cell.U, at0 = put(cell.U, cell.n_u, u[rel[a] : rel[b]])
            OFF[self.ats[: b - a]] = at0 + rel[a:b] - rel[a]
            cell.n_u = at0 + int(rel[b] - rel[a])
        if self.groups:
            lat = self._latencies(d, u, rel, b, runs)
            cell.LT, at0 = put(cell.LT, cell.n_lt, lat)
            OFF[self.ats[b - a :]] = at0 + rel[b:-1] - rel[b]
            cell.n_lt = at0 + lat.size

    def _latencies(self, d: Any, u: F64, rel: I64, b: int, runs: int) -> I64:
        """The groups' latencies (µs) of a small batch's uniforms ``u`` (the groups' from
        stream ``b`` on): every group a log-normal, by one quantile call (each value's median
        and sigma kept per count of runs); else each group's seconds, then all in µs at once."""
        if not self._one_quantile:
            parts = [d.quantile(dist, u[rel[i] : rel[j]]) for dist, i, j in self.groups]
            return seconds_to_us(parts[0] if len(parts) == 1 else np.concatenate(parts))
        scales = self._scales.get(runs)
        if scales is None:
            if len(self._scales) >= 64:
                self._scales.clear()
            counts = [int(rel[j] - rel[i]) for _, i, j in self.groups]
            med, sigma = ([getattr(g[0], f) for g in self.groups] for f in ("median_s", "sigma"))
            scales = self._scales[runs] = (np.repeat(med, counts), np.repeat(sigma, counts))
        return seconds_to_us(lognormal_quantile(u[rel[b] :], *scales, compiled=d.compiled))

    def _draw_large(self, cell: Any, rel: I64, seeded: NDArray[np.uint64]) -> None:
        """:meth:`draw` of a large batch."""
        d, OFF, runs = cell.d, cell.OFF, cell.runs
        a = len(self.side)
        b = a + self.n_unif

        def streams(i: int, j: int, out: F64 | None = None) -> F64:
            return uniforms_of(seeded[i:j], self.pers[i:j], d.lo, runs, out)

        for i, (key, per) in enumerate(self.side):  # (as Draws.uniforms keeps them)
            d.keep_uniforms(key, streams(i, i + 1).reshape(runs, per))
        if b > a:
            at0, size = cell.n_u, int(rel[b] - rel[a])
            cell.U = room(cell.U, at0 + size, at0)
            streams(a, b, cell.U[at0 : at0 + size])
            OFF[self.ats[: b - a]] = at0 + rel[a:b] - rel[a]
            cell.n_u = at0 + size
        for dist, i, j in self.groups:
            lat = seconds_to_us(d.quantile(dist, streams(i, j)))
            cell.LT, at0 = put(cell.LT, cell.n_lt, lat)
            OFF[self.ats[i - a : j - a]] = at0 + rel[i:j] - rel[i]
            cell.n_lt = at0 + lat.size
