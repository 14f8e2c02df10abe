"""Analysis of a results folder: cell table, paired speedups, recommendation, figures, report.

Everything here reads the saved ``runs.parquet`` (never memory), so a report can
be re-rendered at any time with ``scenebench report DIR``.

**Speedup** of a cell = mean serial makespan / mean cell makespan over the runs
that completed with every scene in both (same seed and run id: paired), with a
95% percentile bootstrap interval over the pairs (2,000 resamples, seeded).

**The recommendation rule** (for the merged ``pipelined`` design, on the model):
for each scenario, a concurrency ``c`` is *admissible* when, for every quota
profile that lets a key hold at least two requests in flight (unlimited
included), P(any failed scene) at ``c`` is at most serial's plus one percentage
point. The recommended default is the smallest admissible ``c`` whose speedup
(geometric mean over those profiles) is within 5% of the best admissible
speedup. Across scenarios the smallest recommendation wins, so no scenario is
pushed beyond its admissible range. Keys that allow one request in flight are
reported separately: no fixed ``c > 1`` is safe for them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.scenario import Scenario, scenario_from_mapping

from .counts import (
    FAILURE_BUDGET_PP,
    bootstrap_ratio,
    fails_too_often,
    p_any_failed,
    paired_speedup,
)
from .presets_report import (
    preset_cells,
    recommend_presets,
    render_presets_section,
    shared_verdicts,
    split_presets,
)
from .provenance import provenance, provenance_line
from .qoe_report import qoe_cell_columns, qoe_section, recommend_qoe, render_qoe_figures
from .upstream_report import overall_for_today, render_profile_section

__all__ = [
    "HOLLOW_CAPTION",
    "RULE",
    "cell_table",
    "critical_path_speedup",
    "evidence_table",
    "folder_provenance",
    "plot_marked",
    "recommend",
    "render_figures",
    "render_report",
    "render_results",
    "speedup_bound",
]

RULE: dict[str, Any] = {
    "mode": "pipelined",
    "backend": "sim",
    "min_quota_for_default": 2,
    "failure_budget_pp": FAILURE_BUDGET_PP,
    "within_best": 0.05,
}
_KEYS = ["backend", "scenario", "quota", "mode", "concurrency", "adaptive", "tenants"]


_bootstrap_ratio = bootstrap_ratio


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with summaries and the paired speedup over serial."""
    runs = runs.copy()
    if "adaptive" not in runs.columns:  # folders written before the adaptive dimension
        runs["adaptive"] = "off"
    if "tenants" not in runs.columns:
        runs["tenants"] = 1
    runs["any_failed"] = runs["scenes_failed"] > 0
    base = (
        runs[runs["mode"] == "serial"]
        .set_index(["backend", "scenario", "quota", "tenants", "classroom"])
        .sort_index()
    )
    rows = []
    for key, g in runs.groupby(_KEYS, sort=True):
        b, s, q, _m, _c, _a, k = key
        n = len(g)
        k_fail = int(g["any_failed"].sum())  # = p_any_failed(g) * n
        lo_f, hi_f = _wilson(k_fail, n)
        row: dict[str, Any] = dict(zip(_KEYS, key, strict=True))
        ttfs = g["ttfs_s"].dropna()
        row.update(
            {
                "runs": n,
                "makespan_mean_s": g["makespan_s"].mean(),
                "makespan_p50_s": g["makespan_s"].quantile(0.5),
                "makespan_p95_s": g["makespan_s"].quantile(0.95),
                "ttfs_mean_s": ttfs.mean() if len(ttfs) else math.nan,
                "ttfs_p95_s": ttfs.quantile(0.95) if len(ttfs) else math.nan,
                "http_429_mean": g["http_429"].mean(),
                "retries_mean": g["retries"].mean(),
                "p_any_failed": k_fail / n,
                "p_any_failed_lo": lo_f,
                "p_any_failed_hi": hi_f,
                "p_paused": float((g["status"] == "paused").mean()),
            }
        )
        try:
            bg = base.loc[(b, s, q, k)]
        except KeyError:
            bg = None
        if bg is not None:
            serial = bg.reset_index()
            row.update(paired_speedup(g, serial))
            p_serial = p_any_failed(serial)
            row["p_any_failed_serial"] = p_serial
            # the shared rule: a speedup over the runs that completed is shown plainly
            # only where runs do not fail more often than serial's + the budget
            row["fails_too_often"] = fails_too_often(k_fail / n, p_serial)
        rows.append(row)
    table = pd.DataFrame(rows)
    qoe = qoe_cell_columns(runs, _KEYS)  # the learner's metrics per cell (runner.qoe_report)
    return table.merge(qoe, on=_KEYS, how="left") if len(qoe) else table


