"""What the fake provider and the real pipeline say to each other beyond upstream's bodies.

* Ids: upstream's client names a clip ``tts_s<order>_<actionId>``; the fake provider's
  actions have ids ``sb-<classroom>-o<order>-s<clip>``, so a clip's audio id names the
  classroom, the outline and the clip (:func:`audio_id`, :func:`parse_audio_id`); stage
  ids ``sb-<classroom>`` name the classroom (:func:`classroom_of`). Anything else is
  hashed to a stable classroom id, so an unmodified upstream client works too.
* ``x-scenebench-counts`` on every generation answer: the provider attempts the route
  made for this request (``requests,http_429,http_5xx,retries,status``, the last being
  the provider's own status of its last attempt). In the ``route`` error shape a
  provider's 429 reaches the client as a 500, so the client counts 429s from this.
* ``x-scenebench-foreground: 1`` on the foreground first scene's requests, so a route
  that retries (before #788) uses the foreground budget.
* ``x-scenebench-sent-ns`` on the wall clock: the client's monotonic clock when it sent
  the request. A provider on the same machine (loopback, the same clock) counts the
  latency from then, so the request's way in is inside the latency, not added to it.
"""

from __future__ import annotations

import re
import zlib

from sim.rules import Counts

__all__ = [
    "COUNTS_HEADER",
    "FOREGROUND_HEADER",
    "SENT_HEADER",
    "audio_id",
    "classroom_of",
    "format_counts",
    "parse_audio_id",
    "parse_counts",
]

COUNTS_HEADER = "x-scenebench-counts"
FOREGROUND_HEADER = "x-scenebench-foreground"
SENT_HEADER = "x-scenebench-sent-ns"
_STAGE_RE = re.compile(r"^sb-(\d+)$")
_ACTION_RE = re.compile(r"sb-(\d+)-o(\d+)-s(\d+)$")
_UPSTREAM_AUDIO_RE = re.compile(r"^tts_s(\d+)_(.+)$")
_OWN_AUDIO_RE = re.compile(r"^tts_(sb-\d+-o\d+-s\d+)$")
# both forms above with a scenebench action id (upstream's ``tts_s<o>_sb-...`` and the older
# ``tts_sb-...``) in one match: what the three matches below give them, at a third the cost
_SB_AUDIO_RE = re.compile(r"^tts_s(?:\d+_s)?b-(\d+)-o(\d+)-s(\d+)$")


def hash_id(s: str) -> int:
    return zlib.crc32(s.encode("utf-8")) & 0x7FFFFFFF


def classroom_of(stage_id: str) -> int:
    """The classroom a stage id names (``sb-<n>``), else a stable hash of it."""
    m = _STAGE_RE.match(stage_id)
    return int(m.group(1)) if m else hash_id(stage_id)


def audio_id(order: int, action_id: str) -> str:
    """The audio id upstream's client gives a clip: ``tts_s<order>_<actionId>``."""
    return f"tts_s{order}_{action_id}"


def parse_audio_id(value: str) -> tuple[int, int, int]:
    """(classroom, outline order, clip) of a clip's audio id, upstream's form or
    scenebench's older ``tts_sb-<c>-o<o>-s<k>``; an unknown form hashes to (h, order, 0)."""
    sb = _SB_AUDIO_RE.match(value)
    if sb is not None:
        c, o, k = sb.groups()
        return int(c), int(o), int(k)
    m = _UPSTREAM_AUDIO_RE.match(value)
    action = m.group(2) if m else None
    if action is None:
        own = _OWN_AUDIO_RE.match(value)
        action = own.group(1) if own else None
    a = _ACTION_RE.search(action) if action is not None else None
    if a is not None:
        return int(a.group(1)), int(a.group(2)), int(a.group(3))
    return hash_id(value), int(m.group(1)) if m else 0, 0


def format_counts(c: Counts, provider_status: int) -> str:
    return f"{c.requests},{c.http_429},{c.http_5xx},{c.retries},{provider_status}"


def parse_counts(header: str | None, status: int) -> tuple[Counts, int]:
    """The counts a route reported and its provider status; without the header (another
    provider, or an answer cut short) one request with the status the client saw."""
    if header is not None:
        try:
            req, h429, h5xx, retries, prov = (int(x) for x in header.split(","))
            return Counts(req, h429, h5xx, retries), prov
        except ValueError:
            pass
    c = Counts()
    c.count(status)
    return c, status
