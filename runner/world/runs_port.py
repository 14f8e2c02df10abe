"""The real world of generation runs: asyncio + httpx drive the run and server machines against
the fake provider's provider-shaped endpoints.

Upstream's server steps (``lib/server/generation/steps/*.ts``) call the providers directly; so
does this port: ``POST /v1/chat/completions`` (OpenAI-compatible; the outline, the agent
profiles, a scene's content and its actions) and ``POST /v1/audio/speech`` (a narration clip),
each with the server's key as ``Authorization: Bearer`` and the call's identity in
``x-scenebench-call`` (:mod:`runner.world.provider_api`), so that the provider's keyed draws
are the model's. There is no OpenMAIC route in between.

Every decision is the machines' (:class:`sim.run_machine.RunMachine`,
:class:`sim.run_server.ServerMachine`, built by :class:`sim.runs_world.RunsWorld`'s constructor
exactly as the model builds them) and the provider's; this module only waits and feeds:

* an instant's events (answers, retry timers, server timers, arrivals) are fed in rounds, as
  ``docs/runs.md`` says: the run machines (ascending run), then the server (with the ends the
  runs released); a claim is an event of the next round; the round's requests go out after its
  feeds, and the provider decides same-instant arrivals on a limited key together, in
  :func:`sim.provider.arrival_order`; an answer that comes at once (a 429) is an event of the
  next round;
* under the virtual clock (looptime) "the end of an instant" is when the event loop has nothing
  else to do at that virtual time (:class:`_Idle`); at most one piece of end-of-instant work
  runs per idle moment, the provider's batch first, then the deadlines that fell due, then a
  round of the driver. So an answer arriving exactly at its deadline is in time;
* a deadline is a real client-side timeout: an LLM request past it is cancelled (its HTTP
  request aborted; the provider frees the slot or not, ``RunsSettings.free_on_give_up`` as the
  quota's ``disconnect_frees``); a narration clip is only given up on, its request runs on
  (upstream never hands the abort signal to TTS). A pause's :class:`~sim.run_machine.Cancel`
  aborts the same way.

The wall clock (uvicorn on 127.0.0.1 in its own process, time compressed by ``time_scale``)
runs the same driver with rounds as soon as events come (exact ties do not happen there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import io
import itertools
import json
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.draws import KIND_FAULT
from sim.errors import UserError
from sim.provider import RESET, TRUNCATED
from sim.rules import ClockKind, Step
from sim.run_machine import (
    Answer,
    Cancel,
    Claimed,
    Released,
    ReqId,
    RunEvent,
    Send,
    SetTimer,
    Timer,
)
from sim.run_server import Claim, Ended, Refuse, ServerEvent, SetServerTimer
from sim.runs import RunOutcome, RunsResult, run_outcome
from sim.runs_config import RunsConfig
from sim.runs_world import CANCELLED, Item, RunProvider, RunsWorld
from sim.scenario import Scenario
from sim.upstream import RUNS

from .fake_provider import ChildServer, ServerThread, create_app
from .provider_api import CALL_HEADER
from .run import _in_virtual_world, frozen_gc
from .wire import SENT_HEADER

__all__ = ["PortRun", "port_scenario", "run_runs_real", "runs_app"]

CHAT_PATH = "/v1/chat/completions"
SPEECH_PATH = "/v1/audio/speech"
IMAGE_PATH = "/v1/images/generations"
_PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
STEP_NAMES = {
    Step.CONTENT: "content",
    Step.ACTIONS: "actions",
    Step.TTS: "tts",
    Step.OUTLINE: "outline",
    Step.AGENTS: "agents",
    Step.MEDIA: "media",
}
# end-of-instant work, first first: the provider's batch, the deadlines due, a driver round
PRIO_PROVIDER, PRIO_DEADLINE, PRIO_ROUND = 0, 1, 2


def port_scenario(sc: Scenario, cfg: RunsConfig) -> Scenario:
    """The scenario the fake provider serves for a runs cell: the ``runs`` profile (its
    content-first arrival order) and, with ``free_on_give_up``, an LLM key that frees a
    request's slot when its client goes away (a clip's never does: upstream keeps it)."""
    if sc.client.upstream != RUNS.upstream:
        sc = sc.replace(client=RUNS)
    llm = dataclasses.replace(sc.quota_llm, disconnect_frees=cfg.settings.free_on_give_up)
    return sc.replace(quota_llm=llm, quota_tts=dataclasses.replace(sc.quota_tts))


def runs_app(
    sc: Scenario, cfg: RunsConfig, seed: int, *, virtual: bool = True, time_scale: float = 1.0
) -> Any:
    """The fake provider for a runs cell: the Starlette app with a
    :class:`~sim.runs_world.RunProvider` (its draws know the outline and the agents)."""
    psc = port_scenario(sc, cfg)
    app = create_app(psc, seed, virtual=virtual, time_scale=time_scale, keep_log=True)
    fake = app.state.fake
    fake.provider = RunProvider(psc, cfg.settings, seed, keep_log=True, max_log=1_000_000)
    app.router.routes.append(Route(IMAGE_PATH, images, methods=["POST"]))
    return app


async def images(request: Request) -> Response:
    """``POST /v1/images/generations`` (OpenAI-shaped) for a run's media lane: the item's keyed
    latency and failure (``RunsSettings.media``, ``media_p_fail``), no key admission: the image
    provider's limits are not modelled (``docs/runs.md``). Keyed by ``x-scenebench-call``
    ``media/<classroom>/<item>/0/<attempt>``."""
    fake = request.app.state.fake
    await request.body()
    parts = request.headers.get(CALL_HEADER, "").split("/")
    if len(parts) != 5 or parts[0] != "media" or not all(x.isdigit() for x in parts[1:]):
        err = {"message": f"{CALL_HEADER}: media/<classroom>/<item>/0/<attempt>"}
        return JSONResponse({"error": {**err, "type": "invalid_request_error"}}, 400)
    cid, item, clip, attempt = (int(x) for x in parts[1:])
    d, row = fake.provider.draws_for(cid)
    col = d.column(Step.MEDIA, item, clip)
    lat = int(d.latency_us(Step.MEDIA, attempt)[row, col])
    u = float(d.fault_u(Step.MEDIA, attempt, KIND_FAULT)[row, col])
    await asyncio.sleep(lat / 1e6 * fake.time_scale)
    if u < fake.provider.settings.media_p_fail:
        err = {"message": "image generation failed", "type": "server_error"}
        return JSONResponse({"error": err}, 500)
    return JSONResponse({"created": 1767225600, "data": [{"b64_json": _PIXEL}]})


class _Idle:
    """End-of-instant work on a looptime loop: a job runs when the loop has nothing else left
    at this virtual instant, one job per idle moment, the lowest priority number first. It
    also takes over the fake provider's own probe (one probe in the loop, never two that wait
    for each other)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.scheduled = False

    def add(self, prio: int, fn: Callable[[], None]) -> None:
        heapq.heappush(self.jobs, (prio, next(self.seq), fn))
        self._arm()

    def _arm(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._probe)

    def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        scheduled = getattr(loop, "_scheduled", None)
        if ready or (scheduled and scheduled[0].when() <= loop.time()):
            loop.call_soon(self._probe)
            return
        self.scheduled = False
        _, _, fn = heapq.heappop(self.jobs)
        fn()
        if self.jobs:
            self._arm()


