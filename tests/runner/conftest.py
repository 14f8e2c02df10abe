"""Fixtures: a real uvicorn fake provider on 127.0.0.1 (free port), stopped by the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runner.world.fake_provider import ServerThread, create_app
from tests.conftest import const_scenario


@pytest.fixture
def live_server() -> Iterator[ServerThread]:
    app = create_app(const_scenario(), 0, time_scale=0.01)
    with ServerThread(app) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        yield srv
    assert not srv.thread.is_alive()


@pytest.fixture
def wall_floor_s() -> float:
    """The harness's floor now (real seconds per request beyond its latency): the basis of
    every wall-clock test's one-sided bound. Measured right before each test that uses it, so
    the bound sees the load the test's run sees (a floor measured once per session, on a quiet
    moment, let a run under a neighbour's load exceed it)."""
    from runner.experiments.floor import measure_floor

    return measure_floor(rounds=1, bare=False).harness_s


def wall_bound_s(floor_s: float, requests: int, time_scale: float, slack: float = 4.0) -> float:
    """Model seconds a wall-clock run may add to its exact value: ``slack`` times the floor
    for every request (all of them: an upper bound on the critical path), in model time."""
    return slack * floor_s * requests / time_scale
