"""uvicorn's HTTP/1.1 protocol (httptools) without two of its per-answer costs.

* **One write per answer.** uvicorn writes a response's status line and headers when the
  app sends ``http.response.start``, and its body when the app sends
  ``http.response.body``: two ``send`` system calls per answer, and on loopback two
  segments, each of which may wake the client. Here each connection's transport holds one
  write back (:class:`HeldWrites`): the next write goes out together with it (a head and
  its body sent in the same step of the app: one system call), and a write still held when
  the event loop's current iteration ends goes out then (a streamed answer's head before
  its first chunk, as soon as the app awaits). The bytes on the wire and their order are
  uvicorn's; only the number of writes changes.
* **One keep-alive timer per connection.** uvicorn arms a loop timer after every answer and
  cancels it when the next request comes (a push onto the loop's heap of timers, compared
  in Python, and a cancelled handle left in it). Here the connection keeps one timer
  (:class:`_KeepAlive`): an answer moves its deadline, and a timer that fires before the
  deadline is set again for it. The connection still closes once idle for
  ``timeout_keep_alive`` after its last answer, as uvicorn's.

The fake provider and the bare app both run on it
(:func:`runner.world.fake_provider.uvicorn_config`: one server configuration for both).

Why: in a server-bound soak of the fake provider ``send`` was about a fifth of its CPU, and
the keep-alive timer about a twentieth (issue 24, docs/cli.md#bench).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeldWrites", "LeanHttpProtocol"]


class _Flusher:
    """A loop's transports holding a write, flushed together at the end of the loop's
    current iteration (one ``call_soon`` per iteration, not one per answer)."""

    __slots__ = ("held", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.held: list[HeldWrites] = []

    def hold(self, t: HeldWrites) -> None:
        if not self.held:
            self.loop.call_soon(self.flush)
        self.held.append(t)

    def flush(self) -> None:
        held, self.held = self.held, []
        for t in held:
            t.flush()


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher]
_FLUSHERS = weakref.WeakKeyDictionary()


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    f = _FLUSHERS.get(loop)
    if f is None:
        f = _FLUSHERS[loop] = _Flusher(loop)
    return f


class HeldWrites(asyncio.Transport):
    """A transport that holds one write back until the next write (then both go out in one)
    or the end of the loop's iteration; closing sends what it holds first, aborting drops
    it (as the transport's own buffer). Everything else is the wrapped transport's."""

    __slots__ = ("_flusher", "_held", "_t")

    def __init__(self, transport: asyncio.Transport, flusher: _Flusher) -> None:
        super().__init__()
        self._t = transport
        self._flusher = flusher
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._flusher.hold(self)
        else:
            self._held = None
            self._t.write(held + data)

    def flush(self) -> None:
        """Send the held write (dropped if the connection is closing: nothing can go out)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._t.is_closing():
                self._t.write(held)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        self.flush()
        self._t.close()

    def abort(self) -> None:
        self._held = None
        self._t.abort()

    def write_eof(self) -> None:
        self.flush()
        self._t.write_eof()

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._t.get_protocol()

    def is_reading(self) -> bool:
        return self._t.is_reading()

    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._t.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._t.get_write_buffer_limits()


class _KeepAlive:
    """A connection's keep-alive timer, held by uvicorn as its ``timeout_keep_alive_task``
    (its ``cancel`` disarms it: a request came). One loop timer at a time: :meth:`arm`
    moves the deadline, and a timer that fires before it is set again for it."""

    __slots__ = ("armed", "deadline", "handle", "proto")

    def __init__(self, proto: LeanHttpProtocol) -> None:
        self.proto = proto
        self.armed = False
        self.deadline = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self.deadline = loop.time() + delay_s
        self.armed = True
        if self.handle is None:
            self.handle = loop.call_at(self.deadline, self._fire)

    def cancel(self) -> None:
        self.armed = False

    def stop(self) -> None:
        """The connection is gone: the loop forgets the timer (and the connection)."""
        self.armed = False
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        if not self.armed:
            return
        loop = self.proto.loop
        if loop.time() < self.deadline:  # an answer since moved the deadline
            self.handle = loop.call_at(self.deadline, self._fire)
            return
        self.armed = False
        self.proto.timeout_keep_alive_handler()


class LeanHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`HeldWrites` transport, with one keep-alive
    timer per connection (:class:`_KeepAlive`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._keep_alive = _KeepAlive(self)
        super().connection_made(HeldWrites(transport, _flusher(self.loop)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._keep_alive.stop()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # uvicorn's own: a pipelined request starts, or none
            return
        # uvicorn's steps for an answer with nothing queued behind it, its keep-alive timer
        # this connection's one timer
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        self._keep_alive.arm(self.loop, self.timeout_keep_alive)
        self.timeout_keep_alive_task = self._keep_alive  # type: ignore[assignment]  # (cancel())
