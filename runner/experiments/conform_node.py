"""Node and esbuild for ``scenebench conform``: the esbuild install, the bundle of a checkout
module with scenebench's stubs (``conform_js/build.mjs``) and running a ``conform_js`` script
(``node <script> <json>``, one JSON line back). A run that used a name scenebench does not
stub is a :class:`HarnessError`. See ``docs/conform.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .conform_checkout import ENTRY, FOREGROUND_RETRY, ConformError, check_checkout

__all__ = [
    "ESBUILD_VERSION",
    "MIN_NODE",
    "Bundle",
    "HarnessError",
    "build_bundle",
    "default_cache_dir",
    "ensure_esbuild",
    "node_json",
    "node_version",
]

ESBUILD_VERSION = "0.28.2"
MIN_NODE = 18


class HarnessError(ConformError):
    """The run used something scenebench stubs as a no-op (an auto-stubbed module's name, or
    a name its stub lacks): the result would be the harness's, not upstream's. ``names``:
    ``module:name`` as the driver recorded them."""

    def __init__(self, names: Sequence[str], auto: Sequence[str] = ()) -> None:
        self.names = tuple(names)
        super().__init__(_harness_message(self.names, tuple(auto)))


def _harness_message(names: tuple[str, ...], auto: tuple[str, ...]) -> str:
    """One line: the names, and what to add for them."""
    mods = {n.rsplit(":", 1)[0] for n in names}
    found = sorted(m for m in mods if m in auto)
    fix = "add them to their stub in runner/experiments/conform_js/stubs (STUBS in build.mjs)"
    if found:
        fix = (
            f"{', '.join(found)} could not be found: make it resolvable (a pnpm workspace "
            "package of the checkout, or `npm install` there) or add a stub for it to STUBS in "
            "runner/experiments/conform_js/build.mjs"
        )
    return (
        f"harness: upstream used {len(names)} name(s) that scenebench does not stub: "
        f"{', '.join(names)}; {fix}"
    )


# -- Node and esbuild ------------------------------------------------------------------------
def _js_dir() -> Path:
    return Path(str(resources.files("runner.experiments").joinpath("conform_js")))


def default_cache_dir() -> Path:
    """``$SCENEBENCH_CACHE``, else ``$XDG_CACHE_HOME/scenebench/node``, else ``~/.cache/...``."""
    env = os.environ.get("SCENEBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "scenebench" / "node"


def node_version() -> tuple[int, int, int]:
    """The version of ``node`` on PATH; :class:`ConformError` if missing or older than 18."""
    node = shutil.which("node")
    if node is None:
        raise ConformError(f"node: not found on PATH; conform needs Node >= {MIN_NODE}")
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise ConformError(f"node: `node --version` failed ({e})") from None
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise ConformError(f"node: cannot read the version from {out!r}")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if version[0] < MIN_NODE:
        raise ConformError(f"node: version {out} found; conform needs Node >= {MIN_NODE}")
    return version


def _installed_version(pkg: Path) -> str | None:
    try:
        data = json.loads((pkg / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    v = data.get("version")
    return v if isinstance(v, str) else None


def ensure_esbuild(cache_dir: str | Path | None = None) -> Path:
    """The esbuild package folder, installed from npm into ``cache_dir`` if not there yet."""
    node_version()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    pkg = cache / "node_modules" / "esbuild"
    if _installed_version(pkg) == ESBUILD_VERSION:
        return pkg
    npm = shutil.which("npm")
    if npm is None:
        raise ConformError("npm: not found on PATH; conform installs esbuild with npm")
    cache.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(cache / ".scenebench-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time per cache folder
        if _installed_version(pkg) != ESBUILD_VERSION:
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund"]
            cmd += ["--loglevel=error", f"esbuild@{ESBUILD_VERSION}"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                raise ConformError(f"npm: installing esbuild failed ({e})") from None
            if proc.returncode != 0 or _installed_version(pkg) != ESBUILD_VERSION:
                tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
                raise ConformError(f"npm: installing esbuild@{ESBUILD_VERSION} failed: {tail}")
    return pkg


# -- bundling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A bundled scene loop and what the build replaced."""

    path: Path
    checkout: Path
    stubbed: tuple[str, ...]
    auto_stubbed: tuple[str, ...]
    missing_names: dict[str, list[str]]
    inputs: tuple[str, ...]
    workspace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def built(cls, path: Path, checkout: Path, res: dict[str, Any]) -> Bundle:
        """The bundle at ``path`` as a bundler script (``build.mjs``, ``runs_build.mjs``)
        reported it in ``res``."""
        return cls(
            path=path,
            checkout=checkout,
            stubbed=tuple(res.get("stubbed", [])),
            auto_stubbed=tuple(res.get("auto_stubbed", [])),
            missing_names=dict(res.get("missing_names", {})),
            inputs=tuple(res.get("inputs", [])),
            workspace=dict(res.get("workspace", {})),
        )


def node_json(script: str, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``node <script> <json>`` and parse the JSON object on its last stdout line."""
    cmd = ["node", str(_js_dir() / script), json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConformError(f"{script}: no answer within {timeout_s:g} s") from None
    except OSError as e:
        raise ConformError(f"{script}: cannot run node ({e})") from None
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        out = None
    if not isinstance(out, dict):
        tail = " ".join(proc.stderr.split())[-300:]
        raise ConformError(f"{script}: exited {proc.returncode} without a result: {tail}")
    touched = out.get("unstubbed") or []
    if touched:
        raise HarnessError(touched)
    err = out.get("error")
    if err is not None or proc.returncode != 0:
        first = " ".join(str(err).split())[:400]
        raise ConformError(f"{script}: {first}")
    return out


def build_bundle(
    openmaic: str | Path,
    out_dir: str | Path,
    esbuild_dir: str | Path | None = None,
    entry: str = ENTRY,
) -> Bundle:
    """Bundle the checkout's scene loop (or another ``entry`` module) with the stubs into
    ``out_dir/scene-loop.mjs``."""
    root = check_checkout(openmaic)
    esb = Path(esbuild_dir) if esbuild_dir is not None else ensure_esbuild()
    outfile = Path(out_dir) / "scene-loop.mjs"
    also = [{"file": FOREGROUND_RETRY, "names": ["FOREGROUND_SCENE_RETRY_OPTIONS"]}]
    cfg = {"root": str(root), "entry": entry, "outfile": str(outfile), "esbuild": str(esb)}
    res = node_json("build.mjs", {**cfg, "also": also}, timeout_s=300)
    return Bundle.built(outfile, root, res)
