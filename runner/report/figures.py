"""The figures of a results folder, one function per figure, from the cell table.

Per scenario (model; adaptive off, one classroom per key): speedup vs *c*
(:func:`speedup_figure`), time to first scene (:func:`ttfs_figure`), 429s and failed
scenes (:func:`failures_figure`); where the sweep ran them, fixed vs adaptive concurrency
(:func:`adaptive_figure`) and several classrooms on one key (:func:`tenants_figure`); and
what the learner feels (:func:`qoe_figure`). :func:`render_figures` draws them all.

In every figure a point whose cell fails too often (:func:`runner.store.counts.fails_too_often`)
is hollow with its P(any failed scene) beside it (:func:`plot_marked`, :data:`HOLLOW_CAPTION`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.qoe import QoERule
from sim.scenario import Scenario

from ..store.counts import FAILURE_BUDGET_PP
from .labels import quota_key, quota_label
from .qoe_report import QOE_RULE, qoe_lines
from .recommendation import critical_path_speedup

__all__ = [
    "HOLLOW_CAPTION",
    "Canvas",
    "adaptive_figure",
    "failures_figure",
    "plot_marked",
    "qoe_figure",
    "render_figures",
    "speedup_figure",
    "tenants_figure",
    "ttfs_figure",
]

HOLLOW_CAPTION = (
    "hollow marker: P(any failed scene) above serial's + "
    f"{FAILURE_BUDGET_PP:g} pp (P(failed) beside it), a value over the few runs that "
    "completed, not one a user gets; missing point: no run completed"
)
_POLICY_ORDER = ("off", "halve", "aimd", "gate")


# -- shared style ---------------------------------------------------------------------------
def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Canvas:
    """Where figures go, and how each quota profile looks: a colour, a marker and a small
    dodge along x (identical curves would hide each other)."""

    figdir: Path
    quotas: list[Any]
    colors: dict[Any, Any]
    dodge: dict[Any, float]
    markers: dict[Any, str]
    out: list[Path] = field(default_factory=list)

    @classmethod
    def for_quotas(cls, figdir: Path, quotas: list[Any]) -> Canvas:
        cmap = _pyplot().get_cmap("viridis")
        n = len(quotas)
        return cls(
            figdir,
            quotas,
            colors={q: cmap(i / max(1, n - 1)) for i, q in enumerate(quotas)},
            dodge={q: 0.08 * (i - (n - 1) / 2) for i, q in enumerate(quotas)},
            markers={q: "osD^vP*X"[i % 8] for i, q in enumerate(quotas)},
        )

    def save(self, fig: Any, stem: str, *, dpi: int = 120, tight: bool = True) -> None:
        """PNG and SVG (a tight box unless told), then close the figure. Both are the same
        bytes for the same data: no date in the SVG, and a fixed salt for its element ids."""
        opts: dict[str, Any] = {"dpi": dpi, "bbox_inches": "tight"} if tight else {"dpi": dpi}
        for ext in ("png", "svg"):
            p = self.figdir / f"{stem}.{ext}"
            meta = {"metadata": {"Date": None}} if ext == "svg" else {}
            with _pyplot().rc_context({"svg.hashsalt": "scenebench"}):
                fig.savefig(p, **opts, **meta)
            self.out.append(p)
        _pyplot().close(fig)


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


def _caption(fig: Any) -> None:
    """What a hollow or a missing point means, under the figure."""
    fig.text(0.5, -0.01, HOLLOW_CAPTION, ha="center", va="top", fontsize=8, wrap=True)


def _hollow_legend(ax: Any) -> None:
    ax.plot(
        [], [], ls="none", marker="o", ms=5, mfc="white", mec="grey", label="P(failed) too high"
    )


def _fails(d: pd.DataFrame) -> np.ndarray[Any, Any]:
    """The shared rule per row (:func:`runner.store.counts.fails_too_often`), from the cell
    table."""
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


def _quota_curve(ax: Any, cv: Canvas, q: Any, d: pd.DataFrame, y: str, err: bool = False) -> bool:
    """One quota's curve of column ``y`` against *c*, marked by the shared rule (with the
    speedup's 95% interval as error bars when ``err``)."""
    yerr = (
        np.vstack([d["speedup"] - d["speedup_lo"], d["speedup_hi"] - d["speedup"]]) if err else None
    )
    return plot_marked(
        ax,
        d["concurrency"] + cv.dodge[q],
        d[y],
        _fails(d),
        d["p_any_failed"],
        color=cv.colors[q],
        marker=cv.markers[q],
        label=quota_label(q),
        yerr=yerr,
    )