def speedup_bound(sc: Scenario, concurrency: int = 10) -> dict[str, float]:
    """Upper bounds on pipelined speedup from mean latencies (no quota).

    ``S = A + k·T`` with clips one at a time (upstream's proposal arithmetic) and with
    clips ``t`` at a time (``S_t = A + ceil(k/t)·T``): the limit as N grows is
    ``(C+S)/S``; for the classroom's N it is ``N(C+S)/(C+N·S)`` with the serial S.
    """
    n = sc.outlines
    C = float(np.mean([sc.content_dist(i).mean for i in range(n)]))
    A = sc.actions.mean
    T = sc.tts.mean
    k = sc.speech_actions.mean
    S1 = A + k * T
    ks = sc.speech_actions.quantile((np.arange(1000) + 0.5) / 1000)  # E[ceil(k/t)]
    St = A + float(np.mean(np.ceil(ks / max(1, concurrency)))) * T
    return {
        "C_s": C,
        "A_s": A,
        "T_s": T,
        "k": k,
        "S_serial_s": S1,
        "S_parallel_s": St,
        "limit_serial_tts": (C + S1) / S1,
        "finite_n": n * (C + S1) / (C + n * St),
    }


def critical_path_speedup(sc: Scenario, concurrency: int) -> float:
    """Serial makespan over the critical path ``C + N·S_c`` (means; clips ``c`` at a time)."""
    return speedup_bound(sc, concurrency)["finite_n"]


def recommend(cells: pd.DataFrame, scenarios: dict[str, Scenario]) -> dict[str, Any]:
    """Apply :data:`RULE` to a cell table; returns the recommendation and its evidence."""
    rule = RULE
    sim = cells[
        (cells["backend"] == rule["backend"])
        & (cells["adaptive"] == "off")
        & (cells["tenants"] == 1)
    ]
    per: dict[str, Any] = {}
    for name, g in sim.groupby("scenario"):
        serial = g[g["mode"] == "serial"].set_index("quota")
        pip = g[g["mode"] == rule["mode"]]
        profiles = [
            q for q in sorted(pip["quota"].unique()) if q == 0 or q >= rule["min_quota_for_default"]
        ]
        table: list[dict[str, Any]] = []
        for c, gc in pip.groupby("concurrency"):
            gc = gc.set_index("quota")
            fails = {int(q): float(gc.loc[q, "p_any_failed"]) for q in profiles}
            base = {int(q): float(serial.loc[q, "p_any_failed"]) for q in profiles}
            admissible = all(not fails_too_often(fails[q], base[q]) for q in profiles)
            sp = [float(gc.loc[q, "speedup"]) for q in profiles]
            geo = float(np.exp(np.mean(np.log(sp)))) if all(x > 0 for x in sp) else math.nan
            excess = {q: fails[q] - base[q] for q in profiles if fails_too_often(fails[q], base[q])}
            blocked = max(excess, key=lambda q: excess[q]) if excess else None
            table.append(
                {
                    "concurrency": int(c),
                    "admissible": admissible,
                    "blocked_by": None if blocked is None else int(blocked),
                    "speedup_geomean": geo,
                    "p_any_failed": fails,
                    "p_any_failed_serial": base,
                }
            )
        adm = [t for t in table if t["admissible"] and not math.isnan(t["speedup_geomean"])]
        if adm:
            best = max(t["speedup_geomean"] for t in adm)
            rec = min(
                t["concurrency"]
                for t in adm
                if t["speedup_geomean"] >= (1 - rule["within_best"]) * best
            )
        else:
            best, rec = math.nan, 1
        at = pip[pip["concurrency"] == rec].set_index("quota")
        unl = at.loc[0] if 0 in at.index else None
        c3 = g[(g["concurrency"] == 3) & (g["quota"] == 0)].set_index("mode")
        sc = scenarios.get(str(name))
        bound = speedup_bound(sc, 3) if sc is not None else {}
        claim = {}
        for m in ("hybrid", "pipelined"):
            if m in c3.index:
                lo, hi = float(c3.loc[m, "speedup_lo"]), float(c3.loc[m, "speedup_hi"])
                verdict = (
                    "cannot be judged (runs fail too often)"
                    if bool(c3.loc[m, "fails_too_often"])
                    else "holds"
                    if hi >= 2.0 and lo <= 3.0
                    else "exceeds it"
                    if lo > 3.0
                    else "falls short"
                )
                claim[m] = {
                    "counts": not verdict.startswith("cannot"),
                    "speedup": float(c3.loc[m, "speedup"]),
                    "lo": lo,
                    "hi": hi,
                    "verdict": verdict,
                }
        by_quota = {}
        for q, gq in pip.groupby("quota"):
            sq = float(serial.loc[q, "p_any_failed"]) if q in serial.index else math.nan
            ok = gq[[not fails_too_often(p, sq) for p in gq["p_any_failed"]]]
            ok = ok[ok["speedup"].notna()]
            if ok.empty:
                by_quota[int(q)] = {"concurrency": 1, "speedup": 1.0}
                continue
            top = float(ok["speedup"].max())
            pick = (
                ok[ok["speedup"] >= (1 - rule["within_best"]) * top]
                .sort_values("concurrency")
                .iloc[0]
            )
            by_quota[int(q)] = {
                "concurrency": int(pick["concurrency"]),
                "speedup": float(pick["speedup"]),
                "lo": float(pick["speedup_lo"]),
                "hi": float(pick["speedup_hi"]),
            }
        q1 = pip[(pip["quota"] == 1) & (pip["concurrency"] == rec)]
        s1 = serial.loc[1, "p_any_failed"] if 1 in serial.index else math.nan
        per[str(name)] = {
            "recommended": rec,
            "best_admissible_speedup": best,
            "speedup_unlimited": float(unl["speedup"]) if unl is not None else math.nan,
            "speedup_unlimited_ci": [float(unl["speedup_lo"]), float(unl["speedup_hi"])]
            if unl is not None
            else [math.nan, math.nan],
            "pairs": int(unl["pairs"]) if unl is not None else 0,
            "profiles": [int(q) for q in profiles],
            "table": table,
            "claim_c3": claim,
            "bound": bound,
            "by_quota": by_quota,
            "one_in_flight": {
                "p_any_failed": float(q1["p_any_failed"].iloc[0]) if len(q1) else math.nan,
                "p_any_failed_serial": float(s1),
            },
        }
    today = overall_for_today(per, scenarios)
    return {"rule": rule, **today, "scenarios": per, "qoe": recommend_qoe(cells)}


