"""The fake provider: OpenMAIC's three generation routes as a Starlette app.

Latencies come from the scenario's keyed draws and quotas from
:mod:`sim.provider` (the same code the model uses). Two clocks:

* ``wall``: model time = real time / ``time_scale``; every request is decided
  on arrival;
* ``virtual``: for a looptime event loop driven in-process through
  ``httpx.ASGITransport``; arrivals on a limited key at one virtual instant
  are decided together when the loop has nothing else to do at that instant,
  in the canonical order of :func:`sim.provider.arrival_order` (the model
  does the same with a low-priority SimPy event).

Run it with ``scenebench serve`` (uvicorn on 127.0.0.1) or embed it with
:class:`ServerThread` or :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Self, TypedDict, Unpack

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.draws import Draws
from sim.provider import PENDING, RESET, TRUNCATED, Call, Decision, Provider, new_call
from sim.rules import Counts, Step, after_attempt, outcome_of, parse_knob
from sim.scenario import SCENE_TYPES, Scenario
from sim.upstream import ErrorShape, route_status

from . import provider_api as _api
from .hot_routes import PLAIN, FakeApp, HotRoutes, old_route, provider_route
from .wire import (
    COUNTS_HEADER,
    FOREGROUND_HEADER,
    SENT_HEADER,
    classroom_of,
    format_counts,
    parse_audio_id,
)

__all__ = [
    "ChildServer",
    "ErrorCode",
    "FakeProvider",
    "ServerConfig",
    "ServerOptions",
    "ServerProcess",
    "ServerThread",
    "create_app",
]

MAX_BODY_BYTES = 1_000_000
_FAKE_AUDIO = "SUQzBAAAAAAAI1RTU0UAAAAPAAADTGF2ZjU4Ljc2LjEwMAAAAAAAAAAAAAAA"


class ErrorCode(StrEnum):
    """The ``errorCode`` of an error answer (the names upstream's routes use)."""

    MISSING_REQUIRED_FIELD = "MISSING_REQUIRED_FIELD"
    INVALID_REQUEST = "INVALID_REQUEST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    GENERATION_FAILED = "GENERATION_FAILED"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


def _error(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"success": False, "errorCode": code, "error": message},
        status_code=int(status),
        headers=headers,
    )


