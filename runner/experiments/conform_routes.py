"""The LLM routes' error statuses: upstream's own mapping against the fake provider's.

Since #788 an LLM route answers a failed model call through ``llmApiError``
(``lib/server/llm-error-response.ts``): the provider's status passed through. The fake
provider answers in the same ``status`` shape under the post-#788 profiles
(:func:`sim.upstream.route_status`). Where the checkout has that file, ``conform`` bundles it
(with stubs for the AI SDK's error classes and Next.js's JSON response) and asks it for its
answer to an AI SDK call error carrying each provider status — bare, and wrapped in the SDK's
retry error — and compares status, error code and the absence of a Retry-After header with
what the fake provider's ``/api/generate/scene-content`` answers to the same provider fault.
"""

from __future__ import annotations

import asyncio
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .conform_node import build_bundle, node_json

__all__ = ["ROUTE_ERRORS", "ROUTE_STATUSES", "fake_route_answer", "route_differences"]

ROUTE_ERRORS = "lib/server/llm-error-response.ts"
# conform's case 6 (every LLM call fails): the scenario the provider answers from
_CASE6 = Path(str(resources.files("runner.experiments").joinpath("conform_cases", "case6.toml")))
# the provider statuses probed: every 4xx/5xx fault the fake provider can give, and 429
ROUTE_STATUSES = (400, 401, 403, 404, 422, 429, 500, 502, 503, 529)


def fake_route_answer(provider_status: int) -> tuple[int, str, bool]:
    """The fake provider's answer (status, errorCode, has Retry-After) on the content route
    when the provider fails every call with ``provider_status``, under ``pr788``."""
    import httpx

    from sim import load_scenario
    from sim.scenario import Quota

    from ..world.fake_provider import create_app

    sc = load_scenario(_CASE6, upstream="pr788")
    q = Quota(p_429=1.0) if provider_status == 429 else Quota(p_5xx=1.0, status_5xx=provider_status)
    app = create_app(sc.replace(quota_llm=q), time_scale=1e-4)
    outline = {"id": "o", "type": "slide", "title": "t", "order": 0}
    body = {"outline": outline, "allOutlines": [outline], "stageId": "sb-0"}

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            return await client.post("/api/generate/scene-content", json=body)

    r = asyncio.run(post())
    return r.status_code, str(r.json().get("errorCode")), "retry-after" in r.headers


def route_differences(root: Path, esbuild_dir: Path) -> tuple[str, ...] | None:
    """Upstream's answers against the fake provider's, as differences (empty: the same);
    ``None`` when the checkout has no ``llmApiError`` (before #788)."""
    if not (root / ROUTE_ERRORS).is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="scenebench-routes-") as tmp:
        bundle = build_bundle(root, tmp, esbuild_dir, entry=ROUTE_ERRORS)
        cfg = {"bundle": str(bundle.path), "statuses": [*ROUTE_STATUSES, 0]}
        res: dict[str, Any] = node_json("routes.mjs", cfg, timeout_s=120)
    out = []
    for a in res["answers"]:
        got = (int(a["status"]), str(a["code"]), bool(a["retry_after"]))
        p = int(a["provider"])
        # no status: the fake provider has no such fault; the rule is a 500 INTERNAL_ERROR
        want = fake_route_answer(p) if p else (500, "INTERNAL_ERROR", False)
        if got != want:
            how = "in a retry error" if a["wrapped"] else "bare"
            out.append(
                f"provider {p or 'no status'} ({how}): upstream's route answers {got[0]} "
                f"{got[1]}{' with Retry-After' if got[2] else ''}, the fake provider {want[0]} "
                f"{want[1]}{' with Retry-After' if want[2] else ''}"
            )
    return tuple(out)