def _plain_curve(ax: Any, cv: Canvas, q: Any, d: pd.DataFrame, y: Any) -> None:
    """One quota's curve of values ``y`` against *c*, every point filled."""
    ax.plot(
        d["concurrency"] + cv.dodge[q],
        y,
        marker=cv.markers[q],
        ms=4,
        color=cv.colors[q],
        label=quota_label(q),
    )


def _modes_grid(modes: list[str], height: float, **kw: Any) -> tuple[Any, Any]:
    return _pyplot().subplots(  # type: ignore[no-any-return]
        1, len(modes), figsize=(5.2 * len(modes), height), squeeze=False, **kw
    )


def _at(g: pd.DataFrame, mode: str, q: Any) -> pd.DataFrame:
    return g[(g["mode"] == mode) & (g["quota"] == q)].sort_values("concurrency")


# -- one function per figure ----------------------------------------------------------------
def _critical_path(ax: Any, sc: Scenario) -> None:
    cs = list(range(2, 11))
    ax.plot(
        [1, *cs],
        [1.0] + [critical_path_speedup(sc, c) for c in cs],
        ls="--",
        color="grey",
        lw=1,
        label="critical path N(C+S)/(C+N·S_c), means",
    )


def speedup_figure(
    cv: Canvas, g: pd.DataFrame, slug: str, sc: Scenario | None, modes: list[str]
) -> None:
    """``<scenario>-speedup``: paired speedup vs *c* per quota, one panel per mode, with the
    critical-path bound from mean latencies."""
    fig, axes = _modes_grid(modes, 4.2, sharey=True)
    hollow = False
    for ax, m in zip(axes[0], modes, strict=True):
        for q in cv.quotas:
            d = _at(g, m, q)
            if not d.empty:
                hollow |= _quota_curve(ax, cv, q, d, "speedup", err=True)
        if sc is not None:
            _critical_path(ax, sc)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_title(f"{m}")
        _concurrency_axis(ax)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speedup over serial (paired, 95% CI)")
    if hollow:
        _hollow_legend(axes[0][-1])
    _legend_right(axes[0][-1], "key quota")
    fig.suptitle(
        f"Speedup vs concurrency — scenario {slug} (model; runs that generated every scene, paired)"
    )
    _caption(fig)
    cv.save(fig, f"{slug}-speedup")


def ttfs_figure(cv: Canvas, g: pd.DataFrame, slug: str, modes: list[str]) -> None:
    """``<scenario>-ttfs``: mean time to first scene vs *c* per quota, serial's as a line."""
    fig, axes = _modes_grid(modes, 4.0, sharey=True)
    ser = g[g["mode"] == "serial"]
    hollow = False
    for ax, m in zip(axes[0], modes, strict=True):
        for q in cv.quotas:
            d = _at(g, m, q)
            if not d.empty:
                hollow |= _quota_curve(ax, cv, q, d, "ttfs_mean_s")
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
    cv.save(fig, f"{slug}-ttfs")