class _BadRequest(Exception):
    """A request the route refuses before any model call (answered by :func:`_bad_request`)."""

    def __init__(
        self, code: ErrorCode, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ServerConfig:
    """How the fake provider runs; each field as in :class:`FakeProvider`."""

    time_scale: float = 1.0
    virtual: bool = False
    parallel_scene_concurrency: int | str | None = None
    keep_log: bool = True
    latency_factor: float = 1.0


class ServerOptions(TypedDict, total=False):
    """:class:`ServerConfig`'s fields as keyword arguments of :func:`create_app`."""

    time_scale: float
    virtual: bool
    parallel_scene_concurrency: int | str | None
    keep_log: bool
    latency_factor: float


DRAWS_BLOCK = 64  # classrooms per block of keyed draws (see _BlockProvider)
DRAWS_CACHE = 256 * DRAWS_BLOCK  # classrooms whose draws are kept (the newest blocks)


class _BlockProvider(Provider):
    """:class:`~sim.provider.Provider` whose draws are made for :data:`DRAWS_BLOCK`
    consecutive classrooms at once: a classroom's row of a block holds the numbers of its own
    :class:`~sim.draws.Draws` (keyed streams, each classroom at its own offset; the engines
    draw in blocks too), and the block's seeding and quantiles are paid once for its
    classrooms instead of once each (a long soak gives every request its own classroom);
    their quantiles scipy's own (``compiled=False``: the same numbers without numba's import
    and first call in the middle of a run on the wall clock). The newest
    ``draws_cache / DRAWS_BLOCK`` blocks are kept."""

    def draws_for(self, cid: int) -> tuple[Draws, int]:
        lo = cid - cid % DRAWS_BLOCK
        d = self._draws.get(lo)
        if d is None:
            d = Draws(self.scenario, self.seed, lo, lo + DRAWS_BLOCK, compiled=False)
            self._draws[lo] = d
            if len(self._draws) * DRAWS_BLOCK > self._draws_cache:
                self._draws.popitem(last=False)
        return d, cid - lo


class FakeProvider:
    """State behind the app: the shared provider rules, the clock, the batcher, the log."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        *,
        time_scale: float = 1.0,
        virtual: bool = False,
        parallel_scene_concurrency: int | str | None = None,
        keep_log: bool = True,
        latency_factor: float = 1.0,
    ) -> None:
        """``latency_factor`` multiplies every wait (1: the scenario's latencies; else a
        deliberately biased provider, for tests of the checks that must catch a bias)."""
        self.scenario = scenario
        self.latency_factor = float(latency_factor)
        self.seed = seed
        self.virtual = virtual
        self.time_scale = 1.0 if virtual else float(time_scale)
        # the newest 100,000 requests are kept: enough for any run, flat over a long soak;
        # the draws of the newest 16,384 classrooms (256 blocks: one per client connection
        # of a busy load, each naming its own run of classrooms, and room to spare)
        self.provider: Provider = _BlockProvider(
            scenario, seed, keep_log=keep_log, max_log=100_000, draws_cache=DRAWS_CACHE
        )
        pscv: int | str = (
            scenario.parallel_scene_concurrency
            if parallel_scene_concurrency is None
            else parallel_scene_concurrency
        )
        self.parallel_scene_concurrency = pscv
        self.epoch = 0.0 if virtual else time.monotonic()
        # attempt counters per call; bounded (oldest forgotten) so a long soak stays flat
        self._attempts: OrderedDict[tuple[int, int, int, int], int] = OrderedDict()
        self.max_calls_tracked = 100_000
        self._pending: list[tuple[Call, asyncio.Future[Decision]]] = []
        self._probe_scheduled = False
        self._last_decided_us = 0
        self.actions_inputs: dict[tuple[int, int], list[str]] = {}
        self._armed: set[int] = set()
        # whether a client that goes away frees a slot on either key (the hot routes then
        # watch the connection, runner.world.hot_routes)
        self.frees_on_disconnect_any = bool(
            scenario.quota_llm.disconnect_frees or scenario.quota_tts.disconnect_frees
        )
        if scenario.quota_llm.shared or scenario.quota_tts.shared:
            self.provider.arm = self._arm  # shared capacity: the provider decides, we wait

    def _arm(self, at_us: int) -> None:
        """A timer calling the provider's ``fire`` at model time ``at_us``."""
        if at_us in self._armed:
            return
        self._armed.add(at_us)

        def fire() -> None:
            self._armed.discard(at_us)
            self.provider.fire(max(at_us, self.now_us()))

        delay = max(0, at_us - self.now_us()) / 1e6 * self.time_scale
        asyncio.get_running_loop().call_later(delay, fire)

    async def served(self, dec: Decision) -> Decision:
        """Wait for a shared capacity to finish a PENDING request (:mod:`sim.sharing`)."""
        assert dec.job is not None
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()

        def resolve(d: Decision) -> None:
            if not fut.done():
                fut.set_result(d)

        self.provider.wait(dec.job, resolve)
        try:
            return await fut
        except asyncio.CancelledError:
            self.provider.forget(dec.job)
            raise

    # -- clock -------------------------------------------------------------------------
    def now_us(self) -> int:
        """Model time in µs since the server's epoch."""
        t = asyncio.get_running_loop().time() if self.virtual else time.monotonic()
        return round((t - self.epoch) / self.time_scale * 1e6)

    async def sleep_us(self, us: int, since: float | None = None) -> None:
        """Wait ``us`` model µs; from ``since`` (this machine's monotonic seconds, when the
        client sent the request) when given, else from now."""
        if us > 0:
            delay = us / 1e6 * self.time_scale * self.latency_factor
            if since is not None:
                delay -= time.monotonic() - since
            if delay > 0:
                await asyncio.sleep(delay)

    def sent_at(self, header: str | None) -> float | None:
        """When the client sent the request (:data:`runner.world.wire.SENT_HEADER`), if that is a
        plausible time on this machine's clock (the past 250 ms); the wall clock only."""
        if self.virtual or not header or not header.isdigit():
            return None
        sent = int(header) / 1e9
        return sent if 0.0 <= time.monotonic() - sent <= 0.25 else None

    def reset(self) -> None:
        self.provider.reset()
        self._last_decided_us = 0
        self._attempts.clear()
        self.actions_inputs.clear()

    # -- admission ---------------------------------------------------------------------
    def decision_us(self, sent: float | None) -> int:
        """When a request is decided, in model µs: when the client sent it (``sent``, this
        machine's monotonic seconds) if known, else now; never before the previous decision
        (arrivals may overtake each other on the way in)."""
        t = asyncio.get_running_loop().time() if self.virtual else time.monotonic()  # now_us
        now = round((t - self.epoch) / self.time_scale * 1e6)
        at = now if sent is None else min(now, round((sent - self.epoch) / self.time_scale * 1e6))
        if at > self._last_decided_us:
            self._last_decided_us = at
        return self._last_decided_us

    async def admit(
        self, cid: int, step: int, order: int, clip: int, api_key: str, sent: float | None = None
    ) -> Decision:
        attempt = self.next_attempt(cid, step, order, clip)
        call = Call(cid, step, order, clip, attempt, api_key)
        if not (self.virtual and self.provider.limited(step)):  # admit_call's first case
            return self.provider.decide(call, self.decision_us(sent))
        return await self.admit_call(call, sent)

    def next_attempt(self, cid: int, step: int, order: int, clip: int) -> int:
        """The attempt number of the call's next request (0 for the first), counted here."""
        ident = (cid, step, order, clip)
        attempts = self._attempts
        attempt = attempts.pop(ident, 0)
        attempts[ident] = attempt + 1
        if len(attempts) > self.max_calls_tracked:
            attempts.popitem(last=False)
        return attempt

    async def admit_call(self, call: Call, sent: float | None = None) -> Decision:
        """Decide ``call`` (its attempt given): at once, or batched with the other arrivals
        at this virtual instant on a limited key."""
        step = call.step
        if not (self.virtual and self.provider.limited(step)):
            return self.provider.decide(call, self.decision_us(sent))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((call, fut))
        if not self._probe_scheduled:
            self._probe_scheduled = True
            loop.call_soon(self._probe)
        return await fut

    def _probe(self) -> None:
        """Decide batched arrivals once nothing else is left to run at this virtual instant."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        scheduled = getattr(loop, "_scheduled", None)
        busy = bool(ready) or bool(scheduled and scheduled[0].when() <= loop.time())
        if busy:
            loop.call_soon(self._probe)
            return
        self._probe_scheduled = False
        items, self._pending = self._pending, []
        items.sort(key=lambda it: self.provider.arrival_key(it[0]))
        now = self.now_us()
        for call, fut in items:
            if not fut.cancelled():
                fut.set_result(self.provider.decide(call, now))

    def route_now(
        self, cid: int, step: int, order: int, clip: int, api_key: str, sent: float | None = None
    ) -> tuple[Decision | None, bool]:
        """:meth:`route_call`'s first attempt made on arrival, and whether it ends the call
        with nothing to wait (a 200 or an injected fault with no latency: no coroutine made;
        the call's counts are then ``_FIRST_COUNTS``'); if not, :meth:`route_call` goes on
        from it. ``(None, False)`` for a call batched with its virtual instant's arrivals."""
        if self.virtual and self.provider.limited(step):
            return None, False
        attempt = self.next_attempt(cid, step, order, clip)  # route_call's unbatched attempt
        dec = self.provider.decide(
            new_call((cid, step, order, clip, attempt, api_key)), self.decision_us(sent)
        )
        return dec, dec.latency_us == 0 and dec.status in _FIRST_COUNTS  # (PENDING is not 0)

    async def route_call(
        self,
        cid: int,
        step: int,
        order: int,
        clip: int,
        api_key: str,
        fg: bool,
        sent: float | None = None,
        first: Decision | None = None,
    ) -> tuple[Decision, Counts]:
        """What the route does with the model call: admit, wait the latency and, in the
        ``route`` error shape before #788, retry a 429 or 5xx as the AI SDK does; returns the
        last decision and the provider attempts' counts (the same rule as the model's).
        ``first``: its first attempt's decision, already made (by :meth:`route_now`)."""
        counts = Counts()
        k = 0
        batched = self.virtual and self.provider.limited(step)
        while True:
            if first is not None:  # made on arrival, unbatched
                dec, first = first, None
            elif batched:
                dec = await self.admit(cid, step, order, clip, api_key, sent)
            else:  # :meth:`admit`'s first case, inline (no coroutine per attempt)
                attempt = self.next_attempt(cid, step, order, clip)
                call = Call(cid, step, order, clip, attempt, api_key)
                dec = self.provider.decide(call, self.decision_us(sent))
            if sent is not None:  # decided without a pause just now: the latency runs from then
                sent = self.epoch + self._last_decided_us / 1e6 * self.time_scale
            if dec.latency_us == PENDING:  # a shared capacity serves it (sim.sharing)
                dec = await self.served(dec)
            elif dec.status != 429 and dec.latency_us > 0:  # (sleep_us waits nothing for 0)
                decided_us = self.now_us() if self.virtual else self._last_decided_us
                try:
                    await self.sleep_us(dec.latency_us, sent)
                except asyncio.CancelledError:  # the client gave up (issue 21)
                    if self.provider.frees_on_disconnect(step):
                        call = Call(cid, step, order, clip, 0, api_key)
                        self.provider.release(call, decided_us + dec.latency_us, self.now_us())
                    raise
            sent = None  # a later attempt's latency runs from its own start
            if dec.status in (RESET, TRUNCATED):
                return dec, counts
            counts.count(dec.status)
            if dec.status == 200:
                return dec, counts
            ra = None if dec.retry_after_ms is None else dec.retry_after_ms * 1000
            policy = self.scenario.client.route_policy(step, fg)  # (a 200 needs none)
            verdict = after_attempt(policy, k, outcome_of(dec.status), ra)
            if verdict.fail:
                return dec, counts
            counts.retries += 1
            k += 1
            await self.sleep_us(verdict.wait_us)

    def log_rows(self, cid: int | None = None) -> list[tuple[Any, ...]]:
        return [e for e in self.provider.log if cid is None or e[0] == cid]


def _require(body: dict[str, Any], *names: str) -> None:
    for n in names:
        v = body.get(n)
        if v is None or (isinstance(v, str) and not v) or (isinstance(v, list) and not v):
            raise _BadRequest(ErrorCode.MISSING_REQUIRED_FIELD, f"Missing required field: {n}")


def _outline(body: dict[str, Any]) -> dict[str, Any]:
    o = body.get("outline")
    if not isinstance(o, dict):
        raise _BadRequest(ErrorCode.MISSING_REQUIRED_FIELD, "Missing required field: outline")
    order = o.get("order")
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "outline.order must be an integer >= 0")
    if o.get("type", "slide") not in SCENE_TYPES:
        raise _BadRequest(
            ErrorCode.INVALID_REQUEST, f"outline.type must be one of {', '.join(SCENE_TYPES)}"
        )
    if not isinstance(body.get("allOutlines"), list):
        raise _BadRequest(ErrorCode.MISSING_REQUIRED_FIELD, "Missing required field: allOutlines")
    if not isinstance(body.get("stageId"), str):
        raise _BadRequest(ErrorCode.MISSING_REQUIRED_FIELD, "Missing required field: stageId")
    return o