def adaptive_verdict(cells: pd.DataFrame) -> dict[str, Any]:
    """For each adaptive policy in the cells (pipelined, one tenant, model): at each *c*, does
    it dominate "off" (the serial default) on every quota — P(any failed scene) at most
    serial's + the failure budget, and no slower than serial (2% slack) — and how much of
    fixed *c*'s speedup does it keep where fixed *c* is admissible?"""
    sim = cells[(cells["backend"] == "sim") & (cells["tenants"] == 1)]
    pip = sim[sim["mode"] == "pipelined"]
    serial = sim[sim["mode"] == "serial"]
    out: dict[str, Any] = {"policies": {}}
    for pol in sorted(set(pip["adaptive"]) - {"off"}):
        for name, g in pip.groupby("scenario"):
            ser = serial[serial["scenario"] == name].set_index("quota")
            rows = []
            for c, gc in g[g["adaptive"] == pol].groupby("concurrency"):
                gc = gc.set_index("quota")
                fixed = g[(g["adaptive"] == "off") & (g["concurrency"] == c)].set_index("quota")
                per_q: dict[int, Any] = {}
                dominates = True
                kept_all = []
                for q in gc.index:
                    pf = float(gc.loc[q, "p_any_failed"])
                    sf = float(ser.loc[q, "p_any_failed"]) if q in ser.index else math.nan
                    sp = float(gc.loc[q, "speedup"])
                    fixed_ok = q in fixed.index and not fails_too_often(
                        float(fixed.loc[q, "p_any_failed"]), sf
                    )
                    fsp = float(fixed.loc[q, "speedup"]) if q in fixed.index else math.nan
                    kept = sp / fsp if fixed_ok and fsp > 0 and not math.isnan(sp) else math.nan
                    if not math.isnan(kept):
                        kept_all.append(kept)
                    safe = not fails_too_often(pf, sf)
                    faster = not math.isnan(sp) and sp >= 0.98
                    dominates = dominates and safe and faster
                    per_q[int(q)] = {
                        "p_any_failed": pf,
                        "p_any_failed_serial": sf,
                        "speedup": sp,
                        "fixed_speedup": fsp,
                        "fixed_admissible": bool(fixed_ok),
                        "kept": kept,
                    }
                sps = [v["speedup"] for v in per_q.values()]
                geo = (
                    float(np.exp(np.mean(np.log(sps))))
                    if sps and all(x > 0 for x in sps)
                    else math.nan
                )
                rows.append(
                    {
                        "concurrency": int(c),
                        "dominates_off": bool(dominates),
                        "speedup_geomean": geo,
                        "min_kept": min(kept_all) if kept_all else math.nan,
                        "per_quota": per_q,
                    }
                )
            out["policies"].setdefault(pol, {})[str(name)] = rows
    # an adaptive default: per policy, the smallest c >= 2 that dominates off in every scenario
    # and whose geometric-mean speedup is within 5% of the best such c (scenario by scenario)
    for pol, per_sc in out["policies"].items():
        ok_c = None
        for c in sorted({r["concurrency"] for rows in per_sc.values() for r in rows}):
            if c < 2:
                continue
            good = True
            for rows in per_sc.values():
                by_c = {r["concurrency"]: r for r in rows}
                dom = [r for r in rows if r["dominates_off"] and r["concurrency"] >= 2]
                best = max((r["speedup_geomean"] for r in dom), default=math.nan)
                r = by_c.get(c)
                if (
                    r is None
                    or not r["dominates_off"]
                    or not (r["speedup_geomean"] >= (1 - RULE["within_best"]) * best)
                ):
                    good = False
            if good:
                ok_c = c
                break
        out.setdefault("defaults", {})[pol] = ok_c
    return out


# -- figures ----------------------------------------------------------------------------
def _concurrency_axis(ax: Any) -> None:
    """The x axis every figure shares: c = 1..10."""
    ax.set_xlabel("PARALLEL_SCENE_CONCURRENCY (c)")
    ax.set_xticks(range(1, 11))


def _legend_right(ax: Any, title: str) -> None:
    """A small legend outside the axes, to the right (it never covers a curve)."""
    ax.legend(
        title=title, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )


def _finish_two_rows(axes: Any, titles: list[str], bottom_label: str, legend_title: str) -> None:
    """Titles, axis labels, ticks, grid and legend of a speedup-over-failures grid."""
    for j, title in enumerate(titles):
        axes[0][j].set_title(title)
        _concurrency_axis(axes[1][j])
        for ax in (axes[0][j], axes[1][j]):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speedup over serial (paired)")
    axes[1][0].set_ylabel(bottom_label)
    _legend_right(axes[0][-1], legend_title)


