"""The fake provider's generation routes served as plain ASGI, ahead of Starlette's router.

A request to one of OpenMAIC's three generation routes or to a provider endpoint (issue 21)
skips Starlette's middleware, router and request object: :class:`FakeApp` reads the body
and the headers straight from the ASGI messages and calls the same answer functions the
Starlette endpoints call (``*_answer`` in :mod:`runner.world.fake_provider` and
:mod:`runner.world.provider_api`), so the statuses, headers, bodies and admission decisions
are the Starlette routes' own. What the middleware does for those routes is done here the
same way: a :class:`~runner.world.fake_provider._BadRequest` is answered by its handler; any
other exception by the 500 handler when no answer has started, and re-raised (uvicorn then
logs it and drops the connection). Every other request (other paths, methods, websockets,
lifespan) goes through the Starlette app as before.

Why: a soak of 100 connections costs Starlette's layers about as much as the bare app's
whole request (issue 24, docs/cli.md#bench).

On the wall clock an answer is sent after one turn of the event loop (as the bare app's own
``asyncio.sleep(0)``): a burst of requests is computed before its answers are written, so a
write that wakes the waiting client (which may then preempt the server) does not come between
two of the burst's computations. The virtual clock sends at once (its order at equal times is
the model's).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from . import provider_api as _api

__all__ = ["PLAIN", "FakeApp", "HotRoutes", "old_route", "provider_route"]

# (fake, body, headers, request or None) -> the answer
_Answer = Callable[[Any, dict[str, Any], _api.Headers, Request | None], Awaitable[Response]]
# a body read: its JSON object, or the answer to an unreadable one (or it raises the
# route's bad-request exception)
Read = Callable[[bytes | None], "dict[str, Any] | Response"]


@dataclass(frozen=True, slots=True)
class Route:
    """A hot route: how its body is read, and its answer to a body read."""

    read: Read
    answer: _Answer


def old_route(answer: _Answer, parse: Callable[[bytes | None], dict[str, Any]]) -> Route:
    """An OpenMAIC route: its body read by ``parse``, which raises the route's 400/413."""
    return Route(parse, answer)


def provider_route(answer: _Answer, shape: str) -> Route:
    """A provider endpoint: its body's errors answered in the provider's ``shape``."""
    return Route(functools.partial(_api.read_raw, shape), answer)


@dataclass(frozen=True, slots=True)
class HotRoutes:
    """What :class:`FakeApp` serves without the router, given by the app's builder (the
    fake provider): the routes by path (each a POST route of the Starlette app too), the
    exception its routes raise for a bad request (answered by the app's handler for it),
    and the response classes sent inline."""

    routes: Mapping[str, Route]
    bad_request: type[Exception]
    plain: frozenset[type[Response]]


async def _rest(msg: Message, receive: Receive) -> bytes | None:
    """The request body from its first message ``msg`` on, as Starlette's ``request.stream()``
    reads it; ``None`` once it is over :data:`MAX_BODY_BYTES` (:func:`_serve` reads a whole
    body in one message itself)."""
    raw = b""
    while True:
        kind = msg["type"]
        if kind == "http.request":
            chunk: bytes = msg.get("body", b"")
            raw += chunk
            if len(raw) > _api.MAX_BODY_BYTES:
                return None
            if not msg.get("more_body", False):
                return raw
        elif kind == "http.disconnect":
            raise ClientDisconnect()
        msg = await receive()


# answers sent as Response.__call__ sends them (two messages), without calling it
PLAIN = frozenset({Response, JSONResponse, _api._Json})


async def _started(send: Send, started: list[bool], message: Any) -> None:
    if message["type"] == "http.response.start":
        started.append(True)
    await send(message)


@types.coroutine
def _turn() -> Generator[None, None, None]:
    """One turn of the event loop: ``asyncio.sleep(0)``'s own bare yield (its task is
    scheduled again at once), without the call of ``sleep`` around it."""
    yield


async def _serve(
    app: FakeApp,
    route: Route,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    started = False  # whether the answer has begun (then an error only re-raises)
    hot = app.hot
    try:
        fake = app.state._state["fake"]  # app.state.fake without State.__getattr__'s miss
        # the first of a repeated header, as Starlette's Headers.get
        raw = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}
        # a key freed when its client goes away watches the connection through the request
        req = Request(scope, receive) if fake.frees_on_disconnect_any else None
        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > _MAX:
                raw_body = None  # (it says it is over MAX_BODY_BYTES)
            else:  # a whole body in its first message, the usual case, read here
                msg = await receive()
                if msg["type"] == "http.request" and not msg.get("more_body", False):
                    raw_body = msg.get("body", b"")
                    if len(raw_body) > _MAX:
                        raw_body = None
                else:
                    raw_body = await _rest(msg, receive)
            body = route.read(raw_body)
            if type(body) is dict:
                resp = await route.answer(fake, body, headers, req)
            else:  # the provider's answer to an unreadable body
                assert isinstance(body, Response)
                resp = body
        except hot.bad_request as e:  # the app's handler for it
            resp = await app.exception_handlers[hot.bad_request](Request(scope), e)
        if type(resp) in hot.plain and resp.background is None:  # Response.__call__, inline
            if not fake.virtual:  # one turn of the loop first, as the bare app's sleep(0)
                await _turn()
            started = True
            head = resp.raw_headers
            await send({"type": "http.response.start", "status": resp.status_code, "headers": head})
            await send({"type": "http.response.body", "body": resp.body})
        else:
            began: list[bool] = []
            try:
                await resp(scope, receive, functools.partial(_started, send, began))
            finally:
                started = bool(began)
    except Exception as exc:  # as Starlette's ServerErrorMiddleware with the app's handler
        if not started:
            handler = app.exception_handlers[Exception]
            await (await handler(Request(scope), exc))(scope, receive, send)
        raise


_MAX = _api.MAX_BODY_BYTES


class FakeApp(Starlette):
    """The fake provider's Starlette app, its generation routes (``hot.routes``, POST)
    served by :func:`_serve` without the router."""

    def __init__(self, hot: HotRoutes, **starlette: Any) -> None:
        super().__init__(**starlette)
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.hot.routes.get(scope["path"])
            if route is not None:
                scope["app"] = self
                await _serve(self, route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)
