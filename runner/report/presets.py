"""The report's view of provider presets and shared capacity (issue 12).

* A sweep with ``--quotas anthropic-tier1,…,0`` runs preset cells beside the in-flight
  numbers; their rows carry ``preset`` (the numbers' rows an empty one). They are split off
  (:func:`split_presets`) so the in-flight analysis never sees them, summarised as cells of
  their own, and each (scenario, preset) gets a recommendation line: "on Anthropic tier 1,
  set c = …, expect …" (:func:`recommend_presets`, same rule as the per-quota picks:
  the smallest *c* within ``within_best`` of the best speedup among those whose
  P(any failed scene) stays within the failure budget of serial's).
* A scenario whose LLM key has a shared capacity gets a line on what pipelining buys there,
  beside the bound :func:`sim.analytic.shared_pipelined_speedup_bound` implies
  (:func:`shared_verdicts`): with a flat curve, "no speedup".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from sim.analytic import shared_pipelined_speedup_bound
from sim.presets import load_preset
from sim.scenario import Scenario

__all__ = [
    "mean_call_s",
    "recommend_presets",
    "render_presets_section",
    "shared_verdicts",
    "split_presets",
]

NO_SPEEDUP_BAND = 0.02  # |speedup - 1| below this (or a CI around 1) reads as "no speedup"


def split_presets(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the in-flight quota rows, the preset rows) of a sweep's runs."""
    if "preset" not in runs.columns:
        return runs, runs.iloc[0:0]
    is_p = runs["preset"].fillna("").astype(str) != ""
    return runs[~is_p].drop(columns=["preset"]), runs[is_p]


def preset_cells(runs: pd.DataFrame, cell_table: Callable[[pd.DataFrame], pd.DataFrame]) -> Any:
    """Cell summaries of the preset rows (their ``quota`` column is the preset's name)."""
    if runs.empty:
        return pd.DataFrame()
    r = runs.copy()
    r["quota"] = r["preset"].astype(str)
    return cell_table(r.drop(columns=["preset"]))


def _rejected(pip: pd.DataFrame, budget: float) -> dict[str, Any] | None:
    """The fastest parallel *c* the failure budget ruled out, if it beats what was kept."""
    bad = pip[(pip["p_any_failed"] > budget) & (pip["concurrency"] > 1)]
    bad = bad[bad["speedup"].notna()]
    if bad.empty:
        return None
    row = bad.sort_values(["speedup", "concurrency"], ascending=[False, True]).iloc[0]
    return {
        "concurrency": int(row["concurrency"]),
        "speedup": float(row["speedup"]),
        "p_any_failed": float(row["p_any_failed"]),
    }


def _pick(pip: pd.DataFrame, serial_fail: float, rule: dict[str, Any]) -> dict[str, Any]:
    budget = serial_fail + rule["failure_budget_pp"] / 100
    ok = pip[pip["p_any_failed"] <= budget]
    ok = ok[ok["speedup"].notna()]
    if ok.empty:
        return {
            "concurrency": 1,
            "speedup": 1.0,
            "lo": 1.0,
            "hi": 1.0,
            "serial_only": True,
            "rejected": _rejected(pip, budget),
        }
    top = float(ok["speedup"].max())
    row = ok[ok["speedup"] >= (1 - rule["within_best"]) * top].sort_values("concurrency").iloc[0]
    rej = _rejected(pip, budget)
    return {
        "rejected": rej if rej is not None and rej["speedup"] > float(row["speedup"]) else None,
        "concurrency": int(row["concurrency"]),
        "speedup": float(row["speedup"]),
        "lo": float(row["speedup_lo"]),
        "hi": float(row["speedup_hi"]),
        "makespan_mean_s": float(row["makespan_mean_s"]),
        "p_any_failed": float(row["p_any_failed"]),
        "http_429_mean": float(row["http_429_mean"]),
        "serial_only": False,
    }


def recommend_presets(pcells: pd.DataFrame, rule: dict[str, Any]) -> dict[str, Any]:
    """Per scenario, per preset: the recommended *c* and what to expect (model cells)."""
    out: dict[str, Any] = {}
    if pcells.empty:
        return out
    sim = pcells[
        (pcells["backend"] == rule["backend"])
        & (pcells["adaptive"] == "off")
        & (pcells["tenants"] == 1)
    ]
    for (name, preset), g in sim.groupby(["scenario", "quota"]):
        serial = g[g["mode"] == "serial"]
        pip = g[g["mode"] == rule["mode"]]
        if serial.empty or pip.empty:
            continue
        s_fail = float(serial["p_any_failed"].iloc[0])
        pick = _pick(pip, s_fail, rule)
        p = load_preset(str(preset))
        pick.update(
            {
                "label": p.label,
                "limits": p.summary(),
                "source": p.source,
                "as_of": p.as_of,
                "p_any_failed_serial": s_fail,
                "makespan_serial_s": float(serial["makespan_mean_s"].iloc[0]),
            }
        )
        out.setdefault(str(name), {})[str(preset)] = pick
    return out


