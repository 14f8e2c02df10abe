import dataclasses
import math

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import Quota, RetryPolicy, ScenarioError, builtin_names, load_scenario
from sim.scenario import scenario_from_mapping


def test_builtins_load_and_cite_sources():
    names = builtin_names()
    for required in ("default", "content-heavy", "tts-heavy", "low-quota"):
        assert required in names
    for n in names:
        sc = load_scenario(n)
        assert sc.name == n
        assert sc.sources, f"{n} cites no sources for its numbers"
    assert load_scenario("low-quota").quota_llm.max_inflight == 1
    assert load_scenario("low-quota").quota_tts.max_inflight == 1
    d = load_scenario("default")
    assert d.outlines == 10 and d.scene_types == ("slide",)
    # the built-ins follow today's upstream: client retries on every step (#788)
    assert d.upstream == "pr696"
    assert d.client.retry_llm == RetryPolicy(5, 1.0, 2.0, False, 60.0, 16.0, 0.2)
    assert d.client.retry_tts == d.client.retry_llm
    assert d.client.foreground_retry_llm.max_retries == 2


def test_round_trip_through_toml(tmp_path):
    for n in builtin_names():
        sc = load_scenario(n)
        p = tmp_path / f"{n}.toml"
        p.write_text(tomli_w.dumps(sc.to_mapping()))
        assert load_scenario(p) == sc


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"classroom": {"outlines": 0}}, "classroom.outlines: must be in [1, 1000]"),
        ({"classroom": {"scene_types": ["video"]}}, "classroom.scene_types: must be one of slide"),
        ({"latency": {"content": {"dist": "weibull"}}}, "latency.content.dist: must be one of"),
        ({"quota": {"llm": {"max_inflight": -1}}}, "quota.llm.max_inflight"),
        ({"quota": {"llm": {"p_429": 1.5}}}, "quota.llm.p_429: must be in [0, 1]"),
        ({"quota": {"tts": {"status_5xx": 418}}}, "quota.tts.status_5xx: must be one of 500"),
        ({"quota": {"tts": {"bogus": 1}}}, "quota.tts.bogus: unknown field"),
        ({"retry": {"llm": {"backoff_factor": 0.5}}}, "retry.llm.backoff_factor"),
        ({"run": {"time_scale": 0}}, "run.time_scale: must be in (0, 100]"),
        ({"colour": "blue"}, "colour: unknown field"),
    ],
)
def test_invalid_fields_fail_with_one_line_naming_them(patch, needle):
    base = load_scenario("default").to_mapping()
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            for k2, v2 in v.items():
                if isinstance(v2, dict) and isinstance(base[k].get(k2), dict):
                    base[k][k2] = {**base[k][k2], **v2} if k != "latency" else v2
                else:
                    base[k][k2] = v2
        else:
            base[k] = v
    with pytest.raises(ScenarioError) as ei:
        scenario_from_mapping(base)
    msg = str(ei.value)
    assert needle in msg
    assert "\n" not in msg


def test_unknown_name_and_bad_toml(tmp_path):
    with pytest.raises(ScenarioError, match=r"allowed: .*default"):
        load_scenario("nope")
    p = tmp_path / "bad.toml"
    p.write_text("name = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(p)


def test_retry_delay_follows_the_ai_sdk():
    r = RetryPolicy()
    assert [r.delay_us(i, None) for i in range(3)] == [2_000_000, 4_000_000, 8_000_000]
    assert r.delay_us(0, 1_000_000) == 1_000_000  # retry-after below 60 s is used
    assert r.delay_us(1, 90_000_000) == 4_000_000  # 90 s is ignored
    assert r.delay_us(0, 0) == 0
    assert RetryPolicy(honour_retry_after=False).delay_us(0, 1_000_000) == 2_000_000


def test_quota_and_replace_validate():
    sc = load_scenario("default").with_quota(llm_inflight=3)
    assert sc.quota_llm.max_inflight == 3
    with pytest.raises(ScenarioError):
        dataclasses.replace(sc.quota_llm, rpm=-1)
    assert Quota(rpm=60).bucket_capacity == 60 and Quota(rpm=60, rpm_burst=2).bucket_capacity == 2


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 20)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=12), ch, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "classroom",
        "latency",
        "quota",
        "retry",
        "run",
        "name",
        "outlines",
        "content",
        "llm",
        "dist",
        "median_s",
        "sigma",
        "max_inflight",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json | st.dictionaries(_keys, _json, max_size=4), max_size=6))
def test_loader_fuzz_only_raises_scenario_error(data):
    """No input crashes the loader with anything but a one-line ScenarioError."""
    try:
        sc = scenario_from_mapping(data)
    except ScenarioError as e:
        assert "\n" not in str(e)
    else:
        assert sc.outlines >= 1 and math.isfinite(sc.time_scale)


def test_odd_field_names_are_quoted_and_stay_on_one_line():
    """Found by the fuzzer: a key with a newline once made a two-line error."""
    with pytest.raises(ScenarioError) as ei:
        scenario_from_mapping({"classroom": {"\n": None}})
    assert str(ei.value) == (
        "classroom.'\\n': unknown field; allowed: outlines, scene_types, speech_actions"
    )
    base = load_scenario("default").to_mapping()
    base["latency"]["content"] = {"dist": "constant", "value_s": 1.0, "a b": 2}
    with pytest.raises(ScenarioError) as ei:
        scenario_from_mapping(base)
    assert str(ei.value) == ("latency.content.'a b': unknown for dist 'constant'; allowed: value_s")
