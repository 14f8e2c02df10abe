"""Why a scene failed: every failed attempt of the real pipeline, and one line per failed scene.

:class:`runner.world.pipeline.ScenePipeline` appends a :class:`FailureReason` to its
``attempt_failures`` for every attempt that did not succeed (a timeout, a transport error,
an unreadable body, an HTTP error or ``success: false``). :func:`scene_failures`
turns them into one record per failed scene: the step, status and reason of the
call that failed it and how many attempts that call made, e.g.
``content: connection refused after 3 attempts``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "FailureReason",
    "SceneFailure",
    "describe_transport_error",
    "failure_from_attempt",
    "scene_failures",
]

_ROUTE_STEP = {
    "/api/generate/scene-content": "content",
    "/api/generate/scene-actions": "actions",
    "/api/generate/tts": "tts",
}
# a clip's audio id ends with its action id sb-<classroom>-o<order>-s<clip>, in scenebench's
# form (tts_sb-...) or upstream's (tts_s<order>_sb-...)
_AUDIO_RE = re.compile(r"sb-\d+-o(\d+)-s(\d+)$")


@dataclass(frozen=True)
class FailureReason:
    """One attempt that did not succeed. ``status``: the HTTP status, 0 for a timeout, -1 for a
    transport error (refused, reset), -2 for an unreadable 2xx body."""

    step: str
    order: int
    clip: int
    status: int
    reason: str


@dataclass(frozen=True)
class SceneFailure:
    """Why scene ``order`` failed: the last failed call's step, status, reason and attempts."""

    order: int
    step: str
    status: int
    reason: str
    attempts: int

    def line(self) -> str:
        s = "" if self.attempts == 1 else "s"
        return f"{self.step}: {self.reason} after {self.attempts} attempt{s}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "step": self.step,
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            "summary": self.line(),
        }


def describe_transport_error(e: BaseException) -> str:
    """A short reason for an httpx transport error: ``connection refused``, ``connection reset
    (the response was cut off)``, ..."""
    text = str(e) or type(e).__name__
    low = text.lower()
    if isinstance(e, httpx.ConnectError):
        if "refused" in low or "all connection attempts failed" in low:
            return "connection refused"
        return f"cannot connect ({text})"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__})"
    if isinstance(e, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection reset (the response was cut off)"
    return f"{type(e).__name__}: {text}"


def _where(route: str, body: dict[str, Any]) -> tuple[str, int, int]:
    step = _ROUTE_STEP.get(route, route)
    order, clip = -1, 0
    outline = body.get("outline")
    if isinstance(outline, dict) and isinstance(outline.get("order"), int):
        order = outline["order"]
    m = _AUDIO_RE.search(str(body.get("audioId", "")))
    if m:
        order, clip = int(m.group(1)), int(m.group(2))
    return step, order, clip


def failure_from_attempt(
    route: str,
    body: dict[str, Any],
    status: int,
    data: dict[str, Any] | None,
    *,
    error: BaseException | None = None,
    timeout_s: float | None = None,
) -> FailureReason | None:
    """The :class:`FailureReason` of one attempt, or None when it succeeded."""
    if status == 200 and data is not None and data.get("success"):
        return None
    step, order, clip = _where(route, body)
    if status == 0:
        reason = (
            "no answer (timed out)"
            if timeout_s is None
            else f"no answer within {timeout_s:g} s (timed out)"
        )
    elif status == -1:
        reason = describe_transport_error(error) if error is not None else "transport error"
    elif status == -2:
        reason = "unreadable answer (truncated or not JSON)"
    else:
        code = data.get("errorCode") if data else None
        msg = data.get("error") if data else None
        detail = ": ".join(str(x) for x in (code, msg) if x)
        reason = f"HTTP {status}" + (f" {detail}" if detail else "")
        if status == 200:
            reason = "HTTP 200 without success" + (f" ({detail})" if detail else "")
    return FailureReason(step, order, clip, status, reason)


def scene_failures(
    failed_orders: Sequence[int], failures: Iterable[FailureReason]
) -> list[SceneFailure]:
    """One :class:`SceneFailure` per failed scene, from the attempts recorded for it.

    The call that failed a scene is its last failed call (step, clip); its attempts are the
    failed attempts of that call (a failed call never succeeded, so all of them). A scene
    with no recorded failure (an answer the loop could not use) says so."""
    by_order: dict[int, list[FailureReason]] = {}
    for f in failures:
        by_order.setdefault(f.order, []).append(f)
    out = []
    for o in failed_orders:
        fs = by_order.get(o, [])
        if not fs:
            out.append(SceneFailure(o, "?", 0, "no failed request recorded", 0))
            continue
        last = fs[-1]
        n = sum(1 for f in fs if (f.step, f.clip) == (last.step, last.clip))
        out.append(SceneFailure(o, last.step, last.status, last.reason, n))
    return out