def _actions_inputs(body: dict[str, Any]) -> list[str]:
    """Checks scene-actions' ``content`` and returns its ``previousSpeeches``."""
    if not isinstance(body["content"], dict):
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "content must be an object")
    prev = body.get("previousSpeeches", [])
    if not isinstance(prev, list) or not all(isinstance(s, str) for s in prev):
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "previousSpeeches must be a list of strings")
    return list(prev)


def _check_tts(body: dict[str, Any]) -> None:
    g = body.get
    t, a, p, v, k = g("text"), g("audioId"), g("ttsProviderId"), g("ttsVoice"), g("ttsApiKey")
    strings = type(t) is type(a) is type(p) is type(v) is str and t and a and p and v
    if strings and (k is None or type(k) is str):  # the checks below would pass
        return
    _require(body, "text", "audioId", "ttsProviderId", "ttsVoice")
    for name in ("text", "audioId", "ttsProviderId", "ttsVoice"):
        if not isinstance(body[name], str):
            raise _BadRequest(ErrorCode.INVALID_REQUEST, f"{name} must be a string")
    if body.get("ttsApiKey") is not None and not isinstance(body["ttsApiKey"], str):
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "ttsApiKey must be a string")


def _too_large() -> _BadRequest:
    return _BadRequest(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"Body over {MAX_BODY_BYTES} bytes",
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    )


