"""The providers' own APIs on the fake provider (issue 21): OpenAI-compatible chat completions
and speech, Anthropic messages, MiniMax T2A v2.

Every endpoint admits its call with the same rules and the same per-key state as OpenMAIC's
old routes (:class:`runner.world.fake_provider.FakeProvider`, :mod:`sim.provider`): one key
is one quota whatever route it comes through. A chat call is charged to the key's LLM quota
(``quota.llm``), a speech call to its TTS quota (``quota.tts``), as the old routes do.

Which call it is (for the keyed draws): the ``x-scenebench-call`` header,
``<step>/<classroom>/<order>/<clip>[/<attempt>]`` with step ``content``, ``actions``,
``tts``, ``outline`` or ``agents`` (the last two are not steps of the model: they are charged
to the LLM key with the content step's draws of their own classroom,
``hash("<step>/<classroom>")``). Without an attempt the fake counts attempts per call as the
old routes do. Without the header a call is keyed by a hash of its prompt (speech: of its
input text): step ``actions`` for an actions prompt, ``content`` for any other chat prompt,
``tts`` for speech, at order 0.

Streaming (docs/provider-api.md): the call's total time is its keyed latency ``L``; the
first content chunk comes at the time to first token (with ``output_tps`` the drawn TTFT,
``L - output/output_tps``; else ``L/4``), the last at ``L``, the ones between evenly spaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import itertools
import json
import math
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sim.provider import PENDING, RESET, TRUNCATED, Call, Decision, Provider, new_call
from sim.rules import Step
from sim.runs_world import RunProvider
from sim.scenario import Scenario

from .error_shapes import error_response, rate_headers
from .prompt_replies import classify, filler, prompt_text, reply_text
from .wire import SENT_HEADER, hash_id

__all__ = [
    "CALL_HEADER",
    "SAMPLE_RATE",
    "ApiCall",
    "chat_completions",
    "messages",
    "parse_call",
    "speech",
    "stream_times_us",
    "t2a_v2",
    "wav_bytes",
]

CALL_HEADER = "x-scenebench-call"
STEP_IDS = {"content": 0, "actions": 1, "tts": 2, "outline": 0, "agents": 0}
RUN_STEP_IDS = {"outline": int(Step.OUTLINE), "agents": int(Step.AGENTS)}  # generation runs
SAMPLE_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit, mono
MAX_CHUNKS = 20  # content chunks of a streamed answer (fewer for short answers)
TTFT_SHARE = 4  # without output_tps the first token comes at L / TTFT_SHARE
DEFAULT_WORDS = 64  # filler length when the scenario draws no output tokens
_ids = itertools.count(1)


MAX_BODY_BYTES = 1_000_000


class FakeProvider(Protocol):
    """What the endpoints use of :class:`runner.world.fake_provider.FakeProvider` (the app's
    ``request.app.state.fake``)."""

    scenario: Scenario
    provider: Provider
    virtual: bool
    epoch: float
    time_scale: float
    latency_factor: float
    _last_decided_us: int

    def now_us(self) -> int: ...
    def decision_us(self, sent: float | None) -> int: ...
    def sent_at(self, header: str | None) -> float | None: ...
    async def admit(
        self, cid: int, step: int, order: int, clip: int, api_key: str, sent: float | None = None
    ) -> Decision: ...
    async def admit_call(self, call: Call, sent: float | None = None) -> Decision: ...
    def next_attempt(self, cid: int, step: int, order: int, clip: int) -> int: ...
    async def served(self, dec: Decision) -> Decision: ...


class InjectedStreamReset(ConnectionResetError):
    """Raised mid-answer to make the server drop the connection (an injected fault)."""


class _Invalid(Exception):
    """A request body the endpoint cannot read (answered 400 in the provider's shape)."""


class _ResetResponse(Response):
    """Starts a 200, sends part of its body, then drops the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        head = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        part = {"type": "http.response.body", "body": b'{"id": "x", "ch', "more_body": True}
        await send(part)
        raise InjectedStreamReset("scenebench: injected connection reset")


async def _json_body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Invalid(f"body over {MAX_BODY_BYTES} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Invalid(f"body over {MAX_BODY_BYTES} bytes")
    return _json_object(raw)


# json.loads' scanner (the C one where built): the same settings as its default decoder
_scan_once: Callable[[str, int], tuple[Any, int]]
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # (set in __init__)


def loads(raw: bytes) -> Any:
    """``json.loads(raw)``; a body that starts ``{`` and is not UTF-16/32 (its second byte
    not NUL) is decoded as UTF-8 and scanned at once, skipping ``json``'s encoding detection
    (which would say UTF-8 too) and its whitespace checks (a body that starts ``{`` has no
    leading space; one with anything after its value takes the full path): the same value,
    or on any error the bytes' own error."""
    if raw[:1] == b"{" and raw[1:2] != b"\x00":
        try:
            text = raw.decode()
            value, end = _scan_once(text, 0)
        except (ValueError, StopIteration):
            pass
        else:
            if end == len(text):
                return value
    return json.loads(raw)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Invalid("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Invalid("body must be a JSON object")
    return data


def read_raw(shape: str, raw: bytes | None) -> dict[str, Any] | Response:
    """As :func:`_read`, for a body already read (``None``: it was over
    :data:`MAX_BODY_BYTES`; the hot routes read it, :mod:`runner.world.hot_routes`, through
    ``functools.partial(read_raw, shape)``)."""
    try:
        if raw is None:
            raise _Invalid(f"body over {MAX_BODY_BYTES} bytes")
        return _json_object(raw)
    except _Invalid as e:
        return _invalid(shape, str(e))


async def _read(request: Request, shape: str) -> dict[str, Any] | Response:
    """The request's JSON object, or the provider's 400 for an unreadable one."""
    try:
        return await _json_body(request)
    except _Invalid as e:
        return _invalid(shape, str(e))


def _invalid(shape: str, message: str) -> Response:
    """A 400 in the provider's own error shape."""
    if shape == "anthropic":
        err = {"type": "invalid_request_error", "message": message}
        return JSONResponse({"type": "error", "error": err}, HTTPStatus.BAD_REQUEST)
    if shape == "minimax":
        return JSONResponse({"base_resp": {"status_code": 2013, "status_msg": message}})
    err2 = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse({"error": err2}, HTTPStatus.BAD_REQUEST)


class ApiCall(NamedTuple):
    """One call to a provider endpoint, resolved: its identity, key and model (a named
    tuple: made once per request, cheaper than a frozen dataclass)."""

    step: int  # 0 content, 1 actions, 2 tts (the model's steps)
    cid: int
    order: int
    clip: int
    attempt: int | None  # None: the fake counts attempts
    key: str
    kind: str  # the step name the caller gave, or the prompt kind


# :class:`ApiCall` and :class:`_Answer` built on the hot path without the NamedTuples'
# Python-level ``__new__`` (the same values; every field given, in order)
_new_api_call = functools.partial(tuple.__new__, ApiCall)


def parse_call(value: str | None) -> tuple[str, int, int, int, int | None] | None:
    """``<step>/<classroom>/<order>/<clip>[/<attempt>]`` → its parts; ``None`` if absent or
    malformed (the call is then keyed by its content)."""
    if not value:
        return None
    parts = value.strip().split("/")
    n = len(parts)
    if (n != 4 and n != 5) or parts[0] not in STEP_IDS:
        return None
    a, b, c = parts[1], parts[2], parts[3]
    if not (a.isdigit() and b.isdigit() and c.isdigit()):
        return None
    if n == 4:
        return parts[0], int(a), int(b), int(c), None
    if not parts[4].isdigit():
        return None
    return parts[0], int(a), int(b), int(c), int(parts[4])


Headers = Mapping[str, str]  # a request's headers: Starlette's, or the hot routes' dict
# an admitted call: its decision, the decision's model time, the loop's time it counts from
Admitted = tuple[Decision, int, float]


def _bearer(headers: Headers) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key", "") or headers.get("x-goog-api-key", "")


def _anthropic_key(headers: Headers) -> str:
    return headers.get("x-api-key", "") or _bearer(headers)


def resolve_call(
    request: Request, key: str, default_step: str, text: str, run_steps: bool = False
) -> ApiCall:
    """The call's identity from :data:`CALL_HEADER`, else from ``text`` (its prompt).
    ``run_steps``: the provider's draws know generation runs' steps (a
    :class:`sim.runs_world.RunProvider`), so ``outline``/``agents`` are those steps (3, 4) of
    the run itself, as :mod:`sim.runs_world` decides them."""
    return _resolve(_fake(request), request.headers, key, default_step, text, run_steps)


def _resolve(
    fake: FakeProvider, headers: Headers, key: str, default_step: str, text: str, run_steps: bool
) -> ApiCall:
    got = parse_call(headers.get(CALL_HEADER))
    if got is None:
        got = (default_step, hash_id(text), 0, 0, None)
    name, cid, order, clip, attempt = got
    step = STEP_IDS[name]
    if name in RUN_STEP_IDS:  # outline, agents
        if run_steps:
            step, order, clip = RUN_STEP_IDS[name], 0, 0
        else:  # not modelled steps: their own classroom's draws
            cid, order, clip = hash_id(f"{name}/{cid}"), 0, 0
    elif step != 2:
        clip = 0
    if attempt is None:  # the fake counts the call's attempts
        attempt = fake.next_attempt(cid, step, order, clip)
    c: ApiCall = _new_api_call((step, cid, order, clip, attempt, key, name))
    return c


def _fake(request: Request) -> FakeProvider:
    fake: FakeProvider = request.app.state.fake
    return fake


async def _admit(fake: FakeProvider, c: ApiCall, sent: float | None) -> Decision:
    attempt = 0 if c.attempt is None else c.attempt
    return await fake.admit_call(Call(c.cid, c.step, c.order, c.clip, attempt, c.key), sent)


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _or_disconnect(request: Request, waiting: Awaitable[Any]) -> bool:
    """Run ``waiting``; False if the client went away first (the wait is then cancelled)."""
    done, _ = await unless_disconnected(request, waiting)
    return done


async def unless_disconnected(request: Request, waiting: Awaitable[Any]) -> tuple[bool, Any]:
    """(True, its result) when ``waiting`` finishes first; (False, None) when the client
    disconnects first, ``waiting`` then being cancelled (it sees ``CancelledError``)."""
    work = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        return True, work.result()
    with contextlib.suppress(asyncio.CancelledError):
        await work  # let the cancelled wait run its cleanup (a freed slot) before answering
    return False, None


def _frees_on_disconnect(fake: FakeProvider, step: int) -> bool:
    q = fake.scenario.quota_tts if step == 2 else fake.scenario.quota_llm
    return q.disconnect_frees


def _admitted(fake: FakeProvider, c: ApiCall, headers: Headers) -> Admitted | None:
    """The call's admission on arrival (its decision, the decision's model time and the event
    loop's time it counts from), made here unless the call is batched with the other arrivals
    of its virtual instant (then ``None``: :func:`_decide` awaits it)."""
    if fake.virtual and fake.provider.limited(c.step):
        return None
    sent = fake.sent_at(headers.get(SENT_HEADER))  # fake.admit_call's first case, inline
    call = new_call((c.cid, c.step, c.order, c.clip, 0 if c.attempt is None else c.attempt, c.key))
    dec = fake.provider.decide(call, fake.decision_us(sent))
    at_us = fake._last_decided_us
    return dec, at_us, fake.epoch + at_us / 1e6 * fake.time_scale  # the loop's clock


async def _admitted_batched(fake: FakeProvider, c: ApiCall, headers: Headers) -> Admitted:
    """:func:`_admitted` for a call batched with its virtual instant's arrivals."""
    dec = await _admit(fake, c, fake.sent_at(headers.get(SENT_HEADER)))
    at_us = fake.now_us()
    return dec, at_us, fake.epoch + at_us / 1e6 * fake.time_scale


def _waits(dec: Decision, wait: bool) -> bool:
    """Whether an admitted call is waited for: served by a shared capacity, or (``wait``) its
    latency slept when it was not refused at once."""
    return dec.latency_us == PENDING or (wait and dec.status != 429 and dec.latency_us > 0)


Decided = tuple[Decision | None, int, float]  # _decide's: None, the client went away


def _decide_now(
    request: Request | None, fake: FakeProvider, c: ApiCall, wait: bool, headers: Headers
) -> Decided | Coroutine[Any, Any, Decided]:
    """:func:`_decide`'s result when it has nothing to await (an unbatched call not waited
    for: no coroutine made), else its coroutine: ``got if isinstance(got, tuple) else await
    got``."""
    got = _admitted(fake, c, headers)
    if got is None or _waits(got[0], wait):
        return _decide(request, fake, c, wait, headers, got)
    return got


async def _decide(
    request: Request | None,
    fake: FakeProvider,
    c: ApiCall,
    wait: bool,
    headers: Headers,
    admitted: Admitted | None = None,
) -> Decided:
    """Admit the call (unless ``admitted`` already: :func:`_admitted`'s); with ``wait``, also
    wait its latency (or its shared capacity). Returns the decision (``None``: the client
    disconnected while it waited), the decision's model time, and the event loop's time it
    counts from. ``request``: for a key whose client frees its slot by going away (else
    unused, may be ``None``)."""
    got = _admitted(fake, c, headers) if admitted is None else admitted
    dec, at_us, base = got if got is not None else await _admitted_batched(fake, c, headers)
    if not _waits(dec, wait):
        return dec, at_us, base
    return await _waited(request, fake, c, dec, at_us, base), at_us, base


async def _waited(
    request: Request | None, fake: FakeProvider, c: ApiCall, dec: Decision, at_us: int, base: float
) -> Decision | None:
    """The wait of an admitted call (:func:`_waits`): its shared capacity's answer, or its
    latency slept; ``None`` when the client went away first (its slot then freed)."""
    if dec.latency_us == PENDING:  # a shared capacity serves it (sim.sharing)
        return await fake.served(dec)
    sleep = _sleep_until(fake, base, dec.latency_us)
    if not _frees_on_disconnect(fake, c.step):
        await sleep
        return dec
    call = Call(c.cid, c.step, c.order, c.clip, 0, c.key)
    assert request is not None, "a key freed on disconnect needs the request"
    try:  # a client gone (uvicorn: a disconnect; in-process: the request task cancelled)
        if await _or_disconnect(request, sleep):
            return dec
    except asyncio.CancelledError:
        fake.provider.release(call, at_us + dec.latency_us, fake.now_us())
        raise
    fake.provider.release(call, at_us + dec.latency_us, fake.now_us())
    return None


def _shape(fake: FakeProvider, step: int, default: str) -> str:
    q = fake.scenario.quota_tts if step == 2 else fake.scenario.quota_llm
    return q.shape or default


def _tokens(fake: FakeProvider, c: ApiCall, attempt: int) -> tuple[int, int] | None:
    """The call's drawn (input, output) tokens, if the scenario has tokens per call."""
    if fake.scenario.step_tokens(c.step) is None:
        return None
    d, row = fake.provider.draws_for(c.cid)
    col = d.column(c.step, c.order, c.clip)
    return int(d.tokens_in(c.step)[row, col]), int(d.tokens_out(c.step, attempt)[row, col])


def stream_times_us(latency_us: int, chunks: int, ttft_us: int) -> list[int]:
    """When each of ``chunks`` content chunks is sent (model µs from the decision): the first
    at ``ttft_us``, the last at ``latency_us``, the rest evenly between (whole µs)."""
    if chunks <= 1:
        return [latency_us]
    ttft = min(max(0, ttft_us), latency_us)
    span = latency_us - ttft
    return [ttft + span * j // (chunks - 1) for j in range(chunks)]


def _ttft_us(fake: FakeProvider, c: ApiCall, latency_us: int, out_tokens: int | None) -> int:
    spec = fake.scenario.step_tokens(c.step)
    if spec is not None and spec.derived and out_tokens is not None:
        # the same whole µs as sim.tokens.decode_us (round half to even, like np.rint)
        return latency_us - round(out_tokens * (1_000_000 / spec.output_tps))
    return latency_us // TTFT_SHARE


def _pieces(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    return [text[len(text) * i // n : len(text) * (i + 1) // n] for i in range(n)]


class _Answer(NamedTuple):
    """A successful chat call's answer: its text, usage and timing (a named tuple: made
    once per answer, cheaper than a dataclass)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish: str  # "stop" or "length"
    times_us: Sequence[int]  # (empty for an answer not streamed)
    pieces: Sequence[str]


_new_answer = functools.partial(tuple.__new__, _Answer)


def _answer(
    fake: FakeProvider, c: ApiCall, dec: Decision, prompt: str, body: dict[str, Any], kind: str
) -> _Answer:
    """``kind``: the prompt's (``classify(prompt)``)."""
    stream = body.get("stream") is True
    attempt = 0 if c.attempt is None else c.attempt
    toks = _tokens(fake, c, attempt)
    words = toks[1] if toks is not None else DEFAULT_WORDS
    finish = "stop"
    if kind == "other":  # reply_text's filler words, cut at the call's token cap
        text = filler(words)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(cap, int) and 0 < cap < words:
            text, finish = " ".join(text.split()[:cap]), "length"
    else:
        speeches = fake.provider.speeches(c.cid, c.order) if kind == "actions" else 0
        sc = fake.scenario
        text = reply_text(
            kind,
            words=words,
            speeches=speeches,
            scenes=sc.outlines,
            scene_types=sc.scene_types,
            spotlight="spotlight" in prompt,
        )
    if toks is not None:
        tin, tout = toks
    else:
        tin, tout = math.ceil(len(prompt) / 4), math.ceil(len(text) / 4)
    if not stream:
        answer: _Answer = _new_answer((text, tin, tout, finish, (), ()))
        return answer
    pieces = _pieces(text, max(1, min(MAX_CHUNKS, tout)))
    lat = max(0, dec.latency_us)
    times = stream_times_us(lat, len(pieces), _ttft_us(fake, c, lat, toks[1] if toks else None))
    return _Answer(text, tin, tout, finish, times, pieces)


async def _sleep_until(fake: FakeProvider, base: float, at_us: int) -> None:
    """Sleep until model µs ``at_us`` after ``base`` (the loop's time of the decision)."""
    target = base + at_us / 1e6 * fake.time_scale * fake.latency_factor
    delay = target - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def _sse(data: Any, event: str | None = None) -> bytes:
    line = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {line}\n\n".encode()


_SSE_HEADERS = {"cache-control": "no-cache"}


# -- OpenAI chat completions --------------------------------------------------------------
def _openai_chunk(
    cid: str, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


async def _openai_stream(
    fake: FakeProvider, ans: _Answer, dec: Decision, base: float, model: str, usage: bool
) -> AsyncIterator[bytes]:
    cid = f"chatcmpl-sb{next(_ids)}"

    def with_usage(ch: dict[str, Any]) -> dict[str, Any]:
        return {**ch, "usage": None} if usage else ch

    cut = len(ans.pieces) // 2 if dec.status in (RESET, TRUNCATED) else len(ans.pieces)
    for j, (at, piece) in enumerate(zip(ans.times_us, ans.pieces, strict=True)):
        if j == cut:
            if dec.status == RESET:
                raise InjectedStreamReset("scenebench: injected connection reset")
            return  # truncated: the stream stops without its end
        await _sleep_until(fake, base, at)
        delta: dict[str, Any] = {"content": piece}
        if j == 0:
            delta = {"role": "assistant", **delta}
        yield _sse(with_usage(_openai_chunk(cid, model, delta, None)))
    yield _sse(with_usage(_openai_chunk(cid, model, {}, ans.finish)))
    if usage:
        u = {
            "prompt_tokens": ans.prompt_tokens,
            "completion_tokens": ans.completion_tokens,
            "total_tokens": ans.prompt_tokens + ans.completion_tokens,
        }
        yield _sse({**_openai_chunk(cid, model, {}, None), "choices": [], "usage": u})
    yield _sse("[DONE]")


def _openai_body(ans: _Answer, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sb{next(_ids)}",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ans.text},
                "logprobs": None,
                "finish_reason": ans.finish,
            }
        ],
        "usage": {
            "prompt_tokens": ans.prompt_tokens,
            "completion_tokens": ans.completion_tokens,
            "total_tokens": ans.prompt_tokens + ans.completion_tokens,
        },
    }


class _Json(Response):
    """``Response(body, media_type="application/json")`` with ``headers`` after its own,
    its header list written at once."""

    def __init__(self, body: bytes, headers: Mapping[str, str] | None) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]
        if headers:  # as MutableHeaders.update: lower-case names, latin-1
            for k, v in headers.items():
                self.raw_headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))


_JSON_TYPE = (b"content-type", b"application/json")


# _openai_body as json.dumps writes it (default separators, ASCII): the id, then the rest
_OPENAI_HEAD = b'{"id": "chatcmpl-sb%d'
_OPENAI_TAIL = (
    '", "object": "chat.completion", "created": 1767225600, "model": %s, '
    '"choices": [{"index": 0, "message": {"role": "assistant", "content": %s}, '
    '"logprobs": null, "finish_reason": %s}], '
    '"usage": {"prompt_tokens": %d, "completion_tokens": %d, "total_tokens": %d}}'
)
_ascii = json.encoder.encode_basestring_ascii  # how json.dumps writes a str


@functools.lru_cache(maxsize=1024)  # bounded: a long soak stays flat
def _openai_tail(model: str, text: str, finish: str, tin: int, tout: int) -> bytes:
    """The encoded rest after the id: a pure function of the answer and the model."""
    fields = (_ascii(model), _ascii(text), _ascii(finish), tin, tout, tin + tout)
    return (_OPENAI_TAIL % fields).encode()


def _openai_json(ans: _Answer, model: str) -> bytes:
    """``json.dumps(_openai_body(ans, model)).encode()``, written from a template: the id,
    then the rest (encoded once per answer and model)."""
    tin, tout = ans.prompt_tokens, ans.completion_tokens
    if type(tin) is not int or type(tout) is not int:  # %d is int's repr only for an int
        return json.dumps(_openai_body(ans, model)).encode()
    return _OPENAI_HEAD % next(_ids) + _openai_tail(model, ans.text, ans.finish, tin, tout)


# _anthropic_body as json.dumps writes it: the id, then the rest
_ANTHROPIC_HEAD = b'{"id": "msg_sb%d'
_ANTHROPIC_TAIL = (
    '", "type": "message", "role": "assistant", "model": %s, '
    '"content": [{"type": "text", "text": %s}], "stop_reason": %s, "stop_sequence": null, '
    '"usage": {"input_tokens": %d, "output_tokens": %d}}'
)


@functools.lru_cache(maxsize=1024)  # bounded: a long soak stays flat
def _anthropic_tail(model: str, text: str, finish: str, tin: int, tout: int) -> bytes:
    """The encoded rest after the id (as :func:`_openai_tail`)."""
    stop = "max_tokens" if finish == "length" else "end_turn"
    return (_ANTHROPIC_TAIL % (_ascii(model), _ascii(text), _ascii(stop), tin, tout)).encode()


def _anthropic_json(ans: _Answer, model: str) -> bytes:
    """``json.dumps(_anthropic_body(ans, model)).encode()``, written from a template (as
    :func:`_openai_json`)."""
    tin, tout = ans.prompt_tokens, ans.completion_tokens
    if type(tin) is not int or type(tout) is not int:  # %d is int's repr only for an int
        return json.dumps(_anthropic_body(ans, model)).encode()
    return _ANTHROPIC_HEAD % next(_ids) + _anthropic_tail(model, ans.text, ans.finish, tin, tout)


def _plain(
    dec: Decision, payload: dict[str, Any] | bytes, headers: Mapping[str, str] | None = None
) -> Response:
    """The answer's JSON (``payload``, or its bytes as json.dumps writes them; a cut half for
    an injected truncation, a dropped connection for a reset); ``headers`` added to a whole
    answer."""
    if dec.status == RESET:
        return _ResetResponse(status_code=200)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if dec.status == TRUNCATED:
        resp = Response(raw[: len(raw) // 2], media_type="application/json")
        if headers:
            resp.headers.update(headers)
        return resp
    return _Json(raw, headers)


def _refused(
    fake: FakeProvider, c: ApiCall, dec: Decision, at_us: int, shape: str, model: str
) -> Response:
    return error_response(
        shape, dec.status, dec, now_us=at_us, model=model, request_id=f"req_sb{next(_ids)}"
    )


def _success_headers(
    fake: FakeProvider, c: ApiCall, dec: Decision, shape: str, at_us: int
) -> Mapping[str, str]:
    """The key's rate-limit headers on a success (OpenAI sends them on every answer): the
    RPM bucket and the first token bucket as they stand after this call."""
    q = fake.scenario.quota_tts if c.step == 2 else fake.scenario.quota_llm  # the key's
    if shape not in _RATE_SHAPES or not (q.rpm > 0 or q.tokens_limited):  # (its buckets')
        return _NO_HEADERS
    ks = fake.provider.key_state(c.step, c.key)
    return rate_headers(shape, dec._replace(rate=ks.rate_info(at_us, None)), at_us)


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # (shared: read only)
_RATE_SHAPES = frozenset({"openai", "azure", "kimi", "anthropic"})  # rate headers on successes


def _ok_status(dec: Decision) -> bool:
    return dec.status in _OK


_OK = frozenset({200, RESET, TRUNCATED})  # answered (a cut or dropped answer: a fault)


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (OpenAI-compatible), streamed or not."""
    body = await _read(request, "openai")
    if isinstance(body, Response):
        return body
    return await chat_answer(_fake(request), body, request.headers, request)


async def chat_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """:func:`chat_completions`' answer to a request body (``request``: see :func:`_decide`)."""
    prompt = prompt_text(body.get("messages"))
    model = str(body.get("model") or "fake-llm")
    kind = classify(prompt)
    default = "actions" if kind == "actions" else "content"
    run_steps = isinstance(fake.provider, RunProvider)
    c = _resolve(fake, headers, _bearer(headers), default, prompt, run_steps)
    stream = body.get("stream") is True
    got = _decide_now(request, fake, c, not stream, headers)
    dec, at_us, base = got if isinstance(got, tuple) else await got
    if dec is None:
        return Response(status_code=499)
    shape = _shape(fake, c.step, "openai")
    if dec.status not in _OK or (shape == "minimax" and dec.status != 200):  # _ok_status
        if stream and dec.status != 429 and dec.latency_us > 0:
            await _sleep_until(fake, base, dec.latency_us)
        return _refused(fake, c, dec, at_us, shape, model)
    ans = _answer(fake, c, dec, prompt, body, kind)
    rate = _success_headers(fake, c, dec, shape, at_us)
    if not stream:
        return _plain(dec, _openai_json(ans, model), rate)
    opts = body.get("stream_options")
    usage = isinstance(opts, dict) and opts.get("include_usage") is True
    gen = _openai_stream(fake, ans, dec, base, model, usage)
    heads = {**_SSE_HEADERS, **rate}
    return StreamingResponse(gen, media_type="text/event-stream", headers=heads)


# -- Anthropic messages -------------------------------------------------------------------
async def _anthropic_stream(
    fake: FakeProvider, ans: _Answer, dec: Decision, base: float, model: str
) -> AsyncIterator[bytes]:
    mid = f"msg_sb{next(_ids)}"
    start: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": ans.prompt_tokens, "output_tokens": 1},
    }
    cut = len(ans.pieces) // 2 if dec.status in (RESET, TRUNCATED) else len(ans.pieces)
    for j, (at, piece) in enumerate(zip(ans.times_us, ans.pieces, strict=True)):
        if j == cut:
            if dec.status == RESET:
                raise InjectedStreamReset("scenebench: injected connection reset")
            return
        await _sleep_until(fake, base, at)
        if j == 0:
            yield _sse({"type": "message_start", "message": start}, "message_start")
            block = {"type": "content_block_start", "index": 0}
            empty = {"type": "text", "text": ""}
            yield _sse({**block, "content_block": empty}, "content_block_start")
        delta = {"type": "text_delta", "text": piece}
        yield _sse(
            {"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"
        )
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    stop = "max_tokens" if ans.finish == "length" else "end_turn"
    md = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": ans.completion_tokens},
    }
    yield _sse(md, "message_delta")
    yield _sse({"type": "message_stop"}, "message_stop")


def _anthropic_body(ans: _Answer, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_sb{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ans.text}],
        "stop_reason": "max_tokens" if ans.finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": ans.prompt_tokens, "output_tokens": ans.completion_tokens},
    }


async def messages(request: Request) -> Response:
    """``POST /v1/messages`` (Anthropic), streamed or not."""
    body = await _read(request, "anthropic")
    if isinstance(body, Response):
        return body
    return await messages_answer(_fake(request), body, request.headers, request)


async def messages_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """:func:`messages`' answer to a request body (``request``: see :func:`_decide`)."""
    prompt = prompt_text(body.get("messages"), body.get("system"))
    model = str(body.get("model") or "fake-llm")
    kind = classify(prompt)
    default = "actions" if kind == "actions" else "content"
    run_steps = isinstance(fake.provider, RunProvider)
    c = _resolve(fake, headers, _anthropic_key(headers), default, prompt, run_steps)
    stream = body.get("stream") is True
    got = _decide_now(request, fake, c, not stream, headers)
    dec, at_us, base = got if isinstance(got, tuple) else await got
    if dec is None:
        return Response(status_code=499)
    if dec.status not in _OK:  # _ok_status
        if stream and dec.status != 429 and dec.latency_us > 0:
            await _sleep_until(fake, base, dec.latency_us)
        return _refused(fake, c, dec, at_us, _shape(fake, c.step, "anthropic"), model)
    ans = _answer(fake, c, dec, prompt, body, kind)
    shape = _shape(fake, c.step, "anthropic")
    n = next(_ids)  # the request id's, drawn before the message id's
    rate = _success_headers(fake, c, dec, shape, at_us)
    if not stream and dec.status == 200:  # _plain's whole answer, its request id pre-encoded
        resp = _Json(_anthropic_json(ans, model), rate)
        resp.raw_headers.insert(2, (b"request-id", b"req_sb%d" % n))  # before the rate's
        return resp
    rid = {"request-id": f"req_sb{n}", **rate}
    if not stream:
        return _plain(dec, _anthropic_json(ans, model), rid)
    gen = _anthropic_stream(fake, ans, dec, base, model)
    return StreamingResponse(gen, media_type="text/event-stream", headers={**_SSE_HEADERS, **rid})


# -- speech -------------------------------------------------------------------------------
def wav_bytes(duration_us: int, header: bool = True) -> bytes:
    """Silence of ``duration_us``: 16-bit mono PCM at :data:`SAMPLE_RATE`, as a WAV file
    (``header``) or raw samples; ``round(duration · rate)`` frames."""
    frames = round(duration_us * SAMPLE_RATE / 1_000_000)
    data = bytes(2 * frames)
    if not header:
        return data
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(data)
    return buf.getvalue()


def _clip_us(fake: FakeProvider, c: ApiCall) -> int:
    d, row = fake.provider.draws_for(c.cid)
    return int(d.audio_us()[row, d.column(2, c.order, c.clip)])


async def _speech_call(
    fake: FakeProvider, headers: Headers, request: Request | None, text: str
) -> tuple[ApiCall, Decision | None, int]:
    c = _resolve(fake, headers, _bearer(headers), "tts", text, False)
    if c.step != 2:  # speech is the TTS key's, whatever step the header named
        c = c._replace(step=2)
    dec, at_us, _ = await _decide(request, fake, c, True, headers)
    return c, dec, at_us


async def speech(request: Request) -> Response:
    """``POST /v1/audio/speech`` (OpenAI): a silent WAV as long as the clip's keyed audio
    duration (``response_format: "pcm"``: the raw samples)."""
    body = await _read(request, "openai")
    if isinstance(body, Response):
        return body
    return await speech_answer(_fake(request), body, request.headers, request)


async def speech_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """:func:`speech`'s answer to a request body (``request``: see :func:`_decide`)."""
    text = body.get("input")
    if not isinstance(text, str) or not text:
        err = {"message": "input: required", "type": "invalid_request_error", "param": "input"}
        return JSONResponse({"error": {**err, "code": None}}, 400)
    c, dec, at_us = await _speech_call(fake, headers, request, text)
    if dec is None:
        return Response(status_code=499)
    model = str(body.get("model") or "tts-1")
    if dec.status == RESET:
        return _ResetResponse(status_code=200)
    if dec.status not in (200, TRUNCATED):
        return _refused(fake, c, dec, at_us, _shape(fake, 2, "openai"), model)
    pcm = body.get("response_format") == "pcm"
    audio = wav_bytes(_clip_us(fake, c), header=not pcm)
    if dec.status == TRUNCATED:
        audio = audio[: len(audio) // 2]
    return Response(audio, media_type="audio/pcm" if pcm else "audio/wav")


async def t2a_v2(request: Request) -> Response:
    """``POST /v1/t2a_v2`` (MiniMax): HTTP 200 with the audio as hex, or a ``base_resp``
    error code (1002 for a rate limit) and no audio."""
    body = await _read(request, "minimax")
    if isinstance(body, Response):
        return body
    return await t2a_answer(_fake(request), body, request.headers, request)


async def t2a_answer(
    fake: FakeProvider, body: dict[str, Any], headers: Headers, request: Request | None
) -> Response:
    """:func:`t2a_v2`'s answer to a request body (``request``: see :func:`_decide`)."""
    text = body.get("text")
    if not isinstance(text, str) or not text:
        return JSONResponse({"base_resp": {"status_code": 2013, "status_msg": "invalid params"}})
    c, dec, at_us = await _speech_call(fake, headers, request, text)
    if dec is None:
        return Response(status_code=499)
    if dec.status == RESET:
        return _ResetResponse(status_code=200)
    if dec.status not in (200, TRUNCATED):
        return _refused(fake, c, dec, at_us, _shape(fake, 2, "minimax"), "speech")
    audio = wav_bytes(_clip_us(fake, c)).hex()
    payload = {
        "data": {"audio": audio, "status": 2},
        "extra_info": {"audio_format": "wav", "audio_sample_rate": SAMPLE_RATE},
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }
    return _plain(dec, payload)