@dataclass
class _Flight:
    """A request on its way: its task, when it was sent, its deadline's timer."""

    send: Send
    task: asyncio.Task[tuple[int, int]]
    t_us: int
    deadline: asyncio.TimerHandle | None = None


@dataclass
class PortRun:
    """What the real world gives back for a cell: the records, the client's request log (the
    model's :attr:`sim.runs.RunsResult.log` rows) and the provider's own log rows."""

    result: RunsResult
    provider_log: list[tuple[Any, ...]] = field(default_factory=list)


class RunsPort:
    """One deployment of runs driven over HTTP (see the module docstring)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        sc: Scenario,
        cfg: RunsConfig,
        seed: int,
        *,
        virtual: bool,
        time_scale: float = 1.0,
    ) -> None:
        self.client = client
        self.virtual = virtual
        self.scale = 1.0 if virtual else time_scale
        self.t0 = 0.0
        self.arrivals: list[tuple[int, Item]] = []
        # the machines, the server and the arrivals as the model builds them; its provider
        # serves only the client's keyed draws here (clips, jitter, playback)
        self.world = RunsWorld(sc, cfg, seed, lambda at, item: self.arrivals.append((at, item)))
        self.idle = _Idle()
        self.pending: list[Item] = []
        self.round_queued = False
        self.flight: dict[ReqId, _Flight] = {}
        self.detached: set[asyncio.Task[tuple[int, int]]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.log: list[tuple[int, ...]] = []
        self.left = len(self.world.machines)
        self.done: asyncio.Future[None] | None = None

    # -- clock ---------------------------------------------------------------------------
    def now_us(self) -> int:
        return round((asyncio.get_running_loop().time() - self.t0) / self.scale * 1e6)

    def _call_at(self, at_us: int, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """A timer at model µs ``at_us``; kept (to be cancelled at the end) until it fires."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.timers.discard(h)
            fn()

        h = loop.call_at(self.t0 + at_us / 1e6 * self.scale, fire)
        self.timers.add(h)
        return h

    # -- the run -------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        self.done = loop.create_future()
        for at, item in self.arrivals:
            self._schedule(at, item)
        try:
            await self.done
        finally:
            for h in self.timers:
                h.cancel()
            for f in self.flight.values():
                f.task.cancel()
            for t in self.detached:
                t.cancel()
            await asyncio.gather(
                *(f.task for f in self.flight.values()), *self.detached, return_exceptions=True
            )

    def hook_provider(self, fake: Any) -> None:
        """Make the in-process fake provider's same-instant batch an end-of-instant job."""
        fake._probe = lambda: self.idle.add(PRIO_PROVIDER, fake.__class__._probe.__get__(fake))

    def _schedule(self, at_us: int, item: Item) -> None:
        def fire() -> None:
            self.pending.append(item)
            self._want_round()

        self._call_at(at_us, fire)

    def _want_round(self) -> None:
        if self.round_queued:
            return
        self.round_queued = True
        if self.virtual:
            self.idle.add(PRIO_ROUND, self._round)
        else:
            asyncio.get_running_loop().call_soon(self._round)

    def _round(self) -> None:
        """One round of the current instant (``docs/runs.md``, "Order at equal times")."""
        self.round_queued = False
        t = self.now_us()
        cur, self.pending = self.pending, []
        per_run: dict[int, list[RunEvent]] = {}
        srv: list[ServerEvent] = []
        w = self.world
        for kind, r, ev in cur:
            if kind == "srv":
                srv.append(ev)
            elif kind == "gate":  # an outline's expiry at its gate, or a hold's end
                if ev is not None and w.gates is not None and w.gates.expire(ev):
                    per_run.setdefault(r, []).append(Answer(ev, 504, 0))
            else:
                per_run.setdefault(r, []).append(ev)
        if w.gates is not None:  # the answers tell their gates, in canonical order
            ended = sorted(
                (ev.req, ev.status, ev.provider_status)
                for evs in per_run.values()
                for ev in evs
                if isinstance(ev, Answer)
            )
            for req, status, pstatus in ended:
                w.gates.ended(t, req, status, pstatus)
        sends: list[Send] = []
        for r in sorted(per_run):
            for cmd in w.machines[r].feed(t, per_run[r]):
                if isinstance(cmd, Send):
                    sends.append(cmd)
                elif isinstance(cmd, SetTimer):
                    self._later(t, cmd.at_us, ("run", r, Timer(cmd.tag)))
                elif isinstance(cmd, Cancel):
                    if w.gates is None or not w.gates.cancel(cmd.req):
                        self._abort(cmd.req, t, CANCELLED)
                elif isinstance(cmd, Released):
                    srv.append(Ended(r, cmd.phase))
                    if w.machines[r].finished:
                        self.left -= 1
        if srv:
            for sc in w.server.feed(t, srv):
                if isinstance(sc, Claim):
                    self._later(t, t, ("run", sc.run, Claimed(sc.run)))
                elif isinstance(sc, Refuse) and not sc.confirm:
                    w.refused.add(sc.run)
                    self.left -= 1
                elif isinstance(sc, SetServerTimer):
                    self._later(t, sc.at_us, ("srv", sc.tag.run, sc.tag))
        sends.sort(key=lambda s: s.req)
        for send in self._through_gates(t, sends) if w.gates is not None else sends:
            self._send(t, send)
        done = self.done
        if self.left == 0 and not self.flight and done is not None and not done.done():
            done.set_result(None)

    def _through_gates(self, t: int, sends: list[Send]) -> list[Send]:
        """The key-wide gates (:mod:`sim.run_gate`), as the model passes its requests
        through them (:meth:`sim.runs_world.RunsWorld._through_gates`)."""
        gates = self.world.gates
        assert gates is not None
        for send in sends:
            q = send.req
            expiry = gates.offer(t, q, send.key, send.deadline_us)
            if expiry is not None:
                self._later(t, expiry, ("gate", q.run, q))
        admitted, wakes = gates.pump(t)
        for at in wakes:
            self._schedule(at, ("gate", -1, None))
        out = [Send(ReqId(*a.req), a.key, a.deadline_us, t) for a in admitted]
        return sorted(out, key=lambda s: s.req)

    def _later(self, t: int, at_us: int, item: Item) -> None:
        if at_us <= t:
            self.pending.append(item)
            self._want_round()
        else:
            self._schedule(at_us, item)

    # -- requests ------------------------------------------------------------------------
    def _send(self, t: int, send: Send) -> None:
        task = asyncio.ensure_future(self._request(send))
        f = _Flight(send, task, t)
        self.flight[send.req] = f
        task.add_done_callback(lambda tk: self._answered(send.req, tk))
        f.deadline = self._call_at(send.deadline_us, lambda: self._deadline(send.req))

    def _deadline(self, req: ReqId) -> None:
        if self.virtual:  # an answer at the deadline itself is in time: decide at the end
            self.idle.add(PRIO_DEADLINE, lambda: self._give_up(req))
        else:
            self._give_up(req)

    def _give_up(self, req: ReqId) -> None:
        t = self.now_us()
        if self._abort(req, t, 504):
            self.pending.append(("run", req.run, Answer(req, 504, 0)))
            self._want_round()

    def _abort(self, req: ReqId, t: int, status: int) -> bool:
        """Stop waiting for ``req`` (a deadline: 504, a pause: cancelled): an LLM request is
        aborted, a clip's runs on unheard. False if it had already been answered."""
        f = self.flight.pop(req, None)
        if f is None:
            return False
        if f.deadline is not None:
            f.deadline.cancel()
            self.timers.discard(f.deadline)
        if req.step == Step.TTS:
            self.detached.add(f.task)
            f.task.add_done_callback(self.detached.discard)
        else:
            f.task.cancel()
        self._log(req, f.t_us, status, 0, t)
        return True

    def _answered(self, req: ReqId, task: asyncio.Task[tuple[int, int]]) -> None:
        f = self.flight.get(req)
        if f is None or f.task is not task or task.cancelled():
            return  # given up on, or aborted: already answered for
        err = task.exception()
        if err is not None:  # a bug of the port: stop, loudly
            if self.done is not None and not self.done.done():
                self.done.set_exception(err)
            return
        del self.flight[req]
        if f.deadline is not None:
            f.deadline.cancel()
            self.timers.discard(f.deadline)
        status, pstatus = task.result()
        self._log(req, f.t_us, status, pstatus, self.now_us())
        self.pending.append(("run", req.run, Answer(req, status, pstatus)))
        self._want_round()

    def _log(self, q: ReqId, t_send: int, status: int, pstatus: int, t_end: int) -> None:
        self.log.append((t_send, q.run, q.step, q.order, q.clip, q.attempt, status, pstatus, t_end))

    async def _request(self, send: Send) -> tuple[int, int]:
        """One attempt over HTTP: (the status the client saw, the provider's) — -1 and
        ``RESET`` for a dropped connection, -1 and ``TRUNCATED`` for a cut or invalid body."""
        q = send.req
        cid = self.world.base + q.run
        name = STEP_NAMES[Step(q.step)]
        headers = {
            "authorization": f"Bearer {send.key}",
            CALL_HEADER: f"{name}/{cid}/{q.order}/{q.clip}/{q.attempt}",
        }
        if not self.virtual:
            headers[SENT_HEADER] = str(time.monotonic_ns())
        if q.step == Step.TTS:
            path, body = SPEECH_PATH, _speech_body(q)
        elif q.step == Step.MEDIA:
            path, body = IMAGE_PATH, {"model": "fake-image", "prompt": f"Figure {q.order}", "n": 1}
        else:
            path, body = CHAT_PATH, _chat_body(self.world.sc, q)
        try:
            resp = await self.client.post(path, json=body, headers=headers)
        except httpx.HTTPError:
            return -1, RESET
        if resp.status_code != 200:
            return resp.status_code, resp.status_code
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != len(resp.content):
            return -1, RESET  # the connection dropped before the declared body
        ok = self._valid(q, resp)
        return (200, 200) if ok else (-1, TRUNCATED)

    def _valid(self, q: ReqId, resp: httpx.Response) -> bool:
        """Whether the answer is one the step accepts (upstream: an invalid answer is a
        statusless failure, retried as 500)."""
        if q.step == Step.TTS:
            return _valid_wav(resp.content)
        if q.step == Step.MEDIA:
            try:
                return bool(resp.json()["data"][0]["b64_json"])
            except (ValueError, KeyError, IndexError, TypeError):
                return False
        try:
            text = resp.json()["choices"][0]["message"]["content"]
            value = json.loads(text) if q.step != Step.CONTENT else text
        except (ValueError, KeyError, IndexError, TypeError):
            return False
        sc = self.world.sc
        if q.step == Step.OUTLINE:
            return isinstance(value, dict) and len(value.get("outlines", ())) == sc.outlines
        if q.step == Step.AGENTS:
            return isinstance(value, dict) and bool(value.get("agents"))
        if q.step == Step.ACTIONS:  # as many speech items as the run's spec has clips
            if not isinstance(value, list):
                return False
            speech = [a for a in value if isinstance(a, dict) and a.get("type") == "text"]
            return len(speech) == self.world.machines[q.run].spec.clips[q.order]
        return isinstance(value, str) and bool(value)

    # -- results -------------------------------------------------------------------------
    def result(self) -> RunsResult:
        w = self.world
        recs: list[RunOutcome] = [run_outcome(w, r, m) for r, m in enumerate(w.machines)]
        return RunsResult(recs, self.log, w.sc, w.cfg, w.seed, "real")


