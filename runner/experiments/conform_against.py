"""``scenebench conform --openmaic A --against B``: upstream against upstream.

The same fixed cases run through two checkouts' own loops (each bundled and driven as
:mod:`runner.experiments.conform` does, each against a fake provider that answers as its own
profile's routes do), and each case's trace of A is compared with B's: what an upstream
change does to requests, timing and failures — the table a maintainer wants on a pull
request that touches generation. The port is not involved.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .conform import (
    WALL_REL_TOL,
    ConformCase,
    ConformReport,
    ConformRow,
    build_bundle,
    default_case_names,
    ensure_esbuild,
    fixed_cases,
    metrics,
    run_case,
)
from .conform_checkout import ConformError, Detected, check_checkout, detect_profile

__all__ = ["conform_against"]


def _side_cases(names: Sequence[str], found: Detected) -> dict[str, ConformCase]:
    return {c.name: c for c in fixed_cases(names, found.profile)}


def _pick(case_names: Sequence[str] | None, a: Detected, b: Detected) -> list[str]:
    """The named cases, else those both sides can run (the first scene's cases need both)."""
    if case_names:
        return list(case_names)
    both = set(default_case_names(b.profile))
    return [n for n in default_case_names(a.profile) if n in both]


def conform_against(
    path_a: str | Path,
    path_b: str | Path,
    case_names: Sequence[str] | None = None,
    *,
    time_scale: float = 0.15,
    tol_s: float = 1.0,
    random_u: float = 0.5,
    cache_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConformReport:
    """Every case through checkout A's loop and checkout B's; rows = A vs B."""
    from .traces import compare

    roots = (check_checkout(path_a), check_checkout(path_b))
    if roots[0] == roots[1]:
        raise ConformError(f"--against: {str(path_b)!r} is the --openmaic checkout itself")
    found = (detect_profile(roots[0]), detect_profile(roots[1]))
    names = _pick(case_names, *found)
    cases = (_side_cases(names, found[0]), _side_cases(names, found[1]))
    esb = ensure_esbuild(cache_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scenebench-against-") as tmp:
        bundles = [build_bundle(roots[0], Path(tmp) / "a", esb)]
        bundles.append(build_bundle(roots[1], Path(tmp) / "b", esb))
        for name in names:
            traces = []
            for side, bundle, by in zip("ab", bundles, cases, strict=True):
                if progress is not None:
                    progress(f"{name} ({side})")
                traces.append(run_case(by[name], bundle, time_scale=time_scale, random_u=random_u))
            diffs = compare(traces[0], traces[1], tol_s, WALL_REL_TOL)
            c = cases[0][name].concurrency
            rows.append(ConformRow(name, c, metrics(traces[0]), metrics(traces[1]), tuple(diffs)))
    title = (
        f"a = {roots[0]} ({found[0].profile}) · b = {roots[1]} ({found[1].profile}); "
        "differences are b's against a"
    )
    auto = tuple(sorted({*bundles[0].auto_stubbed, *bundles[1].auto_stubbed}))
    missing = {**bundles[0].missing_names, **bundles[1].missing_names}
    return ConformReport(
        f"{roots[0]} vs {roots[1]}",
        time_scale,
        tol_s,
        (),
        auto,
        missing,
        tuple(rows),
        profile=f"{found[0].profile} vs {found[1].profile}",
        workspace={**bundles[0].workspace, **bundles[1].workspace},
        sides=("a", "b"),
        title=title,
    )
