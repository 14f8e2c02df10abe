"""The load benchmark's soak and burst on a small run: every key ``bench --json`` reports, and
every request answered (speeds are never asserted: the machine is shared)."""

from __future__ import annotations

import pytest

from runner.experiments.load import FLAT_BOUND_MB, LOG_WINDOW, run_load, run_soak

pytestmark = pytest.mark.wallclock


def test_soak_interleaves_both_api_shapes_with_the_bare_app_and_reports_memory():
    soak = run_soak(800, rounds=2, connections=10)
    d = soak.to_dict()
    assert soak.bare_chat is not None and soak.messages is None is soak.bare_messages
    assert d["requests"] == 800 == soak.tts.requests + soak.chat.requests
    assert soak.bare.requests == 400 == soak.bare_chat.requests  # each route's own requests
    for key in ("tts_rps", "chat_rps", "bare_rps", "bare_chat_rps", "tts_over_bare"):
        assert d[key] > 0
    assert d["tts_over_bare"] == pytest.approx(d["tts_rps"] / d["bare_rps"])
    assert d["chat_over_bare"] == pytest.approx(d["chat_rps"] / d["bare_chat_rps"])
    assert d["chat_over_bare_tts"] == pytest.approx(d["chat_rps"] / d["bare_rps"])
    assert "messages_over_bare" not in d
    assert d["non_200"] == {"fake_tts": 0, "fake_chat": 0, "bare": 0, "bare_chat": 0}
    assert d["fake_tts"]["statuses"] == {"200": 400} == d["fake_chat"]["statuses"]
    # RSS at start and after each of the fake provider's 4 chunks of 200
    assert [at for at, _ in d["rss_mb"]] == [0, 200, 400, 600, 800]
    assert (d["rss_half_at"], d["rss_half_mb"]) == tuple(d["rss_mb"][2])
    assert d["rss_start_mb"] > 0 and d["rss_end_mb"] == d["rss_mb"][-1][1]
    assert d["memory_flat"] is None and LOG_WINDOW > 800 // 2  # the log window not yet full
    assert f"+ {FLAT_BOUND_MB:.0f} MB" in d["memory_bound"]
    assert len(d["load_avg_before"]) == 3 == len(d["load_avg_after"])


def test_a_burst_in_flight_on_the_chat_endpoint_is_all_answered():
    fake, bare = run_load(connections=200, per_connection=1, latency_s=0.3, target="chat")
    assert fake.statuses == {200: 200} == bare.statuses
    assert fake.errors == 0
