"""Fixtures: a real uvicorn fake provider on 127.0.0.1 (free port), stopped by the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runner.server import ServerThread, create_app
from tests.conftest import const_scenario


@pytest.fixture
def live_server() -> Iterator[ServerThread]:
    app = create_app(const_scenario(), 0, time_scale=0.01)
    with ServerThread(app) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        yield srv
    assert not srv.thread.is_alive()