def failures_figure(cv: Canvas, g: pd.DataFrame, slug: str, modes: list[str]) -> None:
    """``<scenario>-failures``: 429s per classroom (top) and P(any failed scene) (bottom)."""
    fig, axes = _pyplot().subplots(
        2, len(modes), figsize=(5.2 * len(modes), 7.0), sharex=True, squeeze=False
    )
    for j, m in enumerate(modes):
        for q in cv.quotas:
            d = _at(g, m, q)
            if d.empty:
                continue
            _plain_curve(axes[0][j], cv, q, d, d["http_429_mean"])
            _plain_curve(axes[1][j], cv, q, d, 100 * d["p_any_failed"])
        axes[0][j].set_title(m)
        axes[0][j].set_ylabel("HTTP 429 per classroom")
        axes[1][j].set_ylabel("P(any failed scene) (%)")
        _concurrency_axis(axes[1][j])
        for ax in (axes[0][j], axes[1][j]):
            ax.grid(alpha=0.3)
    _legend_right(axes[0][-1], "key quota")
    fig.suptitle(f"429s and failed scenes vs concurrency — scenario {slug} (model)")
    cv.save(fig, f"{slug}-failures")


def _two_rows(n: int) -> tuple[Any, Any]:
    return _pyplot().subplots(  # type: ignore[no-any-return]
        2, n, figsize=(4.2 * n, 6.6), sharex=True, sharey="row", squeeze=False
    )


def adaptive_figure(cv: Canvas, one: pd.DataFrame, slug: str, pols: list[str]) -> None:
    """``<scenario>-adaptive``: speedup (top) and P(any failed scene) (bottom) vs *c* per
    quota, one panel per adaptive policy (pipelined, one classroom per key)."""
    fig, axes = _two_rows(len(pols))
    hollow = False
    for j, pol in enumerate(pols):
        for q in cv.quotas:
            d = one[(one["adaptive"] == pol) & (one["quota"] == q)].sort_values("concurrency")
            if d.empty:
                continue
            hollow |= _quota_curve(axes[0][j], cv, q, d, "speedup")
            _plain_curve(axes[1][j], cv, q, d, 100 * d["p_any_failed"])
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
    cv.save(fig, f"{slug}-adaptive")


def tenants_figure(
    cv: Canvas, gq: pd.DataFrame, slug: str, q: Any, ks: list[int], pols: list[str]
) -> None:
    """``<scenario>-tenants-q<quota>``: speedup and P(any failed scene) per classroom vs *c*
    per adaptive policy, one panel per number of classrooms sharing the key."""
    pcol = {p: _pyplot().get_cmap("tab10")(i) for i, p in enumerate(pols)}
    fig, axes = _two_rows(len(ks))
    hollow = False
    for j, k in enumerate(ks):
        for i, pol in enumerate(pols):
            d = gq[(gq["tenants"] == k) & (gq["adaptive"] == pol)].sort_values("concurrency")
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
    fig.suptitle(f"Shared key, {quota_label(q)} — scenario {slug} (model, pipelined)")
    _caption(fig)
    cv.save(fig, f"{slug}-tenants-q{int(q)}")


def _qoe_panels(axes: Any, lines: list[tuple[str, int, pd.DataFrame]], color: Any) -> None:
    """Stall ratio and startup vs *c*, and makespan vs stall, one line per (policy, quota)."""
    for pol, q, gl in lines:
        style = "-" if pol == "off" else "--"
        x = gl["concurrency"].astype(int).to_numpy()
        mk = gl["makespan_mean_s"].astype(float).to_numpy()
        st = gl["stall_mean_s"].astype(float).to_numpy()
        pts = (
            (x, 100 * gl["stall_ratio"].astype(float).to_numpy()),
            (x, gl["startup_mean_s"].astype(float).to_numpy()),
            (mk, st),
        )
        fails = gl["fails"].to_numpy(dtype=bool)
        for ax, (px, py) in zip(axes, pts, strict=True):
            ax.plot(px, py, style, color=color[q], lw=1.2, label=f"{quota_label(q)}, {pol}")
            ax.scatter(px[~fails], py[~fails], color=color[q], s=22, zorder=3)
            ax.scatter(px[fails], py[fails], facecolors="none", edgecolors=color[q], s=30)
        for cx, a, b in zip(x, mk, st, strict=True):
            axes[2].annotate(f"{cx}", (a, b), fontsize=6, xytext=(2, 2), textcoords="offset points")


