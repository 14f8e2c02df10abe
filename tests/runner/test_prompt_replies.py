"""The fake provider's answers to OpenMAIC's step prompts (runner/world/prompt_replies.py):
each fixture (tests/fixtures/prompts, written for scenebench from upstream's step code) is
recognised, and the answer through the endpoints has the shape that step parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.world.fake_provider import create_app
from runner.world.prompt_replies import classify, prompt_text
from runner.world.provider_api import CALL_HEADER
from runner.world.run import _in_virtual_world
from sim.scenario import load_scenario

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prompts"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def _fixture(name: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _openai_messages(f: dict[str, str]) -> list[dict[str, Any]]:
    # the AI SDK sends the system prompt as a system message, the user text as parts
    return [
        {"role": "system", "content": f["system"]},
        {"role": "user", "content": [{"type": "text", "text": f["user"]}]},
    ]


@pytest.mark.parametrize("name", NAMES)
def test_each_fixture_is_recognised(name: str) -> None:
    f = _fixture(name)
    assert classify(prompt_text(_openai_messages(f))) == f["kind"]
    anthropic = [{"role": "user", "content": f["user"]}]
    assert classify(prompt_text(anthropic, f["system"])) == f["kind"]


def _answer(name: str, path: str = "/v1/chat/completions") -> tuple[Any, Any]:
    sc = load_scenario("default")
    app = create_app(sc, 1, virtual=True)
    f = _fixture(name)
    if path == "/v1/messages":
        body: dict[str, Any] = {
            "model": "c",
            "max_tokens": 4096,
            "system": f["system"],
            "messages": [{"role": "user", "content": f["user"]}],
        }
    else:
        body = {"model": "m", "messages": _openai_messages(f)}
    step = "actions" if f["kind"] == "actions" else "content"
    heads = {"authorization": "Bearer k", "x-api-key": "k", CALL_HEADER: f"{step}/3/2/0/0"}

    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(path, json=body, headers=heads)

    r = _in_virtual_world(app, go)
    assert r.status_code == 200, r.text
    js = r.json()
    text = js["content"][0]["text"] if path == "/v1/messages" else js["choices"][0]["message"]
    text = text if isinstance(text, str) else text["content"]
    return text, app


def test_outline_answer_is_one_object_with_a_scene_per_outline() -> None:
    text, app = _answer("outline")
    out = json.loads(text)
    assert isinstance(out["languageDirective"], str) and out["languageDirective"]
    sc = app.state.fake.scenario
    assert len(out["outlines"]) == sc.outlines
    for i, o in enumerate(out["outlines"]):
        assert {"id", "type", "title", "description", "keyPoints", "order"} <= set(o)
        assert o["type"] == sc.scene_type(i) and o["order"] == i + 1
        assert o["type"] != "quiz" or set(o["quizConfig"]) == {
            "questionCount",
            "difficulty",
            "questionTypes",
        }


def test_slide_content_answer_has_a_background_and_an_elements_array() -> None:
    out = json.loads(_answer("slide_content", "/v1/messages")[0])
    assert out["background"]["type"] == "solid" and isinstance(out["elements"], list)
    el = out["elements"][0]
    assert {"id", "type", "left", "top", "width", "height", "content"} <= set(el)


def test_quiz_content_answer_is_an_array_of_questions() -> None:
    out = json.loads(_answer("quiz_content")[0])
    assert isinstance(out, list) and out
    q = out[0]
    assert q["correctAnswer"] in q["options"] and q["type"] == "single"


@pytest.mark.parametrize(("name", "spotlight"), [("slide_actions", 1), ("quiz_actions", 0)])
def test_actions_answer_has_the_drawn_number_of_speeches(name: str, spotlight: int) -> None:
    text, app = _answer(name)
    out = json.loads(text)
    speeches = [a for a in out if a["type"] == "text"]
    assert len(speeches) == app.state.fake.provider.speeches(3, 2)  # the model's clip count
    spots = [a for a in out if a["type"] == "action" and a["name"] == "spotlight"]
    assert len(spots) == spotlight


def test_agents_answer_has_exactly_one_teacher() -> None:
    out = json.loads(_answer("agents")[0])
    assert [a["role"] for a in out["agents"]].count("teacher") == 1


def test_other_prompts_get_filler_of_the_drawn_length_cut_at_max_tokens() -> None:
    text, _ = _answer("other")
    assert len(text.split()) == 64  # no [tokens.content] in the default scenario
    sc = load_scenario("default")
    app = create_app(sc, 1, virtual=True)
    body = {"model": "m", "max_tokens": 5, "messages": _openai_messages(_fixture("other"))}

    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/v1/chat/completions", json=body, headers={"authorization": "B k"})

    js = _in_virtual_world(app, go).json()
    assert js["choices"][0]["finish_reason"] == "length"
    assert len(js["choices"][0]["message"]["content"].split()) == 5
