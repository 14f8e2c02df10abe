"""What ``scenebench conform`` reads of an OpenMAIC checkout before it runs anything.

* :func:`check_checkout`: the path exists and is a checkout of an era conform can drive.
  Upstream's scene generation has had two eras: the **browser loop**
  (``lib/hooks/use-scene-generator.ts`` drives generation in the browser: v0.2.1 through main
  of 2026-08-21) and the **run engine** (``lib/server/generation/run/engine.ts``: generation
  as durable server-side runs, RFC #1754). :func:`check_checkout` accepts the browser loop;
  ``conform`` routes a run-engine checkout to :mod:`runner.experiments.conform_runs`.
* :func:`detect_profile`: which of scenebench's upstream profiles (``sim.upstream``) the
  checkout's loop is, from markers in its source (each marker is what the change that
  defines the profile added); ``conform --upstream`` overrides it.

Only file names and identifiers are read here; no upstream code is copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sim.errors import UserError

__all__ = [
    "ENGINE",
    "ENTRY",
    "FOREGROUND_RETRY",
    "CheckoutError",
    "ConformError",
    "Detected",
    "Era",
    "check_checkout",
    "detect_era",
    "detect_profile",
]

ENTRY = "lib/hooks/use-scene-generator.ts"
ENGINE = "lib/server/generation/run/engine.ts"
# the generation-preview page's retry options for the first scene (since #788)
FOREGROUND_RETRY = "app/generation-preview/foreground-retry.ts"


class Era(StrEnum):
    BROWSER_LOOP = "browser-loop"  # lib/hooks/use-scene-generator.ts
    RUN_ENGINE = "run-engine"  # lib/server/generation/run/engine.ts


class ConformError(UserError):
    """Conformance could not run (no Node, bad checkout, build or driver failure): one line."""


class CheckoutError(ConformError):
    """``--openmaic`` names no usable checkout: one line."""


def detect_era(root: Path) -> Era | None:
    """The browser loop when its hook is there (even beside an engine), else the run engine
    when its engine is there, else ``None``."""
    if (root / ENTRY).is_file():
        return Era.BROWSER_LOOP
    if (root / ENGINE).is_file():
        return Era.RUN_ENGINE
    return None


def check_checkout(path: str | Path) -> Path:
    """The checkout's root (resolved); :class:`CheckoutError` when ``path`` does not exist,
    is not an OpenMAIC checkout, or is one of the run-engine era (not supported yet)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CheckoutError(f"--openmaic: {str(path)!r} does not exist")
    era = detect_era(root)
    if era is None:
        raise CheckoutError(
            f"--openmaic: {str(path)!r} is not an OpenMAIC checkout (no {ENTRY} and no {ENGINE} "
            "under it)"
        )
    if era is Era.RUN_ENGINE:
        raise CheckoutError(
            f"--openmaic: {str(path)!r} is a run-engine era checkout ({ENGINE}, no {ENTRY}): "
            "not supported yet here, which drives the browser loop (plain `conform` drives "
            "its engine: runner/experiments/conform_runs.py)"
        )
    return root.resolve()


@dataclass(frozen=True)
class Detected:
    """The profile a checkout's loop matches, and the markers that decided it."""

    profile: str
    markers: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.profile} (detected: {'; '.join(self.markers)})"


_CLIENT_RETRY = re.compile(r"\bwithGenerationRetry\b")
_PIPELINED = re.compile(r"\blazyBoundedMap\b")
_KNOB = re.compile(r"\bparallelSceneConcurrency\b")
_SCENE_TTS_EXPORTED = re.compile(r"\bexport\s+(?:async\s+)?function\s+generateTTSForScene\b")


def detect_profile(root: Path) -> Detected:
    """The profile of the checkout's browser loop, oldest rule first:

    * no bounded map (``lazyBoundedMap``) → ``v0.2.1`` (serial loop);
    * no ``withGenerationRetry`` → ``pr660`` (retries inside the routes);
    * the knob (``parallelSceneConcurrency``) read once → ``pr788``; read again for a
      scene's clips → ``pr696``;
    * ``generateTTSForScene`` exported (the preview page generates the first scene's clips
      with it) → ``pr1039``.
    """
    src = (root / ENTRY).read_text(encoding="utf-8", errors="replace")
    if not _PIPELINED.search(src):
        return Detected("v0.2.1", ("no lazyBoundedMap: serial loop",))
    marks = ["lazyBoundedMap: pipelined content"]
    if not _CLIENT_RETRY.search(src):
        return Detected("pr660", (*marks, "no withGenerationRetry: retries in the routes"))
    marks.append("withGenerationRetry: client retries")
    if len(_KNOB.findall(src)) < 2:
        return Detected("pr788", (*marks, "the knob read once: clips one at a time"))
    marks.append("the knob read for a scene's clips: clips at c")
    if not _SCENE_TTS_EXPORTED.search(src):
        return Detected("pr696", tuple(marks))
    marks.append("generateTTSForScene exported: the first scene's clips at c")
    return Detected("pr1039", tuple(marks))
