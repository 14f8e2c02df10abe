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
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from . import fake_provider as _fp
from . import provider_api as _api

__all__ = ["HOT_PATHS", "FakeApp"]

# (fake, body, headers, request or None) -> the answer
_Answer = Callable[[Any, dict[str, Any], _api.Headers, Request | None], Awaitable[Response]]


def _old(answer: _Answer) -> Callable[..., Awaitable[Response]]:
    """An OpenMAIC route: its body's errors raised as the route's 400/413."""

    async def route(fake: Any, raw: bytes | None, headers: _api.Headers, req: Any) -> Response:
        return await answer(fake, _fp.json_object(raw), headers, req)

    return route


def _provider(answer: _Answer, shape: str) -> Callable[..., Awaitable[Response]]:
    """A provider endpoint: its body's errors answered in the provider's ``shape``."""

    async def route(fake: Any, raw: bytes | None, headers: _api.Headers, req: Any) -> Response:
        body = _api.read_raw(raw, shape)
        if isinstance(body, Response):
            return body
        return await answer(fake, body, headers, req)

    return route


_ROUTES: dict[str, Callable[..., Awaitable[Response]]] = {
    "/api/generate/scene-content": _old(_fp.content_answer),
    "/api/generate/scene-actions": _old(_fp.actions_answer),
    "/api/generate/tts": _old(_fp.tts_answer),
    "/v1/chat/completions": _provider(_api.chat_answer, "openai"),
    "/v1/messages": _provider(_api.messages_answer, "anthropic"),
    "/v1/audio/speech": _provider(_api.speech_answer, "openai"),
    "/v1/t2a_v2": _provider(_api.t2a_answer, "minimax"),
}
HOT_PATHS = frozenset(_ROUTES)  # every one a POST route of the Starlette app too
assert _fp.MAX_BODY_BYTES == _api.MAX_BODY_BYTES


async def _body(receive: Receive, headers: _api.Headers) -> bytes | None:
    """The request body as Starlette's ``request.stream()`` reads it; ``None`` once it is
    (or says it is) over :data:`MAX_BODY_BYTES`."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > _fp.MAX_BODY_BYTES:
        return None
    raw = b""
    while True:
        msg = await receive()
        kind = msg["type"]
        if kind == "http.request":
            chunk: bytes = msg.get("body", b"")
            raw += chunk
            if len(raw) > _fp.MAX_BODY_BYTES:
                return None
            if not msg.get("more_body", False):
                return raw
        elif kind == "http.disconnect":
            raise ClientDisconnect()


# answers sent as Response.__call__ sends them (two messages), without calling it
_PLAIN = frozenset({Response, JSONResponse, _fp._Json, _api._Json})


def _frees_on_disconnect(fake: Any) -> bool:
    sc = fake.scenario
    return bool(sc.quota_llm.disconnect_frees or sc.quota_tts.disconnect_frees)


async def _started(send: Send, started: list[bool], message: Any) -> None:
    if message["type"] == "http.response.start":
        started.append(True)
    await send(message)


async def _serve(
    app: Starlette,
    route: Callable[..., Awaitable[Response]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    started: list[bool] = []  # whether the answer has begun (then an error only re-raises)
    try:
        fake = app.state.fake
        # the first of a repeated header, as Starlette's Headers.get
        raw = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}
        # a key freed when its client goes away watches the connection through the request
        req = Request(scope, receive) if _frees_on_disconnect(fake) else None
        try:
            resp = await route(fake, await _body(receive, headers), headers, req)
        except _fp._BadRequest as e:  # the app's handler for it
            resp = await _fp._bad_request(Request(scope), e)
        if type(resp) in _PLAIN and resp.background is None:  # Response.__call__, inline
            started.append(True)
            head = resp.raw_headers
            await send({"type": "http.response.start", "status": resp.status_code, "headers": head})
            await send({"type": "http.response.body", "body": resp.body})
        else:
            await resp(scope, receive, functools.partial(_started, send, started))
    except Exception as exc:  # as Starlette's ServerErrorMiddleware with the app's handler
        if not started:
            await (await _fp._internal_error(Request(scope), exc))(scope, receive, send)
        raise


class FakeApp(Starlette):
    """The fake provider's Starlette app, its generation routes (:data:`HOT_PATHS`, POST)
    served by :func:`_serve` without the router."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = _ROUTES.get(scope["path"])
            if route is not None:
                scope["app"] = self
                await _serve(self, route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)
