"""Issue 12: provider presets — their files, sweep --quotas with preset names, the report's
line per preset and the shared-capacity verdict."""

import json
import re
import subprocess
import sys

import pytest

from runner.experiments.sweep import Cell, split_quotas
from sim.config import RunConfig
from sim.presets import apply_preset, load_preset, preset_names
from sim.scenario import ScenarioError, load_scenario
from sim.upstream import DEFAULT_PROFILE

CMD = [sys.executable, "-m", "runner.cli"]
REQUIRED = {
    "kimi-tier0",
    "kimi-tier1",
    "zhipu-glm",
    "openai-tier1",
    "anthropic-tier1",
    "gemini-free",
    "gemini-tier1",
    "dashscope",
    "deepseek",
    "vllm-selfhosted",
    "ollama-default",
}


def test_every_required_preset_exists_and_carries_a_source_and_a_date():
    assert set(preset_names()) >= REQUIRED
    for name in preset_names():
        p = load_preset(name)
        assert p.source and p.as_of, name
        assert re.search(r"https?://|provider-facts\.md", p.source), name
        assert re.search(r"\b20\d\d\b", p.as_of), name


def test_preset_numbers_follow_provider_facts_where_it_gives_them():
    k0, k1 = load_preset("kimi-tier0").quota, load_preset("kimi-tier1").quota
    assert (k0.max_inflight, k0.rpm) == (1, 3) and (k1.max_inflight, k1.rpm) == (50, 200)
    a = load_preset("anthropic-tier1").quota
    assert a.rpm > 0 and a.itpm > 0 and a.otpm > 0 and a.token_refund
    assert load_preset("dashscope").quota.rpm_per_second
    assert load_preset("gemini-free").quota.retry_after_s is None  # delay in the body
    o = load_preset("ollama-default").quota
    assert (o.parallel, o.max_queue, o.queue_status) == (1, 512, 503)


def test_applying_a_token_preset_adds_tokens_per_call_and_keeps_the_tts_key():
    base = load_scenario("default")
    sc = apply_preset(base, "openai-tier1")
    assert sc.quota_llm.tpm > 0 and sc.quota_tts == base.quota_tts
    assert sc.quota_llm.p_5xx == base.quota_llm.p_5xx > 0  # the scenario's faults stay
    assert apply_preset(base.with_quota(llm_inflight=4), "openai-tier1").quota_llm.max_inflight == 0
    assert sc.step_tokens(0) is not None and sc.step_tokens(0).max_tokens > 0
    with pytest.raises(ScenarioError, match=r"^preset: unknown 'nope'"):
        apply_preset(base, "nope")


def test_quotas_split_into_numbers_and_presets():
    assert split_quotas(["anthropic-tier1", 0, "kimi-tier0", 2]) == (
        (0, 2),
        ("anthropic-tier1", "kimi-tier0"),
    )
    assert split_quotas(["ollama-default"]) == ((0,), ("ollama-default",))
    cell = Cell("sim", "default", 0, RunConfig.of("pipelined", 3), 10, 0, preset="kimi-tier0")
    assert cell.cell_id.endswith("__p-kimi-tier0")


def test_an_unknown_quota_name_is_a_one_line_usage_error():
    p = subprocess.run([*CMD, "sweep", "--quotas", "2,nope"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "nope" in p.stderr and "kimi-tier0" in p.stderr


@pytest.mark.heavy
def test_a_sweep_with_presets_reports_a_line_per_preset_and_the_flat_verdict(tmp_path):
    out = tmp_path / "res"
    args = ["--backend", "sim", "--reps", "6", "--concurrency", "1,3", "--workers", "1"]
    quotas = "kimi-tier0,ollama-default,anthropic-tier1,0"
    scenarios = ["--scenario", "shared-flat", "--scenario", "default"]
    p = subprocess.run(
        [
            *CMD,
            "sweep",
            "--upstream",
            DEFAULT_PROFILE,
            *scenarios,
            "--quotas",
            quotas,
            *args,
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    report = (out / "REPORT.md").read_text()
    for label in ("Kimi tier 0", "Ollama default", "Anthropic tier 1"):
        assert re.search(
            rf"- on {label} \(`[a-z0-9-]+`: .*\): (set c = \d+, expect|keep c = 1)", report
        )
    assert re.search(r"`shared-flat`: pipelined c = 3 gives no speedup over serial", report)
    rec = json.loads((out / "recommendation.json").read_text())
    assert set(rec["presets"]["default"]) == {"kimi-tier0", "ollama-default", "anthropic-tier1"}
    assert rec["shared_capacity"]["shared-flat"]["speedup"] == pytest.approx(1.0, abs=1e-6)
    r = subprocess.run([*CMD, "recommend", "--results", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "on Kimi tier 0 (kimi-tier0)" in r.stdout
