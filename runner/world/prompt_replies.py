"""What the fake provider's chat endpoints answer: minimal outputs OpenMAIC's steps accept.

OpenMAIC's generation steps call the model with their own prompt templates; the answer is
parsed leniently (code fences and prose stripped, JSON repaired). :func:`classify` tells
which step a prompt belongs to from a few keywords of its system and user text (read from
upstream's templates, docs/provider-api.md), and :func:`reply_text` writes the smallest
answer that step takes:

* ``outline``: a JSON object ``{"languageDirective", "outlines": [...]}``, one outline per
  scene of the scenario, scene types cycling as the scenario's do;
* ``slide``: ``{"background": {...}, "elements": [one text element]}``;
* ``quiz``: a JSON array of one single-choice question (string options, ``correctAnswer``);
* ``actions``: a JSON array of the drawn number of ``text`` items (each a speech clip)
  with a ``spotlight`` action after the first (slide scenes; other scenes: text only);
* ``agents``: ``{"agents": [a teacher, a student]}``;
* anything else: filler words, one per drawn output token.

Nothing here decides timing or quotas; the endpoints do (:mod:`runner.world.provider_api`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

__all__ = ["PROMPT_KINDS", "classify", "filler", "prompt_text", "reply_text"]

PROMPT_KINDS = ("outline", "agents", "actions", "quiz", "slide", "other")
_FILLER = ("the", "scene", "explains", "one", "idea", "with", "a", "short", "example", "today")


def prompt_text(messages: Any, system: Any = None) -> str:
    """All text of a chat request: the system prompt(s) and every message's text parts
    (OpenAI's string or parts array, Anthropic's string or content blocks)."""
    out: list[str] = []
    if system is not None:  # (_add adds nothing for None)
        _add(out, system)
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, str):  # the common case, _add's first, inline
                    out.append(content)
                else:
                    _add(out, content)
    return "\n".join(out)


def _add(out: list[str], content: Any) -> None:
    """A message's (or the system prompt's) text parts, appended to ``out``."""
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])


def classify(text: str) -> str:
    """Which OpenMAIC step a prompt is (one of :data:`PROMPT_KINDS`), first match wins."""
    if "languageDirective" in text and "outlines" in text:
        return "outline"
    if '"agents"' in text and "persona" in text:
        return "agents"
    if "JSON array" in text and ("segments" in text or "spotlight" in text):
        return "actions"  # slide actions name spotlights; quiz/interactive ones only segments
    if "questionCount" in text or "Question Count" in text or "correctAnswer" in text:
        return "quiz"
    if "elements" in text and "background" in text:
        return "slide"
    return "other"


@functools.lru_cache(maxsize=4096)
def filler(words: int) -> str:
    """``words`` filler words (about one token each), at least one."""
    n = max(1, words)
    reps, rest = divmod(n, len(_FILLER))
    return " ".join(_FILLER * reps + _FILLER[:rest]) + "."


def _outline(scenes: int, types: tuple[str, ...]) -> dict[str, Any]:
    outlines = []
    for i in range(scenes):
        kind = types[i % len(types)]
        o: dict[str, Any] = {
            "id": f"scene_{i + 1}",
            "type": kind,
            "title": f"Part {i + 1}",
            "description": f"What part {i + 1} teaches.",
            "keyPoints": [f"point {i + 1}"],
            "order": i + 1,
        }
        if kind == "quiz":
            o["quizConfig"] = {
                "questionCount": 1,
                "difficulty": "easy",
                "questionTypes": ["single"],
            }
        if kind == "interactive":
            o["widgetType"] = "diagram"
            o["widgetOutline"] = {"concept": f"part {i + 1}"}
        outlines.append(o)
    return {"languageDirective": "Teach in English.", "outlines": outlines}


def _slide() -> dict[str, Any]:
    return {
        "background": {"type": "solid", "color": "#ffffff"},
        "elements": [
            {
                "id": "text_1",
                "type": "text",
                "left": 60,
                "top": 60,
                "width": 880,
                "height": 120,
                "content": "<p>Key idea of this scene</p>",
                "defaultFontName": "Arial",
                "defaultColor": "#333333",
            }
        ],
    }


def _quiz() -> list[dict[str, Any]]:
    return [
        {
            "id": "q1",
            "type": "single",
            "question": "Which option is right?",
            "options": ["Option A", "Option B"],
            "correctAnswer": "Option A",
            "analysis": "Option A is right.",
        }
    ]


def _actions(speeches: int, spotlight: bool) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for j in range(speeches):
        items.append({"type": "text", "content": f"Now let us look at part {j + 1}."})
        if j == 0 and spotlight:
            items.append({"type": "action", "name": "spotlight", "params": {"elementId": "text_1"}})
    return items


def _agents() -> dict[str, Any]:
    return {
        "agents": [
            {
                "name": "Ms. Lee",
                "role": "teacher",
                "persona": "A patient teacher.",
                "avatar": "teacher",
                "color": "#3366ff",
            },
            {
                "name": "Sam",
                "role": "student",
                "persona": "A curious student.",
                "avatar": "student",
                "color": "#33aa66",
            },
        ]
    }


def reply_text(
    kind: str,
    *,
    words: int,
    speeches: int,
    scenes: int,
    scene_types: tuple[str, ...],
    spotlight: bool = True,
) -> str:
    """The answer to a prompt of ``kind``: ``speeches`` text items for actions (with a
    spotlight when ``spotlight``: a slide's actions prompt offers one), ``scenes`` outlines
    for an outline, ``words`` filler words for anything else."""
    value: Any
    if kind == "outline":
        value = _outline(scenes, scene_types)
    elif kind == "slide":
        value = _slide()
    elif kind == "quiz":
        value = _quiz()
    elif kind == "actions":
        value = _actions(speeches, spotlight)
    elif kind == "agents":
        value = _agents()
    else:
        return filler(words)
    return json.dumps(value, separators=(",", ":"))