def mean_call_s(sc: Scenario, step: int) -> float:
    """Mean solo time of a call: the latency's mean, plus output / speed when derived."""
    dist = (sc.content, sc.actions, sc.tts)[step]
    spec = sc.step_tokens(step)
    extra = 0.0
    if spec is not None and spec.derived and spec.output is not None:
        extra = spec.output.mean / spec.output_tps
    return float(dist.mean) + extra


def shared_verdicts(cells: pd.DataFrame, scenarios: dict[str, Scenario], c: int = 3) -> Any:
    """For each scenario with a shared LLM capacity: pipelined speedup at ``c`` (unlimited
    in-flight quota, model) against the bound of :mod:`sim.analytic`."""
    out: dict[str, Any] = {}
    for name, sc in scenarios.items():
        q = sc.quota_llm
        if not q.shared or cells.empty:
            continue
        g = cells[
            (cells["scenario"] == name)
            & (cells["backend"] == "sim")
            & (cells["quota"] == 0)
            & (cells["mode"] == "pipelined")
            & (cells["concurrency"] == c)
            & (cells["adaptive"] == "off")
            & (cells["tenants"] == 1)
        ]
        if g.empty:
            continue
        row = g.iloc[0]
        sp, lo, hi = float(row["speedup"]), float(row["speedup_lo"]), float(row["speedup_hi"])
        cm, am, tm = (mean_call_s(sc, i) for i in range(3))
        tail = am + sc.speech_actions.mean * tm
        bound = shared_pipelined_speedup_bound(sc.outlines, c, cm, am, tail, q.throughput)
        none = abs(sp - 1) < NO_SPEEDUP_BAND or (lo <= 1.0 <= hi)
        out[name] = {
            "concurrency": c,
            "speedup": sp,
            "lo": lo,
            "hi": hi,
            "bound": bound,
            "flat": len(set(q.throughput)) <= 1,
            "no_speedup": bool(none),
        }
    return out


def _line(name: str, v: dict[str, Any]) -> str:
    head = f"- on {v['label']} (`{name}`: {v['limits']}): "
    if v["serial_only"]:
        return (
            head + "keep c = 1 (serial): every parallel c fails scenes more often than serial "
            f"(P(any failed scene) {100 * v['p_any_failed_serial']:.1f}% serial)."
        )
    rej = v.get("rejected")
    why_not = (
        f" (c = {rej['concurrency']} would be {rej['speedup']:.2f}× but fails a scene in "
        f"{100 * rej['p_any_failed']:.1f}% of classrooms)"
        if rej
        else ""
    )
    return head + (
        f"set c = {v['concurrency']}, expect {v['speedup']:.2f}× serial's speed "
        f"(95% CI {v['lo']:.2f}–{v['hi']:.2f}; mean makespan {v['makespan_mean_s']:.0f} s vs "
        f"{v['makespan_serial_s']:.0f} s), P(any failed scene) {100 * v['p_any_failed']:.1f}% "
        f"(serial {100 * v['p_any_failed_serial']:.1f}%), {v['http_429_mean']:.1f} 429s "
        f"per classroom{why_not}. Limits from {v['source']}, as of {v['as_of']}."
    )


def render_presets_section(presets: dict[str, Any], shared: dict[str, Any]) -> list[str]:
    """REPORT.md lines: a recommendation per preset, and the shared-capacity verdicts."""
    lines: list[str] = []
    if presets:
        lines += ["## Provider presets", ""]
        lines += [
            "Each preset (`sim/presets/<name>.toml`) limits the LLM key as the provider's "
            "page says (numbers marked unverified in the file are the author's best reading). "
            "Pipelined; same failure budget as above. A token-limited preset on a scenario "
            "without tokens per call uses `sim.presets.DEFAULT_TOKENS` (max_tokens 4096 for "
            "content, 2048 for actions: assumptions, not measured upstream).",
            "",
        ]
        for scenario, by in presets.items():
            lines += [f"Scenario `{scenario}`:", ""]
            lines += [_line(name, v) for name, v in by.items()]
            lines += [""]
    if shared:
        lines += ["## Shared capacity", ""]
        for name, v in shared.items():
            what = (
                "no speedup over serial (within noise)"
                if v["no_speedup"]
                else f"{v['speedup']:.2f}× serial's speed"
            )
            why = (
                "its aggregate throughput is flat in concurrency, so work is conserved"
                if v["flat"]
                else "its aggregate throughput grows with concurrency"
            )
            lines += [
                f"- `{name}`: pipelined c = {v['concurrency']} gives {what} "
                f"(speedup {v['speedup']:.3f}, 95% CI {v['lo']:.3f}–{v['hi']:.3f}); {why}; "
                f"bound from `sim.analytic.shared_pipelined_speedup_bound`: "
                f"{v['bound']:.2f}×."
            ]
        lines += [""]
    return lines
