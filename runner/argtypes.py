"""Argument types and shared flags of the command line: a leaf module (no project imports
beyond the light catalogue), so the subcommand modules need not import :mod:`runner.cli`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from sim.catalog import builtin_names
from sim.upstream import DEFAULT_PROFILE, profile_names

__all__ = ["add_scenario", "int_in", "int_list", "positive_float"]


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
        choices=profile_names(),
        default=None,
        help="the upstream profile whose client rules to follow (default: the scenario's "
        f"[client] upstream, {DEFAULT_PROFILE} in the built-ins)",
    )


positive_float = _positive_float
int_in = _int_in
int_list = _int_list
add_scenario = _add_scenario
