"""Provider presets: built-in quota profiles with their sources (issue 12).

Each ``sim/presets/<name>.toml`` holds one provider's published limits for the model
class a classroom would use, with ``source`` (the page) and ``as_of`` (when it was
read) beside the numbers, and ``notes`` saying which numbers are not verified. A
preset replaces a scenario's LLM key quota (:func:`apply_preset`); the TTS key keeps the
scenario's. A token-limited preset needs tokens per call: a scenario without
``[tokens.content]``/``[tokens.actions]`` gets :data:`DEFAULT_TOKENS`. A TTS preset (a
``[quota.tts]`` table: MiniMax, ElevenLabs, Azure Speech, OpenAI TTS; issue 21) limits the
TTS key instead. A preset's ``shape`` (its provider's error shape) is taken only when asked
(``apply_preset(..., shape=True)``, ``scenebench serve --preset``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..catalog import preset_names
from ..rules import ScenarioError
from ..scenario import Quota, Scenario
from ..tokens import StepTokens, step_tokens_from_mapping

__all__ = [
    "DEFAULT_TOKENS",
    "LIMIT_FIELDS",
    "Preset",
    "apply_preset",
    "is_preset",
    "load_preset",
    "preset_names",
]

# Tokens per call for a scenario that has none: content ~3k output tokens and actions ~1k
# (provider-facts.md, 'Latency figures'); the inputs and the requests' max_tokens are
# assumptions (upstream's prompts and caps were not measured).
DEFAULT_TOKENS: dict[str, dict[str, Any]] = {
    "content": {
        "input": {"dist": "uniform", "low_s": 1500, "high_s": 3000},
        "output": {"dist": "lognormal", "median_s": 2800, "sigma": 0.2},
        "max_tokens": 4096,
    },
    "actions": {
        "input": {"dist": "uniform", "low_s": 3000, "high_s": 6000},
        "output": {"dist": "lognormal", "median_s": 1000, "sigma": 0.2},
        "max_tokens": 2048,
    },
}
_TOP = {"label", "model_class", "source", "as_of", "notes", "quota", "no_retry_after"}


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    model_class: str
    source: str
    as_of: str
    notes: tuple[str, ...]
    quota: Quota
    key: str = "llm"  # which key the preset limits: "llm" or "tts" (issue 21's TTS presets)

    def summary(self) -> str:
        """The limits in a few words (``50 RPM, 30,000 input TPM, …``)."""
        q = self.quota
        parts = []
        if q.max_inflight:
            parts.append(f"{q.max_inflight} in flight")
        if q.rpm:
            parts.append(f"{q.rpm:,g} RPM" + (" (per second)" if q.rpm_per_second else ""))
            if q.rpm_window_s:
                parts[-1] += f" (per {q.rpm_window_s}-s window)"
        for f, what in (("tpm", "TPM"), ("itpm", "input TPM"), ("otpm", "output TPM")):
            if getattr(q, f):
                parts.append(f"{getattr(q, f):,} {what}")
        if q.parallel:
            parts.append(f"{q.parallel} served at once, the rest queued")
        if q.throughput:
            parts.append(f"shared {q.throughput[0]:g}→{q.throughput[-1]:g} tok/s")
        return ", ".join(parts) or "no fixed limit"


def is_preset(name: str) -> bool:
    return name in preset_names()


def load_preset(name: str) -> Preset:
    """A built-in preset by name; ScenarioError (one line) for an unknown one."""
    if not is_preset(name):
        raise ScenarioError(f"preset: unknown {name!r}; allowed: {', '.join(preset_names())}")
    text = resources.files("sim.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    m = tomllib.loads(text)
    for k in m:
        if k not in _TOP:
            raise ScenarioError(f"preset {name}.{k}: unknown field; allowed: {', '.join(_TOP)}")
    for k in ("source", "as_of"):
        if not isinstance(m.get(k), str) or not m[k]:
            raise ScenarioError(f"preset {name}.{k}: required (a non-empty string)")
    tables = m.get("quota", {})
    key = "tts" if "tts" in tables and "llm" not in tables else "llm"
    fields = dict(tables.get(key, {}))
    if m.get("no_retry_after", False):  # TOML has no null: the 429 carries no Retry-After
        fields["retry_after_s"] = None
    try:
        quota = Quota(**fields)
    except (ScenarioError, TypeError) as e:
        raise ScenarioError(f"preset {name}.quota.{key}.{e}") from None
    return Preset(
        name,
        str(m.get("label", name)),
        str(m.get("model_class", "")),
        m["source"],
        m["as_of"],
        tuple(m.get("notes", [])),
        quota,
        key,
    )


# The quota fields a preset sets (every one of them: what it omits is off); the scenario
# keeps its own random faults (p_429, p_5xx, status_5xx, resets, stalls, truncations).
LIMIT_FIELDS = (
    "max_inflight",
    "rpm",
    "rpm_burst",
    "retry_after_s",
    "tpm",
    "itpm",
    "otpm",
    "token_refund",
    "rpm_per_second",
    "throughput",
    "parallel",
    "max_queue",
    "max_hold_s",
    "queue_status",
    # issue 21 (sim.faults): off unless a preset sets them, so older presets apply as before
    "rpd",
    "tpd",
    "day_reset_hour",
    "rpm_window_s",
)


def apply_preset(scenario: Scenario, name: str, *, shape: bool = False) -> Scenario:
    """The scenario with its LLM key (a TTS preset: its TTS key) limited as preset ``name``
    says (its limit fields, :data:`LIMIT_FIELDS`; the scenario's fault probabilities stay),
    tokens per call added from :data:`DEFAULT_TOKENS` when the preset counts tokens and the
    scenario has none. ``shape``: also take the preset's error shape (the provider
    endpoints' answers, ``scenebench serve --preset``; sweeps leave it out)."""
    p = load_preset(name)
    limits = {f: getattr(p.quota, f) for f in LIMIT_FIELDS}
    if shape and p.quota.shape:
        limits["shape"] = p.quota.shape
    if p.key == "tts":
        quota_tts = dataclasses.replace(scenario.quota_tts, **limits)
        return dataclasses.replace(scenario, quota_tts=quota_tts)
    tokens: dict[str, StepTokens] = dict(scenario.tokens)
    if p.quota.tokens_limited and "content" not in tokens and "actions" not in tokens:
        for step, m in DEFAULT_TOKENS.items():
            tokens[step] = step_tokens_from_mapping(m)
    quota = dataclasses.replace(scenario.quota_llm, **limits)
    return dataclasses.replace(scenario, quota_llm=quota, tokens=tokens)
