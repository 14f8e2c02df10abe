"""Argument types and shared flags of the command line: a leaf module (no project imports
beyond the light catalogue and rules), so the subcommand modules need not import
:mod:`runner.cli.commands`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from sim.catalog import builtin_names, preset_names
from sim.rules import MODES, POLICIES, parse_knob
from sim.upstream import DEFAULT_PROFILE, PROFILES, RUNS_PROFILE, profile_names

__all__ = [
    "add_adaptive",
    "add_cell",
    "add_dimensions",
    "add_json",
    "add_scenario",
    "add_stagger",
    "choice_list",
    "int_in",
    "int_list",
    "knob",
    "nonneg_float",
    "positive_float",
    "profile_list",
    "quota_list",
]


def _positive_float(name: str) -> Callable[[str], float]:
    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {s!r}")
        return v

    return conv


def _int_in(name: str, lo: int, hi: int | None = None) -> Callable[[str], int]:
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {lo}{'' if hi is None else f' and <= {hi}'}, "
                f"got {s!r}"
            ) from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {lo}{'' if hi is None else f' and <= {hi}'}, got {v}"
            )
        return v

    return conv


def _int_list(name: str, lo: int, hi: int) -> Callable[[str], list[int]]:
    conv = _int_in(name, lo, hi)

    def f(s: str) -> list[int]:
        return [conv(x) for x in s.split(",") if x.strip()]

    return f


def _add_scenario(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        default="default",
        help=f"built-in name ({', '.join(builtin_names())}) or a TOML path",
    )
    p.add_argument(
        "--upstream",
        choices=[*profile_names(), RUNS_PROFILE],
        default=None,
        help="the upstream profile whose rules to follow (default: runs, upstream's "
        "server-side generation runs as OpenMAIC runs today; with --mode, the scenario's "
        f"[client] upstream, {DEFAULT_PROFILE} in the built-ins)",
    )


def _nonneg_float(name: str) -> Callable[[str], float]:
    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number >= 0, got {s!r}") from None
        if not (v >= 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{name} must be a number >= 0, got {s!r}")
        return v

    return conv


def _knob(s: str) -> int:
    """``--concurrency`` as upstream reads PARALLEL_SCENE_CONCURRENCY (parseInt, clamp)."""
    return parse_knob(s)


def _profile_list(s: str) -> list[str]:
    names = profile_names() if s == "all" else [x.strip() for x in s.split(",") if x.strip()]
    for n in names:
        if n not in PROFILES and n != RUNS_PROFILE:
            raise argparse.ArgumentTypeError(
                f"--upstream must be 'all' or a comma list of {', '.join(PROFILES)} "
                f"(or {RUNS_PROFILE}); got {n!r}"
            )
    if not names:
        raise argparse.ArgumentTypeError("--upstream must name at least one profile")
    return names


def _quota_list(s: str) -> list[int | str]:
    """``--quotas``: in-flight limits (0..1000) and provider preset names (sim.presets)."""
    conv = _int_in("--quotas", 0, 1000)
    out: list[int | str] = []
    for x in (x.strip() for x in s.split(",")):
        if not x:
            continue
        if x.lstrip("-").isdigit():
            out.append(conv(x))
        elif x in preset_names():
            out.append(x)
        else:
            raise argparse.ArgumentTypeError(
                f"--quotas: {x!r} is neither an in-flight limit (0..1000) nor a preset "
                f"({', '.join(preset_names())})"
            )
    return out


def _choice_list(name: str, allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def f(s: str) -> list[str]:
        out = [x.strip() for x in s.split(",") if x.strip()]
        for x in out:
            if x not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{name} must be a comma-separated list of {', '.join(allowed)}; got {x!r}"
                )
        return out

    return f


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def add_cell(p: argparse.ArgumentParser, *, concurrency_required: bool) -> None:
    """``--mode``, ``--concurrency``, ``--tts-concurrency`` and ``--seed`` (run, sim)."""
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="the browser loop's shape (default pipelined); giving it without --upstream "
        "asks for the browser loop under the scenario's profile",
    )
    p.add_argument(
        "--concurrency",
        type=_knob,
        required=concurrency_required,
        default=None,
        help="PARALLEL_SCENE_CONCURRENCY, read as upstream does (parseInt, then [0, 10]: "
        "'3abc' is 3, '1e1' is 1, 'inf' is 0; 0 and 1 mean serial)",
    )
    p.add_argument(
        "--tts-concurrency",
        type=_int_in("--tts-concurrency", 1),
        default=None,
        help="within-scene clips at once (default: follows --concurrency in "
        "parallel modes, 1 in serial)",
    )
    p.add_argument("--seed", type=_int_in("--seed", 0), default=0)


def add_adaptive(p: argparse.ArgumentParser) -> None:
    """``--adaptive``: one limiter policy (run, sim)."""
    p.add_argument(
        "--adaptive",
        choices=POLICIES,
        default="off",
        help="adaptive limiter for content calls and within-scene clips (docs/adaptive.md)",
    )


def add_stagger(p: argparse.ArgumentParser) -> None:
    """``--stagger-s`` and ``--stagger-dist``: how tenants sharing a key start."""
    p.add_argument(
        "--stagger-s",
        type=_nonneg_float("--stagger-s"),
        default=0.0,
        help="tenants start this many model seconds apart (the gap, or its mean)",
    )
    p.add_argument("--stagger-dist", choices=("constant", "exponential"), default="constant")


def add_dimensions(p: argparse.ArgumentParser) -> None:
    """The adaptive and shared-key grid dimensions (sweep, validate --exact)."""
    p.add_argument(
        "--adaptive",
        type=_choice_list("--adaptive", POLICIES),
        default=None,
        help="comma-separated limiter policies (default off)",
    )
    p.add_argument(
        "--tenants",
        type=_int_list("--tenants", 1, 100),
        default=None,
        help="comma-separated classrooms per key (default 1)",
    )
    add_stagger(p)


positive_float = _positive_float
int_in = _int_in
int_list = _int_list
add_scenario = _add_scenario
nonneg_float = _nonneg_float
knob = _knob
profile_list = _profile_list
quota_list = _quota_list
choice_list = _choice_list
