"""Keyed random draws (common random numbers).

Every random quantity is a pure function of (seed, classroom id, outline order,
step, clip index, attempt): stream ``(step, attempt, kind)`` of the run seed is a
PCG64 sequence, and classroom ``cid`` owns the block of it that starts at
``cid * per_classroom``. A block is reached with ``PCG64.advance`` so one
classroom's draws never depend on which other classrooms were drawn, nor on the
order in which calls arrive. The model draws many classrooms at once, the fake
provider one at a time; both get the same numbers.

The learner's playback draws one audio duration per speech clip from stream
``(98, 0, 0)`` (:meth:`Draws.audio_us`), keyed like a clip's TTS latency.

Latencies are returned as integer microseconds: both worlds keep time in whole
microseconds so that sums are exact and equal-time ties are real ties.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .dists import Dist, quantile
from .errors import UserError
from .rules import STAGGER_DISTS
from .scenario import STEPS, Scenario
from .tokens import decode_us, tokens_to_int

__all__ = [
    "KIND_5XX",
    "KIND_429",
    "KIND_FAULT",
    "KIND_JITTER",
    "KIND_LATENCY",
    "KIND_TOKENS_IN",
    "KIND_TOKENS_OUT",
    "PLAYBACK_KEY",
    "SPEECHES_KEY",
    "STAGGER_DISTS",
    "Draws",
    "client_jitter_u",
    "seconds_to_us",
    "tenant_offsets_us",
]

KIND_LATENCY = 0
KIND_429 = 1
KIND_5XX = 2
KIND_FAULT = 3
KIND_JITTER = 4  # the client's retry jitter U[0, 1) after a failed attempt (#788)
KIND_TOKENS_IN = 5  # a call's input tokens (drawn once per call: attempt 0)
KIND_TOKENS_OUT = 6  # an attempt's output tokens (characters for TTS)
SPEECHES_KEY = (99, 0, 0)
PLAYBACK_KEY = (98, 0, 0)  # the audio duration of each speech clip (the learner's playback)
US_PER_S = 1_000_000


_Uniforms = NDArray[np.float64] | None
Admission = tuple[NDArray[np.int64], _Uniforms, _Uniforms, _Uniforms]
"""An attempt's latencies and its 429, 5xx and fault uniforms (:meth:`Draws.admission`)."""


def seconds_to_us(seconds: NDArray[np.float64]) -> NDArray[np.int64]:
    """Round seconds to whole microseconds."""
    out: NDArray[np.int64] = np.rint(np.asarray(seconds, dtype=float) * US_PER_S).astype(np.int64)
    return out


_STATES: dict[tuple[int, tuple[int, ...]], dict[str, Any]] = {}  # (seed, key) -> PCG64 state
_MAX_STATES = 4096
_SCRATCH = threading.local()  # one PCG64 and its Generator per thread, set for each stream


def _stream_at(seed: int, key: tuple[int, ...], skip: int) -> np.random.Generator:
    """Stream ``key`` of ``seed`` (PCG64 seeded by ``SeedSequence(seed, spawn_key=key)``),
    advanced by ``skip`` draws, ready to draw before this thread's next call. Seeding is
    most of the cost of a one-classroom block (the fake provider draws one classroom at a
    time), so each stream's seeded state is kept and copied into a scratch generator: the
    same numbers as a freshly seeded PCG64 (tests/sim/test_draws.py)."""
    state = _STATES.get((seed, key))
    if state is None:
        if len(_STATES) >= _MAX_STATES:
            _STATES.clear()
        seeded = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key))
        state = _STATES[(seed, key)] = dict(seeded.state)
    scratch: tuple[np.random.PCG64, np.random.Generator] | None = getattr(_SCRATCH, "gen", None)
    if scratch is None:
        bitgen = np.random.PCG64(0)
        scratch = _SCRATCH.gen = (bitgen, np.random.Generator(bitgen))
    bitgen, gen = scratch
    bitgen.state = state  # type: ignore[assignment]  # a PCG64 state, kept as a dict
    if skip:
        bitgen.advance(skip)
    return gen