_PROMPTS = {
    "slide": "Write the slide as a JSON object with background and elements.",
    "quiz": "Write the quiz (questionCount 1) as a JSON array with options and analysis.",
}


def _chat_body(sc: Scenario, q: ReqId) -> dict[str, Any]:
    """A chat request whose prompt the fake classifies as the step's (OpenMAIC's templates
    carry these keywords; :func:`runner.world.prompt_replies.classify`)."""
    if q.step == Step.OUTLINE:
        text = f"Plan {sc.outlines} scenes: a JSON object with languageDirective and outlines."
    elif q.step == Step.AGENTS:
        text = 'Generate the classroom\'s "agents": each with a name, role and persona.'
    elif q.step == Step.ACTIONS:
        text = f"Scene {q.order}: the teacher's speech and spotlight actions as a JSON array."
    else:
        text = _PROMPTS.get(sc.scene_type(q.order), f"Scene {q.order}: write its content.")
    return {"model": "fake-llm", "messages": [{"role": "user", "content": text}]}


def _speech_body(q: ReqId) -> dict[str, Any]:
    text = f"Scene {q.order}, line {q.clip + 1}."
    return {"model": "tts-1", "voice": "alloy", "input": text}


def _valid_wav(data: bytes) -> bool:
    """A whole WAV file: its data chunk as long as its header says."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            frames = w.getnframes()
            got = len(w.readframes(frames)) // max(1, w.getsampwidth() * w.getnchannels())
    except (wave.Error, EOFError):
        return False
    return got == frames


def run_runs_real(
    sc: Scenario,
    cfg: RunsConfig,
    seed: int = 0,
    *,
    clock: str = ClockKind.VIRTUAL,
    time_scale: float | None = None,
) -> PortRun:
    """One runs cell in the real world: the fake provider (in process, virtual clock; or on
    127.0.0.1 in its own process, wall clock compressed by ``time_scale``) and the driver."""
    if clock not in (ClockKind.VIRTUAL, ClockKind.WALL):
        raise UserError(f"clock: must be virtual or wall; got {clock!r}")
    if clock == ClockKind.VIRTUAL:
        app = runs_app(sc, cfg, seed)
        fake = app.state.fake

        async def body(cl: httpx.AsyncClient) -> PortRun:
            port = RunsPort(cl, sc, cfg, seed, virtual=True)
            port.hook_provider(fake)
            await port.run()
            return PortRun(port.result(), list(fake.log_rows()))

        out: PortRun = _in_virtual_world(app, body)
        return out
    scale = sc.time_scale if time_scale is None else time_scale
    if not scale > 0:
        raise UserError(f"time_scale: must be > 0, got {scale}")
    with frozen_gc():
        return asyncio.run(_run_wall(sc, cfg, seed, scale))


def _serve_runs_in_child(
    scenario_map: dict[str, Any], cfg: RunsConfig, seed: int, scale: float, conn: Any
) -> None:  # pragma: no cover - runs in the child process
    from sim.scenario import scenario_from_mapping

    from .fake_provider import serve_in_child

    serve_in_child(
        runs_app(scenario_from_mapping(scenario_map), cfg, seed, virtual=False, time_scale=scale),
        conn,
    )


class _RunsServer(ChildServer):
    """The runs cell's fake provider on 127.0.0.1 in its own process (no GIL shared with the
    driver), as :class:`runner.world.fake_provider.ServerProcess` does for classrooms."""

    what = "the runs provider"

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int, scale: float) -> None:
        args = (sc.to_mapping(), cfg, seed, scale)
        super().__init__("runner.world.runs_port", _serve_runs_in_child, args, "scenebench-runs")


async def _run_wall(sc: Scenario, cfg: RunsConfig, seed: int, scale: float) -> PortRun:
    """The provider in its own process, or in a thread where a process may not start one
    (a daemonic worker)."""
    import multiprocessing

    srv: _RunsServer | ServerThread
    if multiprocessing.current_process().daemon:
        srv = ServerThread(runs_app(sc, cfg, seed, virtual=False, time_scale=scale))
    else:
        srv = _RunsServer(sc, cfg, seed, scale)
    with srv:
        epoch = srv.epoch if isinstance(srv, _RunsServer) else srv.app.state.fake.epoch
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=srv.base_url, limits=limits, timeout=None) as cl:
            port = RunsPort(cl, sc, cfg, seed, virtual=False, time_scale=scale)
            await port.run()
            t0_us = round((port.t0 - epoch) / scale * 1e6)
            got = (await cl.get("/api/_scenebench/log")).json()["log"]
            rows = [(*r[:6], r[6] - t0_us, r[7] - t0_us, r[8] - t0_us, *r[9:]) for r in got]
            return PortRun(port.result(), rows)
