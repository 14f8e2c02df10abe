"""The server path's command-line flags, registered without the model's heavy imports (the
work is in :mod:`runner.capacity`, imported when a command runs)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_capacity_parser", "add_server_args"]


def _cli() -> Any:
    from . import argtypes

    return argtypes


def _capacity(a: argparse.Namespace) -> int:
    from .capacity import capacity

    return capacity(a)


def add_server_args(p: argparse.ArgumentParser) -> None:
    """``sim``'s server-path flags."""
    c = _cli()
    p.add_argument("--client", choices=("browser", "server"), default="browser")
    p.add_argument("--arrival-per-hour", type=c._positive_float("--arrival-per-hour"))
    p.add_argument("--jobs", type=c._int_in("--jobs", 1, 100_000), default=200)
    p.add_argument("--arrivals", default=None, help="a file of job arrival times (s), one a line")
    p.add_argument("--media-concurrency", type=c._int_in("--media-concurrency", 1, 1000), default=1)
    p.add_argument(
        "--key-gate",
        action="store_true",
        help="one gate per key shared by every job (--client server) or classroom (--tenants)",
    )
    p.add_argument(
        "--key-inflight",
        type=c._int_in("--key-inflight", 1, 1000),
        default=None,
        help="with --client server or --key-gate: both keys allow this many in flight",
    )
    p.add_argument("--model-retries", type=c._int_in("--model-retries", 0, 20), default=None)
    p.add_argument("--job-retries", type=c._int_in("--job-retries", 0, 20), default=None)
    p.add_argument("--per-job", action="store_true", help="with --json: every job's record too")


def add_capacity_parser(sub: Any) -> None:
    """Register ``scenebench capacity``."""
    c = _cli()
    p = sub.add_parser("capacity", help="server path: key saturation, p95 vs arrival rate")
    c._add_scenario(p)
    p.add_argument("--key-inflight", type=c._int_in("--key-inflight", 1, 1000), default=5)
    p.add_argument(
        "--concurrency", type=c._int_list("--concurrency", 1, 10), default=list(range(1, 11))
    )
    p.add_argument("--quotas", type=c._int_list("--quotas", 0, 1000), default=[3, 5, 10])
    p.add_argument("--jobs", type=c._int_in("--jobs", 2, 100_000), default=200)
    p.add_argument("--tenant-reps", type=c._int_in("--tenant-reps", 0), default=100)
    p.add_argument("--seed", type=c._int_in("--seed", 0), default=0)
    p.add_argument("--out", default="results/capacity")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_capacity)