class Draws:
    """Keyed draws for classrooms ``lo .. hi-1`` of one scenario and seed (lazy, cached)."""

    def __init__(
        self, scenario: Scenario, seed: int, lo: int, hi: int, *, compiled: bool = True
    ) -> None:
        if seed < 0 or lo < 0 or hi <= lo:
            raise ValueError(
                f"seed and classroom ids must be >= 0 and hi > lo; got "
                f"seed={seed}, lo={lo}, hi={hi}"
            )
        self.scenario = scenario
        self.compiled = compiled  # log-normal quantiles through sim.ndtri (dists.quantile)
        self.seed = int(seed)
        self.lo = int(lo)
        self.hi = int(hi)
        self.n = scenario.outlines
        self.kmax = max(1, scenario.max_clips)
        self._cache: dict[tuple[int, int, int], NDArray[np.float64]] = {}
        self._lat: dict[tuple[int, int], NDArray[np.int64]] = {}
        self._speeches: NDArray[np.int64] | None = None
        self._audio: NDArray[np.int64] | None = None
        self._tok: dict[tuple[int, int, int], NDArray[np.int64]] = {}
        self._admit: dict[tuple[int, int], Admission] = {}  # :meth:`admission`'s cache
        self._play: list[list[int]] | None = None  # :meth:`playback_row`'s table
        self._speeches_rows: list[list[int]] | None = None  # :meth:`speeches_row`'s table
        self._plain: dict[tuple[int, int, float, float, float], list[list[int | None]]] = {}

    def quantile(self, dist: Dist, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """``dist.quantile(u)`` (:func:`sim.dists.quantile`, compiled or not)."""
        return quantile(dist, u, compiled=self.compiled)

    def _per(self, step: int) -> int:
        return self.n * self.kmax if step == 2 else self.n

    def per_classroom(self, step: int) -> int:
        """Columns of a step's tables per classroom (:meth:`column`'s range)."""
        return self._per(step)

    def uniforms(self, key: tuple[int, int, int], per: int) -> NDArray[np.float64]:
        """Uniforms of stream ``key`` for the classrooms, shape ``(hi-lo, per)``."""
        u = self._cache.get(key)
        if u is None:
            gen = _stream_at(self.seed, key, self.lo * per)
            u = gen.random((self.hi - self.lo) * per).reshape(self.hi - self.lo, per)
            self._cache[key] = u
        return u

    def keep_uniforms(self, key: tuple[int, int, int], u: NDArray[np.float64]) -> None:
        """Stream ``key``'s uniforms for the classrooms, drawn elsewhere (the numbers
        :meth:`uniforms` would draw: :mod:`sim.runs_nb_tables`' compiled PCG64), kept as
        :meth:`uniforms` keeps its own; shape ``(hi-lo, per)``."""
        if u.ndim != 2 or u.shape[0] != self.hi - self.lo:
            raise AssertionError(f"keep_uniforms: shape {u.shape}, {self.hi - self.lo} rows wanted")
        self._cache[key] = u

    def admission(self, step: int, attempt: int) -> Admission:
        """What the provider's admission of an attempt reads (:meth:`sim.provider.Provider.
        decide`), in one look-up: the latencies, and the 429, 5xx and fault uniforms where the
        step's key can draw them (``None`` where it cannot: its ``u`` is 1)."""
        got = self._admit.get((step, attempt))
        if got is None:
            sc = self.scenario
            q = sc.quota_tts if step == 2 else sc.quota_llm
            got = self._admit[(step, attempt)] = (
                self.latency_us(step, attempt),
                self.fault_u(step, attempt, KIND_429) if q.p_429 else None,
                self.fault_u(step, attempt, KIND_5XX) if q.p_5xx else None,
                self.fault_u(step, attempt, KIND_FAULT) if q.faulty else None,
            )
        return got

    def plain_ok_us(
        self, step: int, attempt: int, p_429: float, p_5xx: float, p_fault: float
    ) -> list[list[int | None]]:
        """Per classroom and column (:meth:`column`), the attempt's latency where its draws
        make an admitted request a plain 200 on a key with these probabilities (its 429,
        5xx and fault uniforms each at least the probability: the tests of
        :meth:`sim.provider.KeyState.admit_open`, a missing uniform read as 1), else
        ``None``; as Python lists, made once per key's probabilities (the model's hot
        path reads one value per request)."""
        key = (step, attempt, p_429, p_5xx, p_fault)
        got = self._plain.get(key)
        if got is None:
            lats, r429, r5xx, rf = self.admission(step, attempt)
            ok = np.ones(lats.shape, dtype=bool)
            for u, p in ((r429, p_429), (r5xx, p_5xx), (rf, p_fault)):
                if u is not None:  # (a missing one, 1, is below no probability)
                    ok &= ~(u < p)
            table: NDArray[Any] = lats.astype(object)  # (Python integers)
            table[~ok] = None
            got = self._plain[key] = table.tolist()
        return got

    def fault_u(self, step: int, attempt: int, kind: int) -> NDArray[np.float64]:
        """Uniforms deciding a random 429 (``KIND_429``) or 5xx (``KIND_5XX``)."""
        return self.uniforms((step, attempt, kind), self._per(step))

    def jitter_u(self, step: int, attempt: int) -> NDArray[np.float64]:
        """Uniforms for the retry jitter after attempt ``attempt`` of a call (same shape as
        :meth:`fault_u`): the client draws them, so both worlds draw the same jitter."""
        return self.uniforms((step, attempt, KIND_JITTER), self._per(step))

    def latency_us(self, step: int, attempt: int) -> NDArray[np.int64]:
        """Latencies in µs: shape ``(classrooms, N)`` or ``(classrooms, N*kmax)`` for tts."""
        lat = self._lat.get((step, attempt))
        if lat is None:
            u = self.uniforms((step, attempt, KIND_LATENCY), self._per(step))
            lat = self.latency_at(step, attempt, None, u.reshape(-1)).reshape(u.shape)
            self._lat[(step, attempt)] = lat
        return lat

    def latency_at(
        self, step: int, attempt: int, cells: NDArray[np.int64] | None, u: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """:meth:`latency_us`'s values at ``cells`` of its table (flat; None: every cell) from
        their uniforms ``u``: each cell's quantile of its outline's distribution (content by
        scene type), in µs; plus the output's decoding time where the step derives it."""
        sc = self.scenario
        if step == 0:
            dists = [sc.content_dist(order) for order in range(self.n)]
            kinds = list({id(x): x for x in dists}.values())  # (each distribution once)
            if len(kinds) == 1:
                out = self.quantile(kinds[0], u)
            else:
                orders = (np.arange(u.size) if cells is None else cells) % self.n
                ids = [id(x) for x in kinds]
                of = np.array([ids.index(id(x)) for x in dists])[orders]
                out = np.empty_like(u)
                for i, dist in enumerate(kinds):
                    sel = of == i
                    out[sel] = self.quantile(dist, u[sel])
        else:
            out = self.quantile(sc.actions if step == 1 else sc.tts, u)
        lat = seconds_to_us(out)
        spec = sc.step_tokens(step)
        if spec is not None and spec.derived:  # time to first token + output / speed
            tok = self.tokens_out(step, attempt).reshape(-1)
            lat = lat + decode_us(tok if cells is None else tok[cells], spec.output_tps)
        return lat

    def tokens_in(self, step: int) -> NDArray[np.int64]:
        """A call's input tokens (0 without a distribution); same shape as latencies."""
        return self._tokens(step, 0, KIND_TOKENS_IN)

    def tokens_out(self, step: int, attempt: int) -> NDArray[np.int64]:
        """An attempt's output tokens (TTS: characters); same shape as latencies."""
        return self._tokens(step, attempt, KIND_TOKENS_OUT)

    def _tokens(self, step: int, attempt: int, kind: int) -> NDArray[np.int64]:
        key = (step, attempt, kind)
        got = self._tok.get(key)
        if got is None:
            spec = self.scenario.step_tokens(step)
            dist = None if spec is None else (spec.input if kind == KIND_TOKENS_IN else spec.output)
            shape = (self.hi - self.lo, self._per(step))
            if dist is None:
                got = np.zeros(shape, dtype=np.int64)
            else:
                got = tokens_to_int(self.quantile(dist, self.uniforms(key, self._per(step))))
            self._tok[key] = got
        return got

    def speeches(self) -> NDArray[np.int64]:
        """Speech actions per scene, shape ``(classrooms, N)``."""
        if self._speeches is None:
            u = self.uniforms(SPEECHES_KEY, self.n)
            self._speeches = np.asarray(self.scenario.speech_actions.quantile(u), dtype=np.int64)
        return self._speeches

    def audio_us(self) -> NDArray[np.int64]:
        """Audio duration of every speech clip in µs, shape ``(classrooms, N*kmax)`` (column
        :meth:`column` of step 2): stream ``(98, 0, 0)``, ``[playback] clip``."""
        if self._audio is None:
            u = self.uniforms(PLAYBACK_KEY, self.n * self.kmax)
            self._audio = seconds_to_us(self.quantile(self.scenario.playback.clip, u))
        return self._audio

    def playback_us(self, row: int, order: int, clips: int) -> int:
        """Playback time of one scene with ``clips`` speech clips: the non-speech constant
        plus its clips' audio (the same integers :meth:`playback_table_us` sums)."""
        base = order % self.n * self.kmax
        audio: list[int] = self.audio_us()[row, base : base + min(clips, self.kmax)].tolist()
        return self.scenario.playback.non_speech_us + sum(audio)

    def playback_table_us(self) -> NDArray[np.int64]:
        """Playback time of every scene, shape ``(classrooms, N)``, for its drawn clips: the
        audio drawn at the clips scenes have only (the same integers there: elementwise
        quantiles); with ``compiled``, the clips gathered and summed by :mod:`sim.clips_nb`."""
        pb = self.scenario.playback
        if self._audio is None and self.compiled:
            from .clips_nb import at_clips, sum_clips_us

            u = self.uniforms(PLAYBACK_KEY, self.n * self.kmax)
            x = self.quantile(pb.clip, at_clips(u, self.speeches(), self.kmax))
            return sum_clips_us(x, self.speeches(), self.kmax, pb.non_speech_us)
        rows = self.hi - self.lo
        mask = np.arange(self.kmax)[None, None, :] < self.speeches()[:, :, None]
        if self._audio is not None:
            audio = self._audio.reshape(rows, self.n, self.kmax)
        else:  # only the clips scenes have (the same integers there: elementwise quantiles)
            u = self.uniforms(PLAYBACK_KEY, self.n * self.kmax).reshape(mask.shape)
            audio = np.zeros(mask.shape, dtype=np.int64)
            audio[mask] = seconds_to_us(self.quantile(pb.clip, u[mask]))
        out: NDArray[np.int64] = pb.non_speech_us + np.where(mask, audio, 0).sum(axis=2)
        return out

    def speeches_row(self, row: int) -> list[int]:
        """Row ``row`` of :meth:`speeches` as Python integers (made once for all the
        classrooms)."""
        if self._speeches_rows is None:
            self._speeches_rows = self.speeches().tolist()
        got: list[int] = self._speeches_rows[row]
        return got

    def playback_row(self, row: int) -> list[int]:
        """Row ``row`` of :meth:`playback_table_us` as Python integers (the table made once
        for all the classrooms; the same integers :meth:`playback_us` sums)."""
        if self._play is None:
            self._play = self.playback_table_us().tolist()
        got: list[int] = self._play[row]
        return got

    def column(self, step: int, order: int, clip: int) -> int:
        """Index of a call in a row of the step's table."""
        order %= self.n
        return order * self.kmax + (clip % self.kmax) if step == 2 else order

    def step_index(self, step_name: str) -> int:
        return STEPS.index(step_name)


def client_jitter_u(
    scenario: Scenario, draws: Draws, row: int, step: int, order: int, clip: int, attempt: int
) -> float:
    """The client's retry jitter after ``attempt`` of a call: the profile's fixed
    ``jitter_u``, else the keyed draw (row ``row`` of ``draws``)."""
    fixed = scenario.client.jitter_u
    if fixed is not None:
        return fixed
    return float(draws.jitter_u(step, attempt)[row, draws.column(step, order, clip)])


def tenant_offsets_us(
    seed: int, run_id: int, tenants: int, stagger_s: float, dist: str = "constant"
) -> list[int]:
    """Start offsets (µs) of a run's tenants: gaps of ``stagger_s`` (``constant``) or
    exponential gaps of mean ``stagger_s`` drawn from the run's own keyed stream."""
    if dist not in STAGGER_DISTS:
        raise UserError(f"stagger_dist: must be one of {', '.join(STAGGER_DISTS)}; got {dist!r}")
    if tenants <= 1 or stagger_s == 0:
        return [0] * tenants
    if dist == "constant":
        gaps = np.full(tenants - 1, float(stagger_s))
    else:
        bitgen = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(97, run_id)))
        u = np.random.Generator(bitgen).random(tenants - 1)
        gaps = -stagger_s * np.log1p(-u)
    return [0, *(int(x) for x in np.cumsum(seconds_to_us(gaps)))]