def qoe_figure(cv: Canvas, g: pd.DataFrame, name: str, rule: QoERule = QOE_RULE) -> None:
    """``<scenario>-qoe``: stall ratio and startup delay vs *c* per quota (colour: quota;
    solid: fixed cap, dashed: adaptive policy; hollow markers: more failed scenes than
    serial's + the budget), and makespan vs stall (the Pareto view)."""
    plt = _pyplot()
    lines = qoe_lines(g, rule.failure_budget_pp / 100)
    quotas = sorted({q for _, q, _ in lines}, key=quota_key)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    _qoe_panels(axes, lines, {q: cmap(i / max(1, len(quotas) - 1)) for i, q in enumerate(quotas)})
    for ax in axes[:2]:
        ax.set_xticks(sorted({int(c) for c in g["concurrency"]}))
    axes[0].set(xlabel="concurrency c", ylabel="stall ratio (%)", title="stall ratio vs c")
    axes[1].set(xlabel="concurrency c", ylabel="mean startup delay (s)", title="startup vs c")
    axes[2].set(
        xlabel="mean makespan (s)",
        ylabel="mean stall per run (s)",
        title="makespan vs stall (labels: c; lower left is better)",
    )
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(
        f"{name}: what the learner feels (model, pipelined; serial at c = 1; solid: fixed "
        f"cap, dashed: adaptive; hollow: P(any failed) > serial's + "
        f"{rule.failure_budget_pp:g} point)",
        fontsize=10,
    )
    fig.tight_layout()
    cv.save(fig, f"{name}-qoe", dpi=110, tight=False)


# -- all of them ----------------------------------------------------------------------------
def _policies(every: pd.DataFrame) -> list[str]:
    """The adaptive policies of the sweep, off first (known ones in a fixed order)."""
    return sorted(
        set(every["adaptive"]),
        key=lambda a: _POLICY_ORDER.index(a) if a in _POLICY_ORDER else 9,
    )


def _policy_figures(cv: Canvas, every: pd.DataFrame) -> None:
    """Adaptive and shared-key figures per scenario, where the sweep ran them."""
    pols = _policies(every)
    for name, g in every[every["mode"] == "pipelined"].groupby("scenario"):
        slug = str(name)
        one = g[g["tenants"] == 1]
        if len(pols) > 1 and not one.empty:
            adaptive_figure(cv, one, slug, pols)
        ks = sorted(set(g["tenants"]))
        if len(ks) > 1:
            for q in cv.quotas:
                gq = g[g["quota"] == q]
                if not gq.empty:
                    tenants_figure(cv, gq, slug, q, ks, pols)


def render_figures(cells: pd.DataFrame, scenarios: dict[str, Scenario], figdir: Path) -> list[Path]:
    """Every figure of a cell table into ``figdir``; returns the files (PNG and SVG)."""
    figdir.mkdir(parents=True, exist_ok=True)
    every = cells[cells["backend"] == "sim"]
    if every.empty:
        every = cells
    sim = every[(every["adaptive"] == "off") & (every["tenants"] == 1)]
    modes = [m for m in ("hybrid", "pipelined") if m in set(sim["mode"])]
    cv = Canvas.for_quotas(figdir, sorted(sim["quota"].unique(), key=quota_key))
    for name, g in sim.groupby("scenario"):
        slug = str(name)
        speedup_figure(cv, g, slug, scenarios.get(slug), modes)
        ttfs_figure(cv, g, slug, modes)
        failures_figure(cv, g, slug, modes)
    _policy_figures(cv, every)
    if "stall_mean_s" in cells.columns:
        qoe = cells[(cells["backend"] == "sim") & (cells["tenants"] == 1)]
        for name, g in qoe.groupby("scenario"):
            qoe_figure(cv, g, str(name))
    return cv.out