async def _json_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large()
    return json_object(raw)


def json_object(raw: bytes | None) -> dict[str, Any]:
    """The body's JSON object, else the route's 400 (413: ``None``, a body over
    :data:`MAX_BODY_BYTES`), raised as :class:`_BadRequest`."""
    if raw is None:
        raise _too_large()
    try:
        data = _api.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "Body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest(ErrorCode.INVALID_REQUEST, "Body must be a JSON object")
    return data


class InjectedReset(ConnectionResetError):
    """Raised after a partial body to make the server drop the connection (an injected fault)."""


class _ResetResponse(Response):
    """Starts a response, sends part of its body, then drops the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send(
            {"type": "http.response.body", "body": b'{"success": true, "con', "more_body": True}
        )
        raise InjectedReset("scenebench: injected connection reset")


# JSONResponse's encoding (compact, UTF-8, no NaN), one encoder for every answer
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON_TYPE = (b"content-type", b"application/json")
_COUNTS_NAME = COUNTS_HEADER.encode()
# what _COMPACT.encode does with a str (JSONEncoder.encode's first case, ensure_ascii off)
_json_str: Callable[[str], str] = json.encoder.encode_basestring


class _Json(Response):
    """``JSONResponse(payload, headers={COUNTS_HEADER: counts})``'s status, headers and bytes,
    without building its headers one by one: the success answer of the hot routes."""

    def __init__(self, body: bytes, counts: str) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            _JSON_TYPE,
            (_COUNTS_NAME, counts.encode("latin-1")),
        ]


def _ok_counted(dec: Decision, counts: str, payload: dict[str, Any] | bytes) -> Response:
    """The success answer (``payload``, or its JSON already encoded as JSONResponse would),
    or its first half when the decision is an injected truncation (no counts: a cut answer
    tells the client nothing more)."""
    if dec.status == TRUNCATED:
        if isinstance(payload, bytes):
            payload = json.loads(payload)
        raw = json.dumps(payload).encode()
        return Response(raw[: len(raw) // 2], media_type="application/json")
    if not isinstance(payload, bytes):
        payload = _COMPACT.encode(payload).encode()
    return _Json(payload, counts)


class _DropInjectedResets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        # injected resets, and handlers still sleeping when a stopping server cancels them
        return not isinstance(
            exc, InjectedReset | _api.InjectedStreamReset | asyncio.CancelledError
        )


def quiet_injected_resets() -> None:
    """Keep uvicorn's error log free of the tracebacks of injected resets (idempotent)."""
    log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropInjectedResets) for f in log.filters):
        log.addFilter(_DropInjectedResets())


