"""The Vercel AI SDK (the client OpenMAIC uses) against the fake provider's own-API endpoints.

``ensure_ai_sdk`` installs ``ai`` and ``@ai-sdk/openai`` (pinned, with their ``zod`` peer) from
npm into scenebench's Node cache folder, the folder and lock ``scenebench conform`` installs
esbuild into (:func:`runner.experiments.conform.default_cache_dir`); ``run_ai_sdk`` runs
``conform_js/ai_sdk_driver.mjs`` under Node against a server and returns what each case saw.
The provider's request log holds the attempts' arrival times (the retry timeline).

The SDK's documented retry rule (``retry-with-exponential-backoff.ts``, ai 5 to 7): 2 retries
on 408, 409, 429 and 5xx; before retry k it waits ``2 * 2**(k-1)`` s exactly (no jitter), or the
server's ``retry-after-ms`` (else ``retry-after``) when that is in [0, 60) s or shorter than the
exponential delay; once retries are spent it throws ``RetryError`` (reason
``maxRetriesExceeded``). docs/provider-api.md has the sources.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .conform_checkout import ConformError
from .conform_node import _installed_version, default_cache_dir, node_version

__all__ = ["AI_SDK_PACKAGES", "ai_sdk_timelines", "ensure_ai_sdk", "run_ai_sdk", "vercel_waits_s"]

# ai 7 needs Node >= 22; ai 6 runs on Node >= 18 (the conform minimum)
AI_SDK_PACKAGES = {"ai": "6.0.333", "@ai-sdk/openai": "3.0.141", "zod": "4.6.7"}
_DRIVER = Path(__file__).resolve().parent / "conform_js" / "ai_sdk_driver.mjs"


def vercel_waits_s(retry_after_s: float | None, retries: int = 2) -> list[float]:
    """The AI SDK's waits before retries 1..``retries`` after 429s carrying ``retry_after_s``
    (``None``: no header): the header when in [0, 60) s or below the exponential delay, else
    ``2 * 2**(k-1)``."""
    out = []
    for k in range(1, retries + 1):
        exp = 2.0 * 2 ** (k - 1)
        use = retry_after_s is not None and (retry_after_s < 60 or retry_after_s < exp)
        out.append(float(retry_after_s) if use and retry_after_s is not None else exp)
    return out


def _missing(cache: Path) -> list[str]:
    return [
        f"{name}@{v}"
        for name, v in AI_SDK_PACKAGES.items()
        if _installed_version(cache / "node_modules" / name) != v
    ]


def ensure_ai_sdk(cache_dir: str | Path | None = None, timeout_s: float = 600.0) -> Path:
    """The cache folder with the pinned AI SDK packages, installed from npm if missing;
    :class:`ConformError` (one line) without Node >= 18, npm, or a working install."""
    node_version()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not _missing(cache):
        return cache
    npm = shutil.which("npm")
    if npm is None:
        raise ConformError("npm: not found on PATH; installing the AI SDK needs npm")
    cache.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(cache / ".scenebench-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time per cache folder
        todo = _missing(cache)
        if todo:
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund"]
            cmd += ["--loglevel=error", *todo]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except (OSError, subprocess.SubprocessError) as e:
                raise ConformError(f"npm: installing the AI SDK failed ({e})") from None
            if proc.returncode != 0 or _missing(cache):
                tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
                raise ConformError(f"npm: installing {' '.join(todo)} failed: {tail}")
    return cache


def run_ai_sdk(
    base_url: str, cases: list[dict[str, Any]], cache: Path, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Run the driver's ``cases`` (``{key, stream, maxRetries}``) at once against
    ``base_url`` (the server root; the SDK is given ``<base_url>/v1``); one result each."""
    config = {"cache": str(cache), "baseURL": base_url.rstrip("/") + "/v1", "cases": cases}
    try:
        proc = subprocess.run(
            ["node", str(_DRIVER), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise ConformError(f"node: the AI SDK driver failed ({e})") from None
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.split())[-300:]
        raise ConformError(f"node: the AI SDK driver exited {proc.returncode}: {tail}")
    out: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    return out


def ai_sdk_timelines(
    cache_dir: str | Path | None = None, retry_after_s: float = 0.3
) -> list[dict[str, Any]]:
    """The AI SDK's retry timeline measured against the fake provider, two ways: 429s that
    carry ``retry-after-ms`` (``retry_after_s``) and 429s without a header; each row has the
    attempts' statuses, the measured gaps between their arrivals (s) and the documented
    waits (:func:`vercel_waits_s`). ``scenebench clients`` prints them."""
    from sim.dists import Constant, ConstantInt
    from sim.scenario import Quota, Scenario
    from sim.upstream import ClientProfile

    from ..world.fake_provider import ServerThread, create_app

    cache = ensure_ai_sdk(cache_dir)
    rows = []
    for header, quota in (
        (retry_after_s, Quota(first_429=2, retry_after_s=retry_after_s)),
        (None, Quota(first_429=5, retry_after_s=None)),
    ):
        sc = Scenario(
            name="ai-sdk",
            outlines=1,
            scene_types=("slide",),
            speech_actions=ConstantInt(1),
            content=Constant(0.2),
            actions=Constant(0.2),
            tts=Constant(0.2),
            quota_llm=quota,
            client=ClientProfile(),
        )
        with ServerThread(create_app(sc, 0, time_scale=1.0)) as srv:
            [res] = run_ai_sdk(srv.base_url, [{"key": "k", "stream": False}], cache)
            log = [r for r in srv.app.state.fake.log_rows() if r[5] == "k"]
        gaps = [(b[6] - a[6]) / 1e6 for a, b in itertools.pairwise(log)]
        rows.append(
            {
                "retry_after_s": header,
                "statuses": [r[9] for r in log],
                "gaps_s": gaps,
                "documented_s": vercel_waits_s(header),
                "ok": res["ok"],
                "error": res.get("error"),
            }
        )
    return rows
