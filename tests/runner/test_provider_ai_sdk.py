"""The Vercel AI SDK (``ai`` + ``@ai-sdk/openai``, what OpenMAIC calls providers with) against
the fake provider's chat-completions endpoint under Node, installed by scenebench into its
cache folder (:func:`runner.experiments.ai_sdk.ensure_ai_sdk`, bounded in time); skipped with
the reason when Node, npm or the registry is not there.

The retry timeline each test expects is derived here from the SDK's documented rule
(``retry-with-exponential-backoff.ts``): ``maxRetries`` 2; before retry k it waits the server's
``retry-after-ms`` when that is in [0, 60 s), else ``2 s * 2**(k-1)`` exactly (no jitter);
after the last retry it throws ``RetryError`` with reason ``maxRetriesExceeded``. Gaps are
measured between the attempts' arrivals in the provider's log; only lower bounds are
asserted, plus an upper bound wide enough for a busy machine that still tells a header-driven
wait from the backoff it replaces.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from runner.experiments.ai_sdk import run_ai_sdk
from runner.experiments.conform import ConformError
from runner.world.fake_provider import ServerThread, create_app
from sim import Quota
from tests.conftest import const_scenario

pytestmark = pytest.mark.wallclock
SLACK_S = 1.5  # a busy machine's extra time per gap; 0.3 + 1.5 < 2.0 (the first backoff)


@pytest.fixture(scope="module")
def ai_sdk_cache() -> Path:
    from runner.experiments.ai_sdk import ensure_ai_sdk

    try:
        return ensure_ai_sdk(timeout_s=240.0)
    except ConformError as e:
        pytest.skip(f"the Vercel AI SDK is not available: {e}")


def _gaps(rows: list[tuple[Any, ...]]) -> list[float]:
    return [(b[6] - a[6]) / 1e6 for a, b in itertools.pairwise(rows)]


def _serve(quota: Quota) -> ServerThread:
    sc = const_scenario(content=0.2, actions=0.2, quota_llm=quota)
    return ServerThread(create_app(sc, 0, time_scale=1.0))


def _by_key(s: ServerThread, key: str) -> list[tuple[Any, ...]]:
    return [r for r in s.app.state.fake.log_rows() if r[5] == key]


def test_ai_sdk_honours_retry_after_ms_streamed_and_not(ai_sdk_cache: Path) -> None:
    retry_after_s = 0.3
    expected = [retry_after_s, retry_after_s]  # 0.3 s is in [0, 60): the header wins
    with _serve(Quota(first_429=2, retry_after_s=retry_after_s)) as s:
        cases = [{"key": "gen", "stream": False}, {"key": "stream", "stream": True}]
        results = run_ai_sdk(s.base_url, cases, ai_sdk_cache)
        for res in results:
            assert res["ok"] and res["chars"] > 0, res
            rows = _by_key(s, res["key"])
            assert [r[9] for r in rows] == [429, 429, 200]
            for gap, want in zip(_gaps(rows), expected, strict=True):
                assert want <= gap < want + SLACK_S


def test_ai_sdk_backs_off_2_then_4_s_and_gives_up_without_a_header(ai_sdk_cache: Path) -> None:
    expected = [2.0 * 2 ** (k - 1) for k in (1, 2)]  # [2.0, 4.0]
    with _serve(Quota(first_429=5, retry_after_s=None)) as s:
        [res] = run_ai_sdk(s.base_url, [{"key": "k", "stream": False}], ai_sdk_cache)
        rows = _by_key(s, "k")
    assert not res["ok"]
    assert (
        res["error"]["name"] == "AI_RetryError" and res["error"]["reason"] == "maxRetriesExceeded"
    )
    assert res["error"]["statusCode"] == 429
    assert len(rows) == 3
    for gap, want in zip(_gaps(rows), expected, strict=True):
        assert gap >= want