def _rate_limited(dec: Decision, headers: dict[str, str]) -> JSONResponse:
    if dec.rate is not None:  # OpenAI-style x-ratelimit-{limit,remaining,reset}-*
        headers.update(dec.rate.headers())
    if dec.retry_after_ms is not None:
        headers["retry-after-ms"] = str(dec.retry_after_ms)
        headers["retry-after"] = str(math.ceil(dec.retry_after_ms / 1000))
    return _error(
        HTTPStatus.TOO_MANY_REQUESTS,
        ErrorCode.RATE_LIMITED,
        f"Rate limit exceeded ({dec.reason})",
        headers,
    )


def _failed(fake: FakeProvider, dec: Decision, tally: str, step: int) -> Response:
    """The answer to a model call that did not succeed: a dropped connection, or the error
    the route returns (in the ``route`` shape every failure is a 500, as before #788; in the
    ``status`` shape the provider's status as :func:`sim.upstream.route_status` says)."""
    if dec.status == RESET:
        return _ResetResponse()
    hdrs = {COUNTS_HEADER: tally}
    msg = "Upstream model call failed"
    shape = fake.scenario.client.provider_errors
    if shape == ErrorShape.ROUTE:
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, ErrorCode.GENERATION_FAILED, msg, hdrs)
    if shape == ErrorShape.STATUS:  # since #788: the provider's status, no Retry-After
        status = route_status(shape, step, dec.status)
        code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.UPSTREAM_ERROR
        if status == 500 and (step == 2 or dec.status < 400):
            code = ErrorCode.GENERATION_FAILED if step == 2 else ErrorCode.INTERNAL_ERROR
        return _error(status, code, msg, hdrs)
    if dec.status == HTTPStatus.TOO_MANY_REQUESTS:
        return _rate_limited(dec, hdrs)
    return _error(dec.status, ErrorCode.GENERATION_FAILED, msg, hdrs)


# -- the routes: module-level endpoints, their state on ``request.app.state.fake`` ----------
def _fake(request: Request) -> FakeProvider:
    fake: FakeProvider = request.app.state.fake
    return fake


Headers = _api.Headers


async def _generate(
    fake: FakeProvider,
    call: tuple[int, int, int, int],
    api_key: str,
    headers: Headers,
    request: Request | None,
    payload: Callable[[], dict[str, Any] | bytes],
) -> Response:
    """The route's model call ``call`` (step, classroom, order, clip), then its answer: the
    ``payload`` (built once the call succeeded) or the failure's. ``request``: needed when
    the key's client frees its slot by going away (else may be ``None``)."""
    step, cid, order, clip = call  # plain ints: the request log holds the model's values
    fg = headers.get(FOREGROUND_HEADER) == "1"
    sent = fake.sent_at(headers.get(SENT_HEADER))
    if not fake.provider.frees_on_disconnect(step):
        first, settled = fake.route_now(cid, step, order, clip, api_key, sent)
        if settled and first is not None:  # (its counts: the first attempt's alone)
            dec, tally = first, _FIRST_TALLIES[first.status]
        else:  # route_call goes on from the first attempt (unless batched: made there)
            dec, counts = await fake.route_call(cid, step, order, clip, api_key, fg, sent, first)
            tally = format_counts(counts, dec.status)
    else:  # issue 21: a client that goes away frees its slot (route_call's cleanup)
        assert request is not None, "a key freed on disconnect needs the request"
        routed = fake.route_call(cid, step, order, clip, api_key, fg, sent)
        done, got = await _api.unless_disconnected(request, routed)
        if not done:
            return Response(status_code=499)
        dec, counts = got
        tally = format_counts(counts, dec.status)
    if dec.status in _ANSWERED:
        return _ok_counted(dec, tally, payload())
    return _failed(fake, dec, tally, step)


# what the hot routes compare with, as plain ints: an enum member's look-up costs a
# descriptor call per request (Python 3.11)
_ANSWERED = (int(HTTPStatus.OK), TRUNCATED)  # a success, or one whose body is cut


def _first_counts(status: int) -> Counts:
    """route_call's counts when its first attempt, of ``status``, is its last: a 200 counted,
    an injected fault not."""
    counts = Counts()
    if status == 200:
        counts.count(status)
    return counts