HOLLOW_CAPTION = (
    "hollow marker: P(any failed scene) above serial's + "
    f"{FAILURE_BUDGET_PP:g} pp (P(failed) beside it), a value over the few runs that "
    "completed, not one a user gets; missing point: no run completed"
)


def _fails(d: pd.DataFrame) -> np.ndarray[Any, Any]:
    """The shared rule per row (:func:`runner.counts.fails_too_often`), from the cell table."""
    if "fails_too_often" in d.columns:
        return np.array([bool(x) if x == x else True for x in d["fails_too_often"]], dtype=bool)
    return np.ones(len(d), dtype=bool)


def plot_marked(
    ax: Any,
    x: Any,
    y: Any,
    fails: Any,
    p_failed: Any,
    *,
    color: Any,
    marker: str = "o",
    label: str | None = None,
    yerr: Any = None,
) -> bool:
    """A curve whose points fail too often are hollow, with P(failed) written beside them
    (filled points: the runs count). Returns whether any point was hollow."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    bad = np.asarray(fails, dtype=bool)
    p = np.asarray(p_failed, dtype=float)
    ax.plot(x, y, color=color, lw=1.2)
    if yerr is not None:
        e = np.nan_to_num(np.asarray(yerr, dtype=float))
        ax.errorbar(x[~bad], y[~bad], yerr=e[:, ~bad], fmt="none", ecolor=color, capsize=2, lw=1)
    ax.plot(x[~bad], y[~bad], ls="none", marker=marker, ms=4, color=color)
    ax.plot(x[bad], y[bad], ls="none", marker=marker, ms=5, mfc="white", mec=color)
    for xi, yi, pi in zip(x[bad], y[bad], p[bad], strict=True):
        if math.isfinite(yi) and math.isfinite(pi):
            ax.annotate(
                f"{100 * pi:.0f}%",
                (xi, yi),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=6,
                color=color,
            )
    ax.plot([], [], color=color, marker=marker, ms=4, lw=1.2, label=label)  # legend entry
    return bool((bad & np.isfinite(y)).any())


def _caption(fig: Any) -> None:
    """What a hollow or a missing point means, under the figure."""
    fig.text(0.5, -0.01, HOLLOW_CAPTION, ha="center", va="top", fontsize=8, wrap=True)


def _hollow_legend(ax: Any) -> None:
    ax.plot(
        [], [], ls="none", marker="o", ms=5, mfc="white", mec="grey", label="P(failed) too high"
    )


def _quota_label(q: int) -> str:
    return "unlimited" if q == 0 else f"{q} in flight"


def render_figures(cells: pd.DataFrame, scenarios: dict[str, Scenario], figdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    every = cells[cells["backend"] == "sim"]
    if every.empty:
        every = cells
    sim = every[(every["adaptive"] == "off") & (every["tenants"] == 1)]
    modes = [m for m in ("hybrid", "pipelined") if m in set(sim["mode"])]
    quotas = sorted(sim["quota"].unique(), key=lambda q: (q == 0, q))
    colors = {q: plt.get_cmap("viridis")(i / max(1, len(quotas) - 1)) for i, q in enumerate(quotas)}
    # identical curves would hide each other: dodge them a little along x, vary the marker
    dodge = {q: 0.08 * (i - (len(quotas) - 1) / 2) for i, q in enumerate(quotas)}
    markers = {q: "osD^vP*X"[i % 8] for i, q in enumerate(quotas)}

    def save(fig: Any, stem: str) -> None:
        for ext in ("png", "svg"):
            p = figdir / f"{stem}.{ext}"
            fig.savefig(p, dpi=120, bbox_inches="tight")
            out.append(p)
        plt.close(fig)

    for name, g in sim.groupby("scenario"):
        slug = str(name)
        sc = scenarios.get(slug)
        # speedup
        fig, axes = plt.subplots(
            1, len(modes), figsize=(5.2 * len(modes), 4.2), sharey=True, squeeze=False
        )
        hollow = False
        for ax, m in zip(axes[0], modes, strict=True):
            for q in quotas:
                d = g[(g["mode"] == m) & (g["quota"] == q)].sort_values("concurrency")
                if d.empty:
                    continue
                err = np.vstack([d["speedup"] - d["speedup_lo"], d["speedup_hi"] - d["speedup"]])
                hollow |= plot_marked(
                    ax,
                    d["concurrency"] + dodge[q],
                    d["speedup"],
                    _fails(d),
                    d["p_any_failed"],
                    color=colors[q],
                    marker=markers[q],
                    label=_quota_label(q),
                    yerr=err,
                )
            if sc is not None:
                cs = list(range(2, 11))
                ax.plot(
                    [1, *cs],
                    [1.0] + [critical_path_speedup(sc, c) for c in cs],
                    ls="--",
                    color="grey",
                    lw=1,
                    label="critical path N(C+S)/(C+N·S_c), means",
                )
            ax.axhline(1.0, color="black", lw=0.6)
            ax.set_title(f"{m}")
            _concurrency_axis(ax)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("speedup over serial (paired, 95% CI)")
        if hollow:
            _hollow_legend(axes[0][-1])
        _legend_right(axes[0][-1], "key quota")
        fig.suptitle(
            f"Speedup vs concurrency — scenario {slug} (model; runs that generated every "
            f"scene, paired)"
        )
        _caption(fig)
        save(fig, f"{slug}-speedup")
        # time to first scene
        fig, axes = plt.subplots(
            1, len(modes), figsize=(5.2 * len(modes), 4.0), sharey=True, squeeze=False
        )
        ser = g[g["mode"] == "serial"]
        hollow = False
        for ax, m in zip(axes[0], modes, strict=True):
            for q in quotas:
                d = g[(g["mode"] == m) & (g["quota"] == q)].sort_values("concurrency")
                if not d.empty:
                    hollow |= plot_marked(
                        ax,
                        d["concurrency"] + dodge[q],
                        d["ttfs_mean_s"],
                        _fails(d),
                        d["p_any_failed"],
                        color=colors[q],
                        marker=markers[q],
                        label=_quota_label(q),
                    )
            if not ser.empty:
                ax.axhline(
                    float(ser["ttfs_mean_s"].mean()), ls=":", color="black", lw=1, label="serial"
                )
            ax.set_title(m)
            _concurrency_axis(ax)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean time to first scene (model s;\nruns that added a scene)")
        if hollow:
            _hollow_legend(axes[0][-1])
        _legend_right(axes[0][-1], "key quota")
        fig.suptitle(f"Time to first scene — scenario {slug} (model)")
        _caption(fig)
        save(fig, f"{slug}-ttfs")
        # 429s and failures
        fig, axes = plt.subplots(
            2, len(modes), figsize=(5.2 * len(modes), 7.0), sharex=True, squeeze=False
        )
        for j, m in enumerate(modes):
            for q in quotas:
                d = g[(g["mode"] == m) & (g["quota"] == q)].sort_values("concurrency")
                if d.empty:
                    continue
                axes[0][j].plot(
                    d["concurrency"] + dodge[q],
                    d["http_429_mean"],
                    marker=markers[q],
                    ms=4,
                    color=colors[q],
                    label=_quota_label(q),
                )
                axes[1][j].plot(
                    d["concurrency"] + dodge[q],
                    100 * d["p_any_failed"],
                    marker=markers[q],
                    ms=4,
                    color=colors[q],
                    label=_quota_label(q),
                )
            axes[0][j].set_title(m)
            axes[0][j].set_ylabel("HTTP 429 per classroom")
            axes[1][j].set_ylabel("P(any failed scene) (%)")
            _concurrency_axis(axes[1][j])
            for ax in (axes[0][j], axes[1][j]):
                ax.grid(alpha=0.3)
        _legend_right(axes[0][-1], "key quota")
        fig.suptitle(f"429s and failed scenes vs concurrency — scenario {slug} (model)")
        save(fig, f"{slug}-failures")
    pols = sorted(
        set(every["adaptive"]),
        key=lambda a: (
            ("off", "halve", "aimd", "gate").index(a)
            if a in ("off", "halve", "aimd", "gate")
            else 9
        ),
    )
    pip_all = every[every["mode"] == "pipelined"]
    for name, g in pip_all.groupby("scenario"):
        slug = str(name)
        one = g[g["tenants"] == 1]
        if len(pols) > 1 and not one.empty:
            fig, axes = plt.subplots(
                2,
                len(pols),
                figsize=(4.2 * len(pols), 6.6),
                sharex=True,
                sharey="row",
                squeeze=False,
            )
            hollow = False
            for j, pol in enumerate(pols):
                for q in quotas:
                    d = one[(one["adaptive"] == pol) & (one["quota"] == q)].sort_values(
                        "concurrency"
                    )
                    if d.empty:
                        continue
                    x = d["concurrency"] + dodge[q]
                    hollow |= plot_marked(
                        axes[0][j],
                        x,
                        d["speedup"],
                        _fails(d),
                        d["p_any_failed"],
                        color=colors[q],
                        marker=markers[q],
                        label=_quota_label(q),
                    )
                    axes[1][j].plot(
                        x,
                        100 * d["p_any_failed"],
                        marker=markers[q],
                        ms=4,
                        color=colors[q],
                        label=_quota_label(q),
                    )
            if hollow:
                _hollow_legend(axes[0][-1])
            _finish_two_rows(
                axes,
                [f"pipelined, adaptive = {p}" for p in pols],
                "P(any failed scene) (%)",
                "key quota",
            )
            fig.suptitle(f"Fixed vs adaptive concurrency — scenario {slug} (model)")
            _caption(fig)
            save(fig, f"{slug}-adaptive")
        ks = sorted(set(g["tenants"]))
        if len(ks) > 1:
            pcol = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(pols)}
            for q in quotas:
                gq = g[g["quota"] == q]
                if gq.empty:
                    continue
                fig, axes = plt.subplots(
                    2,
                    len(ks),
                    figsize=(4.2 * len(ks), 6.6),
                    sharex=True,
                    sharey="row",
                    squeeze=False,
                )
                hollow = False
                for j, k in enumerate(ks):
                    for i, pol in enumerate(pols):
                        d = gq[(gq["tenants"] == k) & (gq["adaptive"] == pol)].sort_values(
                            "concurrency"
                        )
                        if d.empty:
                            continue
                        x = d["concurrency"] + 0.08 * (i - (len(pols) - 1) / 2)
                        hollow |= plot_marked(
                            axes[0][j],
                            x,
                            d["speedup"],
                            _fails(d),
                            d["p_any_failed"],
                            color=pcol[pol],
                            label=pol,
                        )
                        axes[1][j].plot(
                            x, 100 * d["p_any_failed"], marker="o", ms=4, color=pcol[pol], label=pol
                        )
                if hollow:
                    _hollow_legend(axes[0][-1])
                _finish_two_rows(
                    axes,
                    [f"{k} classroom(s) on one key" for k in ks],
                    "P(any failed scene) (%), per classroom",
                    "adaptive",
                )
                fig.suptitle(
                    f"Shared key, {_quota_label(int(q))} — scenario {slug} (model, pipelined)"
                )
                _caption(fig)
                save(fig, f"{slug}-tenants-q{int(q)}")
    out += render_qoe_figures(cells, figdir)
    return out


# -- report -----------------------------------------------------------------------------
def _fmt(x: float, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def folder_provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """What a results folder models and which scenebench made it (from its metadata; folders
    written before provenance was recorded: their git commit and version, today's upstream
    lookup)."""
    if isinstance(meta.get("provenance"), dict):
        return dict(meta["provenance"])
    prov = provenance(list(meta["spec"]["scenarios"]))
    prov["scenebench_commit"] = meta.get("git_commit", "unknown")
    prov["scenebench_version"] = meta.get("versions", {}).get("scenebench", "unknown")
    return prov


def _qkey(q: Any) -> tuple[bool, Any]:
    return (q == 0, q)


def _speedup_cell(x: Any) -> str:
    """A speedup for a table: plain only when the cell's runs count (the shared rule)."""
    sp = x.get("speedup", math.nan)
    ci = f"{_fmt(x.get('speedup_lo', math.nan))}–{_fmt(x.get('speedup_hi', math.nan))}"
    if sp is None or (isinstance(sp, float) and math.isnan(sp)):
        return "– (no run completed)" if x.get("pairs", 0) == 0 else "–"
    flag = x.get("fails_too_often")
    if flag is None or flag != flag or bool(flag):
        return f"({_fmt(sp)}, {ci})†"
    return f"{_fmt(sp)} ({ci})"


