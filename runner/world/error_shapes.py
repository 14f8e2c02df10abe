"""How each provider says no: the status, headers and body of a refused or failed call.

One function per provider family, each from the provider's own documentation or captured
answers (docs/provider-api.md lists the sources with dates). The decision behind an answer
is the shared rules' (:mod:`sim.provider`); only its wording differs:

* ``openai``: ``{"error": {message, type, param, code}}``; a 429 carries
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, ``retry-after-ms`` (ms) and
  ``retry-after`` (whole seconds, rounded up);
* ``azure``: OpenAI's body and headers, resets in whole seconds, ``code: "429"``;
* ``anthropic``: ``{"type": "error", "error": {type, message}, "request_id"}``: 429
  ``rate_limit_error`` with ``retry-after`` (s) and ``anthropic-ratelimit-*`` (RFC 3339
  resets), 529 ``overloaded_error``, 500 ``api_error``, 504 ``timeout_error``;
* ``gemini``: ``{"error": {code, message, status, details}}``: 429 ``RESOURCE_EXHAUSTED``
  with the delay only in the body (``google.rpc.RetryInfo`` ``retryDelay: "13s"``);
* ``kimi``: OpenAI-shaped 429 ``rate_limit_reached_error`` whose delay is only in the text;
* ``minimax``: HTTP 200 with ``base_resp.status_code`` 1002 (rate limit), 1039 (token
  limit) or 1024 (internal error) and no audio.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response

from sim.provider import Decision

__all__ = ["MODEL_EPOCH", "SHAPES", "error_response", "rate_headers", "rfc3339"]

SHAPES = ("openai", "azure", "anthropic", "gemini", "kimi", "minimax")
# model time 0 as a calendar time, for reset timestamps (deterministic: both clocks agree)
MODEL_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_DAILY = {"rpd": "requests per day (RPD)", "tpd": "tokens per day (TPD)"}


def rfc3339(at_us: int) -> str:
    """Model time ``at_us`` as an RFC 3339 UTC timestamp (Anthropic's reset headers)."""
    t = MODEL_EPOCH + timedelta(microseconds=at_us)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_s(dec: Decision) -> int | None:
    return None if dec.retry_after_ms is None else math.ceil(dec.retry_after_ms / 1000)


def rate_headers(shape: str, dec: Decision, now_us: int) -> dict[str, str]:
    """The rate-limit headers of ``dec.rate`` in ``shape``'s names (empty without it)."""
    r = dec.rate
    if r is None:
        return {}
    if shape == "anthropic":
        h: dict[str, str] = {}
        if r.limit_requests >= 0:
            h["anthropic-ratelimit-requests-limit"] = str(r.limit_requests)
            h["anthropic-ratelimit-requests-remaining"] = str(r.remaining_requests)
            h["anthropic-ratelimit-requests-reset"] = rfc3339(now_us + r.reset_requests_us)
        if r.limit_tokens >= 0:  # the bucket that refused: input, output or both
            kind = {"itpm": "input-tokens", "otpm": "output-tokens"}.get(dec.reason, "tokens")
            h[f"anthropic-ratelimit-{kind}-limit"] = str(r.limit_tokens)
            h[f"anthropic-ratelimit-{kind}-remaining"] = str(r.remaining_tokens)
            h[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(now_us + r.reset_tokens_us)
        return h
    if shape == "azure":
        h = r.headers()
        for k in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
            if k in h:
                us = r.reset_requests_us if "requests" in k else r.reset_tokens_us
                h[k] = str(math.ceil(max(0, us) / 1e6))
        return h
    if shape in ("openai", "kimi"):
        return r.headers()
    return {}


def _retry_headers(dec: Decision, ms: bool) -> dict[str, str]:
    h: dict[str, str] = {}
    if dec.retry_after_ms is not None:
        if ms:
            h["retry-after-ms"] = str(dec.retry_after_ms)
        h["retry-after"] = str(_retry_s(dec))
    return h


def _openai(status: int, dec: Decision, model: str, azure: bool) -> tuple[dict[str, Any], bool]:
    if status == 429:
        what = _DAILY.get(dec.reason, "requests per min (RPM)")
        if dec.reason in ("tpm", "itpm", "otpm"):
            what = "tokens per min (TPM)"
        wait = _retry_s(dec)
        tail = "" if wait is None else f" Please try again in {wait}s."
        if azure:
            msg = "Requests to the ChatCompletions_Create Operation have exceeded the rate limit."
            msg += "" if wait is None else f" Please retry after {wait} seconds."
            return {"error": {"code": "429", "message": msg}}, True
        msg = f"Rate limit reached for {model} on {what} ({dec.reason}).{tail}"
        body = {"message": msg, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
        return {"error": body}, True
    msg = "The server had an error while processing your request."
    err = {"message": msg, "type": "server_error", "param": None, "code": None}
    return {"error": err}, False


_ANTHROPIC_TYPES = {
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _anthropic(status: int, dec: Decision, request_id: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    msg = {
        "rate_limit_error": "Number of requests has exceeded your rate limit",
        "overloaded_error": "Overloaded",
        "timeout_error": "Request timed out",
    }.get(kind, "Internal server error")
    if status == 429 and dec.reason in ("tpm", "itpm", "otpm"):
        msg = "Number of request tokens has exceeded your per-minute rate limit"
    return {"type": "error", "error": {"type": kind, "message": msg}, "request_id": request_id}


def _gemini(status: int, dec: Decision, model: str) -> dict[str, Any]:
    if status != 429:
        name = "UNAVAILABLE" if status == 503 else "INTERNAL"
        return {
            "error": {"code": status, "message": "An internal error has occurred.", "status": name}
        }
    daily = dec.reason in ("rpd", "tpd")
    metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    quota_id = (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
        if daily
        else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    )
    wait_s = None if dec.retry_after_ms is None else dec.retry_after_ms / 1000
    msg = "You exceeded your current quota, please check your plan and billing details."
    msg += f" * Quota exceeded for metric: {metric}, model: {model}"
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": metric, "quotaId": quota_id}],
        }
    ]
    if wait_s is not None:
        delay = f"{wait_s:.3f}".rstrip("0").rstrip(".") + "s"
        msg += f"\nPlease retry in {delay}."
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return {
        "error": {"code": 429, "message": msg, "status": "RESOURCE_EXHAUSTED", "details": details}
    }


def _kimi(status: int, dec: Decision) -> dict[str, Any]:
    if status != 429:
        return {"error": {"message": "The engine is currently overloaded", "type": "engine_error"}}
    wait = _retry_s(dec) or 1
    if dec.reason == "tpd":
        msg = "Your account org-fake<ak-fake> request reached organization TPD rate limit"
    else:
        msg = (
            f"Your account org-fake<ak-fake> request reached organization max RPM "
            f"({dec.reason}), please try again after {wait} seconds"
        )
    return {"error": {"message": msg, "type": "rate_limit_reached_error"}}


def _minimax(status: int, dec: Decision) -> dict[str, Any]:
    if status == 429:
        code, msg = (1039, "token limit") if dec.reason in ("tpm", "tpd") else (1002, "rate limit")
    else:
        code, msg = 1024, "internal error"
    return {"base_resp": {"status_code": code, "status_msg": msg}}


def error_response(
    shape: str, status: int, dec: Decision, *, now_us: int, model: str = "", request_id: str = ""
) -> Response:
    """The answer ``shape``'s provider gives a refused (429) or failed (5xx, outage) call."""
    headers = rate_headers(shape, dec, now_us) if status == 429 else {}
    if shape == "anthropic":
        if status in (429, 529):
            headers.update(_retry_headers(dec, ms=False))
        headers["request-id"] = request_id
        return JSONResponse(_anthropic(status, dec, request_id), status, headers)
    if shape == "gemini":
        return JSONResponse(_gemini(status, dec, model), status)
    if shape == "kimi":
        return JSONResponse(_kimi(status, dec), status, headers)
    if shape == "minimax":
        return Response(
            json.dumps(_minimax(status, dec)), HTTPStatus.OK, media_type="application/json"
        )
    body, limited = _openai(status, dec, model, shape == "azure")
    if limited:
        headers.update(_retry_headers(dec, ms=True))
    return JSONResponse(body, status, headers)