# a first attempt that ends route_call at once, and its counts (as route_call counts them)
_FIRST_COUNTS = {s: _first_counts(s) for s in (int(HTTPStatus.OK), RESET, TRUNCATED)}
_FIRST_TALLIES = {s: format_counts(c, s) for s, c in _FIRST_COUNTS.items()}  # their headers
_CONTENT, _ACTIONS, _TTS = int(Step.CONTENT), int(Step.ACTIONS), int(Step.TTS)


def _content(outline: dict[str, Any]) -> dict[str, Any]:
    order = outline["order"]
    return {
        "type": outline.get("type", "slide"),
        "elements": [
            {
                "id": f"el-{order}-{j}",
                "type": "text",
                "content": f"{outline.get('title', '')} point {j + 1}",
            }
            for j in range(3)
        ],
    }


def _scene(
    fake: FakeProvider, cid: int, outline: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    """Scene-actions' success payload: the drawn number of speeches, a spotlight after the
    first one."""
    order = outline["order"]
    k = fake.provider.speeches(cid, order)
    speeches = [
        f"[o{order} s{j}] Now let us look at {outline.get('title', 'this')}, part {j}."
        for j in range(k)
    ]
    actions: list[dict[str, Any]] = []
    for j, text in enumerate(speeches):
        actions.append({"id": f"sb-{cid}-o{order}-s{j}", "type": "speech", "text": text})
        if j == 0:
            actions.append(
                {
                    "id": f"sb-{cid}-o{order}-spot",
                    "type": "spotlight",
                    "elementId": f"el-{order}-0",
                }
            )
    scene = {
        "id": f"scene-{cid}-{order}",
        "stageId": body["stageId"],
        "type": outline.get("type", "slide"),
        "title": outline.get("title", ""),
        "order": order,
        "content": body["content"],
        "actions": actions,
    }
    return {"success": True, "scene": scene, "previousSpeeches": speeches}


async def scene_content(request: Request) -> Response:
    body = await _json_body(request)
    return await content_answer(_fake(request), body, request.headers, request)


async def content_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """Scene-content's answer to a request body (``request``: see :func:`_generate`)."""
    outline = _outline(body)
    _require(body, "allOutlines", "stageId")
    call = (_CONTENT, classroom_of(body["stageId"]), outline["order"], 0)
    payload = {"success": True, "content": _content(outline), "effectiveOutline": outline}
    key = headers.get("x-api-key", "")
    return await _generate(fake, call, key, headers, request, lambda: payload)


async def scene_actions(request: Request) -> Response:
    body = await _json_body(request)
    return await actions_answer(_fake(request), body, request.headers, request)


async def actions_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """Scene-actions' answer to a request body (``request``: see :func:`_generate`)."""
    outline = _outline(body)
    _require(body, "allOutlines", "stageId", "content")
    prev = _actions_inputs(body)
    cid, order = classroom_of(body["stageId"]), outline["order"]
    fake.actions_inputs[(cid, order)] = prev
    key = headers.get("x-api-key", "")
    call = (_ACTIONS, cid, order, 0)
    return await _generate(
        fake, call, key, headers, request, lambda: _scene(fake, cid, outline, body)
    )


async def tts(request: Request) -> Response:
    body = await _json_body(request)
    return await tts_answer(_fake(request), body, request.headers, request)


# the TTS answer's JSON around its audio id, as JSONResponse writes it
_TTS_HEAD = b'{"success":true,"audioId":'
_TTS_TAIL = f',"base64":"{_FAKE_AUDIO}","format":"mp3"}}'.encode()


async def tts_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """The TTS route's answer to a request body (``request``: see :func:`_generate`)."""
    _check_tts(body)
    audio_id = body["audioId"]
    cid, order, clip = parse_audio_id(audio_id)
    key = str(body.get("ttsApiKey") or "")

    def payload() -> bytes:  # {"success", "audioId", "base64", "format"}, encoded
        return _TTS_HEAD + _json_str(audio_id).encode() + _TTS_TAIL

    return await _generate(fake, (_TTS, cid, order, clip), key, headers, request, payload)


async def health(request: Request) -> Response:
    knob = _fake(request).parallel_scene_concurrency
    return JSONResponse(
        {"success": True, "status": "ok", "generation": {"parallelSceneConcurrency": knob}}
    )


async def server_providers(request: Request) -> Response:
    """Where upstream's client reads the knob (since #660): the server's parsed value."""
    knob = parse_knob(_fake(request).parallel_scene_concurrency)
    return JSONResponse(
        {"success": True, "providers": {}, "generation": {"parallelSceneConcurrency": knob}}
    )


async def request_log(request: Request) -> Response:
    fake = _fake(request)
    cid = request.query_params.get("classroom")
    rows = fake.log_rows(int(cid) if cid and cid.isdigit() else None)
    return JSONResponse({"success": True, "now_us": fake.now_us(), "log": rows})


async def clock(request: Request) -> Response:
    return JSONResponse({"success": True, "now_us": _fake(request).now_us()})


async def hold(request: Request) -> Response:
    """Answer after ``ms`` real milliseconds (at most 1 s): requests held at once make a
    client open that many connections before a run (:func:`runner.world.run.warm_up`)."""
    ms = request.query_params.get("ms", "0")
    await asyncio.sleep(min(1000, int(ms)) / 1000 if ms.isdigit() else 0)
    return JSONResponse({"success": True})


async def reset(request: Request) -> Response:
    _fake(request).reset()
    return JSONResponse({"success": True})


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BadRequest)
    return _error(exc.status, exc.code, str(exc))


