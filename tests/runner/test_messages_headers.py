"""The messages endpoint's whole 200 written with its request id pre-encoded: the header list
``_plain`` wrote from ``{"request-id": ..., **rate headers}`` (the length, the type, the
request id, then the key's rate headers in their order), and the request id drawn before the
message id, as before."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from runner.world import provider_api as _api
from runner.world.fake_provider import create_app
from sim import Quota
from tests.conftest import const_scenario

BODY = {"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": "hello"}]}
_ANTHROPIC_RPM = (  # error_shapes.rate_headers' names for the requests bucket, in its order
    b"anthropic-ratelimit-requests-limit",
    b"anthropic-ratelimit-requests-remaining",
    b"anthropic-ratelimit-requests-reset",
)


@pytest.mark.parametrize("rpm", [0, 60])  # no rate headers; Anthropic's on every success
def test_a_messages_200_has_the_plain_answers_headers_and_ids(rpm: int) -> None:
    q = Quota(rpm=rpm, shape="anthropic")
    app = create_app(const_scenario(content=0.0, quota_llm=q), 0, time_scale=1.0)
    heads = {"x-api-key": "k", _api.CALL_HEADER: "content/3/0/0"}
    _api._ids = itertools.count(41)
    resp = asyncio.run(_api.messages_answer(app.state.fake, dict(BODY), heads, None))
    assert resp.status_code == 200 and type(resp) is _api._Json
    h = resp.raw_headers
    assert h[:3] == [
        (b"content-length", b"%d" % len(resp.body)),
        (b"content-type", b"application/json"),
        (b"request-id", b"req_sb41"),
    ]
    rate = h[3:]
    assert [k for k, _ in rate] == (list(_ANTHROPIC_RPM) if rpm else [])
    if rpm:  # the bucket after this one call: 60 a minute, 59 left
        assert rate[0][1] == b"60" and rate[1][1] == b"59"
    body = json.loads(resp.body)
    assert body["id"] == "msg_sb42" and body["usage"]["input_tokens"] > 0