def evidence_table(cells: pd.DataFrame) -> list[str]:
    """Every cell of the model backend (every quota, mode, c, policy and tenant count of the
    sweep), or every cell when there is no model backend; says what it leaves out."""
    has_sim = bool((cells["backend"] == "sim").any())
    show = cells[cells["backend"] == "sim"] if has_sim else cells
    left = len(cells) - len(show)
    extra = [k for k in ("adaptive", "tenants") if k in show.columns and show[k].nunique() > 1]
    head = ["scenario", "quota", *extra, "mode", "c", "runs", "makespan mean (s)", "p95 (s)"]
    head += ["TTFS (s)", "429/run", "P(failed)", "speedup (95% CI)"]
    qs = ", ".join(_quota_label(int(q)) for q in sorted(show["quota"].unique(), key=_qkey))
    out = [
        f"{len(show)} cells: every quota ({qs}), mode and *c* of the "
        + ("model backend" if has_sim else "sweep")
        + (
            f"; the {left} cells of the real backend are in `cells.csv` (see the section "
            "Real pipeline vs model)."
            if left
            else "."
        )
        + f" † P(any failed scene) above serial's + {FAILURE_BUDGET_PP:g} pp: the speedup is "
        "over the few runs that completed with every scene, not one a user gets.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for _, x in show.iterrows():
        ex = [str(x[k]) for k in extra]
        out += [
            "| "
            + " | ".join(
                [
                    str(x["scenario"]),
                    _quota_label(int(x["quota"])),
                    *ex,
                    str(x["mode"]),
                    str(x["concurrency"]),
                    str(x["runs"]),
                    _fmt(x["makespan_mean_s"], 1),
                    _fmt(x["makespan_p95_s"], 1),
                    _fmt(x["ttfs_mean_s"], 1),
                    _fmt(x["http_429_mean"], 1),
                    f"{_fmt(100 * x['p_any_failed'], 1)}%",
                    _speedup_cell(x),
                ]
            )
            + " |"
        ]
    return out


def render_report(
    d: Path, cells: pd.DataFrame, rec: dict[str, Any], meta: dict[str, Any], figures: list[Path]
) -> str:
    spec = meta["spec"]
    prov = rec.get("provenance") or folder_provenance(meta)
    lines = [f"# scenebench report — {d.name}", ""]
    lines += [
        f"{provenance_line(prov)}.",
        "",
        f"Created {meta.get('created', '?')} from commit `{meta.get('git_commit', '?')}` "
        f"by `{' '.join(meta.get('argv', []))}`.",
        "",
    ]
    lines += ["## Recommendation", ""]
    lines += [
        f"**Default `PARALLEL_SCENE_CONCURRENCY` = {rec['recommended']}** "
        f"(for the merged pipelined design, under the upstream profile "
        f"`{rec.get('upstream', '?')}`: the client rules OpenMAIC runs"
        f"{' today' if rec.get('upstream') == 'pr788' else ''}).",
        "",
    ]
    r = rec["rule"]
    lines += [
        f"Rule: for each scenario, *c* is admissible when, for every quota profile that "
        f"allows ≥ {r['min_quota_for_default']} requests in flight (unlimited included), "
        f"P(any failed scene) at *c* is at most serial's + {r['failure_budget_pp']:g} "
        f"percentage point; the recommendation is the smallest admissible *c* whose "
        f"speedup (geometric mean over those profiles) is within "
        f"{100 * r['within_best']:g}% of the best admissible one; across scenarios the "
        f"smallest recommendation (of the scenarios under that profile). Measured on the "
        f"{r['backend']} backend.",
        "",
    ]
    for name, v in rec["scenarios"].items():
        ci = v["speedup_unlimited_ci"]
        lines += [f"### Scenario `{name}`", ""]
        lines += [
            f"- recommended *c* = **{v['recommended']}**; expected speedup with an "
            f"unlimited key {_fmt(v['speedup_unlimited'])}× (95% CI {_fmt(ci[0])}–"
            f"{_fmt(ci[1])}, {v['pairs']} paired runs).",
            f"- profiles checked: {', '.join(_quota_label(q) for q in v['profiles'])}.",
        ]
        adm = [str(t["concurrency"]) for t in v["table"] if t["admissible"]]
        lines += [
            f"- admissible *c*: {', '.join(adm) or 'none'}; best admissible geometric-"
            f"mean speedup {_fmt(v['best_admissible_speedup'])}×."
        ]
        blocked = [t for t in v["table"] if not t["admissible"]]
        if blocked:
            lines += [
                "- not admissible: "
                + "; ".join(
                    f"*c* = {t['concurrency']} (P(any failed) "
                    f"{_fmt(100 * t['p_any_failed'][t['blocked_by']], 1)}% with "
                    f"{_quota_label(t['blocked_by'])} vs "
                    f"{_fmt(100 * t['p_any_failed_serial'][t['blocked_by']], 1)}% serial)"
                    for t in blocked[:4]
                )
                + ("; and more" if len(blocked) > 4 else "")
                + ". In pipelined "
                "mode the actions call of scene *i* needs a slot beside *c* content calls on the "
                "same LLM key (a key needs *c* + 1), and within-scene TTS at *c* needs *c* TTS "
                "slots."
            ]
        o = v["one_in_flight"]
        if math.isnan(o["p_any_failed"]):
            lines += ["- keys allowing 1 request in flight: not in this sweep (`--quotas 1,...`)."]
        else:
            lines += [
                f"- keys allowing 1 request in flight: P(any failed scene) "
                f"{_fmt(100 * o['p_any_failed'], 1)}% at *c* = {v['recommended']} vs "
                f"{_fmt(100 * o['p_any_failed_serial'], 1)}% serial — no fixed *c* > 1 is "
                "safe for them (see the failures figure)."
                if v["recommended"] > 1
                else "- keys allowing 1 request in flight: serial (the recommendation) is "
                "unchanged for them."
            ]
        lines += ["- if you know your keys' in-flight limit (same rule, that profile alone):"]
        for q, bq in sorted(v["by_quota"].items(), key=lambda kv: (kv[0] == 0, kv[0])):
            ci_q = f" (95% CI {_fmt(bq['lo'])}–{_fmt(bq['hi'])})" if "lo" in bq else ""
            lines += [
                f"  - {_quota_label(q)}: *c* = {bq['concurrency']}, speedup "
                f"{_fmt(bq['speedup'])}×{ci_q}"
            ]
        b = v["bound"]
        if b:
            lines += [
                f"- upstream's claim '≈2–3× at concurrency 3': the bound from mean "
                f"latencies is (C+A+k·T)/(A+k·T) = ({_fmt(b['C_s'], 1)} + "
                f"{_fmt(b['S_serial_s'], 1)})/{_fmt(b['S_serial_s'], 1)} = "
                f"{_fmt(b['limit_serial_tts'])}× as N grows, "
                f"{_fmt(b['finite_n'])}× for this N with clips 3 at a time."
            ]
            for m, cl in v["claim_c3"].items():
                sp = f"{_fmt(cl['speedup'])}× (95% CI {_fmt(cl['lo'])}–{_fmt(cl['hi'])})"
                if not cl.get("counts", True):
                    sp = f"({sp}, over the few runs that completed)†"
                lines += [f"  - {m} at c = 3, unlimited key: {sp}: the claim **{cl['verdict']}**."]
        lines += [""]
    failed_path = d / "failed_cells.json"
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    if failed:
        lines += [
            "## Failed cells",
            "",
            f"{len(failed)} cell(s) failed and are not in the tables; "
            f"`scenebench sweep --resume {d}` runs them again.",
            "",
        ]
        lines += [f"- `{cid}`: {reason}" for cid, reason in sorted(failed.items())] + [""]
    ad = rec.get("adaptive", {}).get("policies", {})
    defaults = rec.get("adaptive", {}).get("defaults", {})
    if defaults:
        picks = {p: c for p, c in defaults.items() if c is not None}
        lines.insert(
            lines.index("## Recommendation") + 4,
            "**With an adaptive limiter**: "
            + (
                "; ".join(
                    f"`{p}` on at c = **{c}** dominates off on every quota profile"
                    for p, c in sorted(picks.items())
                )
                if picks
                else "no adaptive policy in this sweep dominates off at any c >= 2"
            )
            + " (section Adaptive concurrency).\n",
        )
    if ad:
        lines += [
            "## Adaptive concurrency",
            "",
            "A policy *dominates off* at *c* when, on every quota profile, P(any failed "
            "scene) is at most serial's + "
            f"{RULE['failure_budget_pp']:g} pp and it is no slower than serial (2% "
            "slack); *kept* is its speedup over fixed *c*'s, where fixed *c* is "
            "admissible (pipelined, one classroom per key, model).",
            "",
        ]
        for pol, per_sc in ad.items():
            for name, rows in per_sc.items():
                dom = [r["concurrency"] for r in rows if r["dominates_off"]]
                lines += [
                    f"- `{pol}` on `{name}`: dominates off at c = "
                    f"{', '.join(map(str, dom)) if dom else 'none'}."
                ]
                for r in rows:
                    if r["concurrency"] != 3:
                        continue
                    parts = []
                    for q, v in sorted(r["per_quota"].items(), key=lambda kv: (kv[0] == 0, kv[0])):
                        kept = "" if math.isnan(v["kept"]) else f", keeps {100 * v['kept']:.0f}%"
                        bad = fails_too_often(v["p_any_failed"], v["p_any_failed_serial"])
                        parts.append(
                            f"{_quota_label(q)}: P(failed) "
                            f"{100 * v['p_any_failed']:.1f}% vs serial "
                            f"{100 * v['p_any_failed_serial']:.1f}%, "
                            + (f"({_fmt(v['speedup'])}×)†" if bad else f"{_fmt(v['speedup'])}×")
                            + kept
                        )
                    lines += ["  - at c = 3: " + "; ".join(parts) + "."]
        lines += [""]
    lines += ["## Figures", ""]
    lines += [f"In every figure: {HOLLOW_CAPTION}.", ""]
    for p in figures:
        if p.suffix == ".png":
            lines += [f"![{p.stem}](figures/{p.name})", ""]
    lines += ["## Evidence: cells", ""]
    reps = cells.groupby("backend")["runs"].max().to_dict()
    lines += [
        "Replications per cell: "
        + ", ".join(f"{k}: {v}" for k, v in reps.items())
        + f"; seed {spec['seed']} (the same run ids in every cell: speedups are paired). "
        "Speedup = mean serial makespan / mean cell makespan over runs that completed "
        "with every scene in both, 95% bootstrap CI.",
        "",
    ]
    lines += evidence_table(cells)
    lines += ["", "All cells: `cells.csv`; all runs: `runs.parquet` / `runs.csv`.", ""]
    if set(cells["backend"]) >= {"sim", "real"}:
        both = cells.pivot_table(
            index=["scenario", "quota", "mode", "concurrency"],
            columns="backend",
            values="makespan_mean_s",
        )
        lines += [
            "## Real pipeline vs model in this sweep",
            "",
            f"{len(both.dropna())} cells ran on both backends. The real backend ran "
            f"{reps.get('real', 0)} runs per cell with the same seeds as the model's "
            "first runs; see `scenebench validate` for the wall-clock check.",
            "",
        ]
    if rec.get("qoe", {}).get("scenarios"):
        lines += [qoe_section(rec["qoe"])]
    return "\n".join(lines)


def render_results(d: Path) -> dict[str, Any]:
    """(Re-)render cells.csv, figures, REPORT.md and recommendation.json from runs.parquet."""
    from .results import load_runs, write_atomic, write_json_atomic

    runs, meta = load_runs(d)
    runs, preset_runs = split_presets(runs)  # provider presets: their own section
    cells = cell_table(runs)
    write_atomic(d / "cells.csv", lambda p: cells.to_csv(p, index=False))
    scenarios = {m["name"]: scenario_from_mapping(m) for m in meta["spec"]["scenarios"]}
    rec = recommend(cells, scenarios)
    rec["adaptive"] = adaptive_verdict(cells)
    rec["provenance"] = folder_provenance(meta)
    figures = render_figures(cells, scenarios, d / "figures")
    report = render_report(d, cells, rec, meta, figures)
    extra = render_profile_section(cells, rec, scenarios)
    rec["presets"] = recommend_presets(preset_cells(preset_runs, cell_table), rec["rule"])
    rec["shared_capacity"] = shared_verdicts(cells, scenarios)
    extra += render_presets_section(rec["presets"], rec["shared_capacity"])
    server = d / "SERVER.md"  # the server path's section, written by `scenebench capacity`
    if server.is_file():
        extra += ["", server.read_text(encoding="utf-8").rstrip("\n")]
    if extra:
        report = report.rstrip("\n") + "\n\n" + "\n".join(extra).lstrip("\n") + "\n"
    write_atomic(d / "REPORT.md", lambda p: p.write_text(report))
    write_json_atomic(d / "recommendation.json", rec)
    return rec