_HTTP_CODES: dict[int, ErrorCode] = {
    HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    return _error(exc.status_code, code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, ErrorCode.INTERNAL_ERROR, type(exc).__name__)


ROUTES = (
    Route("/api/generate/scene-content", scene_content, methods=["POST"]),
    Route("/api/generate/scene-actions", scene_actions, methods=["POST"]),
    Route("/api/generate/tts", tts, methods=["POST"]),
    Route("/api/health", health, methods=["GET"]),
    Route("/api/server-providers", server_providers, methods=["GET"]),
    Route("/api/_scenebench/log", request_log, methods=["GET"]),
    Route("/api/_scenebench/clock", clock, methods=["GET"]),
    Route("/api/_scenebench/hold", hold, methods=["GET"]),
    Route("/api/_scenebench/reset", reset, methods=["POST"]),
)


# -- the providers' own APIs (issue 21): implemented in runner.world.provider_api ------------
async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (:func:`runner.world.provider_api.chat_completions`)."""
    return await _api.chat_completions(request)


async def messages(request: Request) -> Response:
    """``POST /v1/messages`` (:func:`runner.world.provider_api.messages`)."""
    return await _api.messages(request)


async def speech(request: Request) -> Response:
    """``POST /v1/audio/speech`` (:func:`runner.world.provider_api.speech`)."""
    return await _api.speech(request)


async def t2a_v2(request: Request) -> Response:
    """``POST /v1/t2a_v2`` (:func:`runner.world.provider_api.t2a_v2`)."""
    return await _api.t2a_v2(request)


API_ROUTES = (
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/t2a_v2", t2a_v2, methods=["POST"]),
)
_EXCEPTION_HANDLERS = {
    _BadRequest: _bad_request,
    HTTPException: _http_error,
    Exception: _internal_error,
}


# the generation routes and provider endpoints served without Starlette's router
HOT = HotRoutes(
    routes={
        "/api/generate/scene-content": old_route(content_answer, json_object),
        "/api/generate/scene-actions": old_route(actions_answer, json_object),
        "/api/generate/tts": old_route(tts_answer, json_object),
        "/v1/chat/completions": provider_route(_api.chat_answer, "openai"),
        "/v1/messages": provider_route(_api.messages_answer, "anthropic"),
        "/v1/audio/speech": provider_route(_api.speech_answer, "openai"),
        "/v1/t2a_v2": provider_route(_api.t2a_answer, "minimax"),
    },
    bad_request=_BadRequest,
    plain=PLAIN | {_Json},
)
HOT_PATHS = frozenset(HOT.routes)  # every one a POST route of the Starlette app too
assert MAX_BODY_BYTES == _api.MAX_BODY_BYTES  # the hot routes read bodies by the API's bound


def create_app(
    scenario: Scenario,
    seed: int = 0,
    *,
    config: ServerConfig | None = None,
    **options: Unpack[ServerOptions],
) -> Starlette:
    """The fake provider app; its state is ``app.state.fake`` (a :class:`FakeProvider`).

    ``config`` (default :class:`ServerConfig`'s), with any of its fields overridden by
    keyword (``time_scale=...``, ``virtual=...``, ...)."""
    cfg = replace(config or ServerConfig(), **options)
    routes = [*ROUTES, *API_ROUTES]
    app = FakeApp(HOT, routes=routes, exception_handlers=dict(_EXCEPTION_HANDLERS))
    app.state.fake = FakeProvider(scenario, seed, **asdict(cfg))
    return app


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn for the fake provider: no access log; httptools' parser when it is installed
    (a dependency; about a tenth of h11's cost per request). The event loop stays asyncio's:
    uvloop's timers and ``loop.time()`` have millisecond resolution (a latency of 1.2345 ms
    would sleep 1 ms), and it did not lower the floor here (docs/validation.md)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="auto",
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
        # the client's pool stays open for the whole run: a connection opened mid-run costs
        # 10-60 ms of real time on a busy machine (uvicorn closes idle ones after 5 s)
        timeout_keep_alive=3600,
    )


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 (a free port by default) in a background thread.

    Use as a context manager; ``base_url`` is set once the server is listening.
    """

    def __init__(self, app: Starlette, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.server = uvicorn.Server(uvicorn_config(app, host, port))
        self.thread = threading.Thread(
            target=self._run, name="scenebench-fake-provider", daemon=True
        )
        self.base_url = ""
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as e:  # reported by start()
            self._error = e

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        quiet_injected_resets()
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if self._error is not None or not self.thread.is_alive():
                raise RuntimeError(f"fake provider failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("fake provider did not start in time")
            time.sleep(0.005)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def env_parallel_scene_concurrency() -> str | None:
    """``PARALLEL_SCENE_CONCURRENCY`` from the environment, as upstream's server reads it."""
    return os.environ.get("PARALLEL_SCENE_CONCURRENCY")


def _serve_in_child(
    bare_latency_s: float | None,
    scenario_map: dict[str, Any],
    seed: int,
    config: ServerConfig,
    conn: Any,
) -> None:  # pragma: no cover - runs in the child process
    from sim.scenario import scenario_from_mapping

    if bare_latency_s is not None:
        from .bare import bare_app

        app: Any = bare_app(bare_latency_s)
    else:
        app = create_app(scenario_from_mapping(scenario_map), seed, config=config)
    epoch = None if bare_latency_s is None else time.monotonic
    serve_in_child(app, conn, epoch)


def serve_in_child(
    app: Any, conn: Any, epoch: Callable[[], float] | None = None
) -> None:  # pragma: no cover - runs in the child process
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in this (child) process and tell the
    parent ``("ok", (port, epoch))`` once it listens (``epoch``: the app's model-time origin,
    ``app.state.fake.epoch`` unless given), or ``("error", why)``; :class:`ChildServer` reads it."""
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0))
    quiet_injected_resets()
    # what the process imported stays out of the collector's sight: a full collection over it
    # stalls the provider's event loop for 100+ ms on a busy machine
    gc.collect()
    gc.freeze()

    async def main() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            if task.done():
                conn.send(("error", repr(task.exception())))
                return
            await asyncio.sleep(0.005)
        origin = app.state.fake.epoch if epoch is None else epoch()
        conn.send(("ok", (server.servers[0].sockets[0].getsockname()[1], origin)))
        await task

    asyncio.run(main())


class ChildServer:
    """A server in its own process on 127.0.0.1 (no GIL shared with the client), started by a
    fork server that has imported ``preload`` (a start costs a fork, not an import). The child
    ``target(*args, conn)`` sends ``("ok", (port, epoch))`` once it listens, or
    ``("error", why)``; the parent keeps ``base_url`` and the model-time ``epoch``. Stopped
    with SIGTERM."""

    what = "server"

    def __init__(self, preload: str, target: Any, args: tuple[Any, ...], name: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([preload])
        self._conn, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=target, name=name, args=(*args, child), daemon=True)
        self.base_url = ""
        self.epoch = 0.0  # the server's model-time origin, on this machine's monotonic clock

    def start(self, timeout_s: float = 30.0) -> Self:
        self.process.start()
        if not self._conn.poll(timeout_s):
            self.stop()
            raise RuntimeError(f"{self.what} process did not start in time")
        try:
            status, value = self._conn.recv()
        except EOFError:
            status, value = "error", f"the process exited with code {self.process.exitcode}"
        if status != "ok":
            self.stop()
            raise RuntimeError(f"{self.what} process failed to start: {value}")
        port, self.epoch = value
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
        if self.process.is_alive():  # pragma: no cover
            self.process.kill()
            self.process.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess(ChildServer):
    """The fake provider in its own process (no GIL shared with the client), on 127.0.0.1.

    For wall-clock measurements where the client is busy: same app, same routes;
    its state is reached over HTTP (``/api/_scenebench/...``). Stopped with SIGTERM.
    """

    what = "fake provider"

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        time_scale: float = 1.0,
        parallel_scene_concurrency: int | str | None = None,
        keep_log: bool = True,
        bare_latency_s: float | None = None,
        latency_factor: float = 1.0,
    ) -> None:
        """``bare_latency_s``: serve :func:`runner.experiments.load.bare_app` instead (for
        comparisons); ``latency_factor``: see :class:`FakeProvider` (tests)."""
        config = ServerConfig(
            time_scale=time_scale,
            parallel_scene_concurrency=parallel_scene_concurrency,
            keep_log=keep_log,
            latency_factor=latency_factor,
        )
        args = (bare_latency_s, scenario.to_mapping(), seed, config)
        super().__init__(
            "runner.world.fake_provider", _serve_in_child, args, "scenebench-fake-provider"
        )
