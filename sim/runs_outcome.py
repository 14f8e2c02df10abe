"""A generation run's record (:class:`RunOutcome`), which every runs engine makes: its own
module below :mod:`sim.runs` so that an engine can make records without importing the entry
that picks it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REFUSED", "RunOutcome"]

REFUSED = "refused"


@dataclass(frozen=True)
class RunOutcome:
    """One run, seconds from its request (``arrival_s`` on the deployment's clock).

    ``state``: completed, paused or refused (429 ``ACTIVE_RUN_LIMIT``); ``wait_s``: from the
    request to the first claim (a worker slot); ``first_scene_s``: from the request to scene
    0's write (outline and agents included; NaN when never); the learner's ``startup_s``,
    ``stall_s``, ``stalls`` (:mod:`sim.qoe`, from the request); ``failed_scenes``: skipped
    scenes and the scene a pause stopped at."""

    run: int
    owner: int
    arrival_s: float
    state: str
    wait_s: float
    first_scene_s: float
    end_s: float
    paused_at: str | None
    pause_status: int | None
    scenes_ok: int
    failed_scenes: tuple[int, ...]
    agents_preset: bool
    startup_s: float
    stall_s: float
    stalls: int
    requests: int
    http_429: int
    http_5xx: int
    retries: int
    timeouts: int
    media_ok: int = 0  # the media lane's items (images/video) generated
    media_failed: int = 0  # … and failed (never a pause)

    @property
    def refused(self) -> bool:
        return self.state == REFUSED
