"""The barest ASGI app, the reference a harness's per-request cost is measured against (a
leaf module: the server, the load benchmark and the floor all use it)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["bare_app"]


def bare_app(latency_s: float) -> Any:
    """The barest ASGI app: read the body, sleep ``latency_s``, answer a small JSON."""
    payload = b'{"success": true, "audioId": "x", "base64": "AAAA", "format": "mp3"}'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await asyncio.sleep(latency_s)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app
