// scenebench conform, run-engine era: execute a bundled run engine (runs_build.mjs) once, from
// its scene phase, against the fake provider's provider-shaped endpoints. Written for
// scenebench (MIT); no upstream code.
//
//   node runs_driver.mjs '<json>'
//   json = {bundle, baseUrl, classroom, clips, concurrency, timeScale, random, llmKey, ttsKey,
//           drainS, input}      clips[i] = scene i's speech clips (the provider's keyed draw)
//
// The run starts claimed, in `generating`, with its outline (one slide per entry of `clips`)
// and its agents already checkpointed: what the engine does from there is its own. The step
// services the engine is handed (ExecuteRunOptions.services, upstream's injection seam) call
// the provider directly, as upstream's services do through the AI SDK:
//   POST /v1/chat/completions  (Bearer llmKey)  content and actions
//   POST /v1/audio/speech      (Bearer ttsKey)  each narration clip, without the abort signal
// each with `x-scenebench-call: <step>/<classroom>/<scene>/<clip>` (no attempt: the provider
// counts attempts per call). A failed call throws an error with the provider's status
// (statusCode, status), as the AI SDK's APICallError carries it.
//
// Prints one JSON line: {outcome, state, step, scene_order, scene_ready_s, failed_steps, t0_us,
// commits, unstubbed, warnings} or {error, unstubbed}.
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(process.argv[2]);
const scale = Number(cfg.timeScale);
const realSetTimeout = globalThis.setTimeout;
const perf0 = { t: performance.now() };
let timers = 0;
let inflight = 0;
const now = () => (performance.now() - perf0.t) / 1000 / scale;

globalThis.__sbSetTimeout = (fn, ms, ...args) => {
  timers += 1;
  return realSetTimeout(
    () => {
      timers -= 1;
      fn(...args);
    },
    Math.max(0, Number(ms) || 0) * scale,
  );
};
globalThis.__sbRandom = () => cfg.random;

const clips = cfg.clips.map(Number);
const cid = Number(cfg.classroom);
const outlines = clips.map((_, i) => ({
  id: `sb-outline-${i}`,
  order: i + 1,
  type: 'slide',
  title: `Scene ${i + 1}`,
  description: 'scenebench',
  keyPoints: ['scenebench'],
}));
const stageId = `sb-${cid}`;
const agentsOut = {
  agents: { agents: [{ id: 'default-1', name: 'Teacher', role: 'teacher', persona: '' }], agentIds: ['default-1'] },
  stage: { id: stageId, name: 'scenebench', description: '' },
};
globalThis.__scenebench = {
  config: { stageId, concurrency: cfg.concurrency },
  events: [],
  now,
  // the claimed run: confirmed outline (outlineReview auto), agents the preset teacher
  run: {
    id: `sb-run-${cid}`,
    ownerId: 'sb-owner',
    state: 'generating',
    step: null,
    stageId: null,
    hostAttributes: {},
    outline: { outlines, languageDirective: 'en-US', taskEngineMode: false },
    input: {
      requirement: 'scenebench conform',
      materialIds: [],
      outlineReview: 'auto',
      agents: { mode: 'preset', agentIds: ['default-1'] },
      interactive: false,
      taskEngine: false,
      ...(cfg.input ?? {}),
    },
  },
  // the steps before the scenes, checkpointed (a run past its outline and agents)
  steps: new Map([
    ['research', { webSearch: false }],
    ['outline', { outlines, languageDirective: 'en-US' }],
    ['agents', agentsOut],
  ]),
};

// ---- the step services: the provider's endpoints ------------------------------------------
class ProviderCallError extends Error {
  constructor(status, body) {
    super(`provider answered HTTP ${status}: ${String(body).slice(0, 200)}`);
    this.name = 'AI_APICallError';
    this.statusCode = status;
    this.status = status;
    this.isRetryable = status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
  }
}

function sceneIndex(input) {
  const o = input?.outline ?? input;
  const byId = outlines.findIndex((x) => x.id === o?.id);
  if (byId >= 0) return byId;
  if (typeof o?.order === 'number') return o.order - 1;
  throw new Error(`scenebench driver: cannot tell the scene of ${JSON.stringify(o).slice(0, 120)}`);
}

async function call(path, key, identity, body, signal) {
  inflight += 1;
  try {
    const r = await fetch(`${cfg.baseUrl}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${key}`,
        'x-scenebench-call': identity,
      },
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
    const data = path.endsWith('speech') ? await r.arrayBuffer() : await r.text();
    if (!r.ok) throw new ProviderCallError(r.status, typeof data === 'string' ? data : '');
    return data;
  } finally {
    inflight -= 1;
  }
}

const chat = (step, i, signal) =>
  call(
    '/v1/chat/completions',
    cfg.llmKey,
    `${step}/${cid}/${i}/0`,
    { model: 'sb-model', messages: [{ role: 'user', content: `scenebench ${step} ${i}` }] },
    signal,
  );

const speechOf = (i, k) => ({ type: 'speech', id: `sb-a${i}-${k}`, text: `scenebench ${i} ${k}` });

const services = {
  async materialKinds(_o, ids) {
    return ids.map(() => 'document');
  },
  async materialsReady() {
    return true;
  },
  async analyzeMaterials() {
    return { text: '', images: [] };
  },
  async research() {
    return null;
  },
  async outline() {
    throw new Error('scenebench driver: the run starts after its outline');
  },
  async agentProfiles() {
    throw new Error('scenebench driver: the run starts after its agents');
  },
  async presetAgents(_o, ids) {
    return ids.map((id) => ({ id, name: id, role: 'teacher', persona: '', avatar: '' }));
  },
  async sceneContent(_o, input, ctx) {
    const i = sceneIndex(input);
    await chat('content', i, ctx?.signal);
    return { content: { type: 'slide', elements: [], background: null }, outline: input.outline };
  },
  async sceneActions(_o, input, ctx) {
    const i = sceneIndex(input);
    await chat('actions', i, ctx?.signal);
    const actions = Array.from({ length: clips[i] }, (_, k) => speechOf(i, k));
    const scene = { id: `sb-scene-${i}`, order: i + 1, type: 'slide', title: `Scene ${i + 1}`, actions };
    return { actions, scene, previousSpeeches: actions.map((a) => a.text) };
  },
  async narrationTarget() {
    return { connection: { providerId: 'openai-tts' }, providerId: 'openai-tts', modelId: 'tts-1' };
  },
  async narrateClip(_o, input) {
    const m = /sb-a(\d+)-(\d+)/.exec(`${input.audioId} ${input.text}`);
    if (!m) throw new Error(`scenebench driver: cannot tell the clip of ${input.audioId}`);
    // upstream hands TTS no abort signal: the request runs on
    await call('/v1/audio/speech', cfg.ttsKey, `tts/${cid}/${m[1]}/${m[2]}`, {
      model: 'tts-1',
      voice: input.voice ?? 'alloy',
      input: input.text,
      response_format: 'wav',
    });
    return `sb-clip-${m[1]}-${m[2]}`;
  },
  async releaseAssets() {},
  async mediaConnections() {
    return { image: { status: 'off' }, video: { status: 'off' } };
  },
  async generateImage() {
    throw new Error('scenebench driver: no media');
  },
  async generateVideo() {
    throw new Error('scenebench driver: no media');
  },
  parallelSceneConcurrency() {
    return Number(cfg.concurrency);
  },
  sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      globalThis.__sbSetTimeout(resolve, ms);
    });
  },
};

// ---- one execution ---------------------------------------------------------------------------
async function providerNowUs() {
  const r = await fetch(`${cfg.baseUrl}/api/_scenebench/clock`);
  return Number((await r.json()).now_us);
}

async function drain() {
  const until = now() + Number(cfg.drainS ?? 60);
  while ((inflight > 0 || timers > 0) && now() < until) {
    await new Promise((r) => realSetTimeout(r, 5));
  }
}

function result(extra) {
  const ev = globalThis.__scenebench.events;
  const uniq = (kind) => [...new Set(ev.filter((e) => e.kind === kind).map((e) => e.name))].sort();
  return {
    unstubbed: uniq('unstubbed'),
    unstubbed_init: uniq('unstubbed-init'),
    warnings: ev.filter((e) => e.kind === 'log').length,
    ...extra,
  };
}

async function main() {
  const mod = await import(pathToFileURL(cfg.bundle).href);
  if (typeof mod.executeGenerationRun !== 'function') {
    throw new Error('the bundled engine exports no executeGenerationRun');
  }
  await Promise.all(Array.from({ length: 8 }, () => fetch(`${cfg.baseUrl}/api/health`).then((r) => r.arrayBuffer())));
  const t0Us = await providerNowUs();
  perf0.t = performance.now();
  const s = globalThis.__scenebench;
  s.running = true;
  const ac = new AbortController();
  const claim = { run: { ...s.run }, lease: { runId: s.run.id, generation: 1 }, takeover: false };
  const outcome = await mod.executeGenerationRun(claim, { services, signal: ac.signal });
  await drain();
  const ready = s.events.filter((e) => e.kind === 'scene_ready');
  const failed = s.events.filter((e) => e.kind === 'commit').flatMap((e) => e.failed);
  console.log(
    JSON.stringify(
      result({
        outcome: String(outcome),
        state: s.run.state ?? null,
        step: s.run.step ?? null,
        scene_order: ready.map((e) => (e.order === null ? null : e.order - 1)),
        scene_ready_s: ready.map((e) => Number(e.t_s.toFixed(3))),
        failed_steps: failed,
        commits: s.events.filter((e) => e.kind === 'commit').length,
        t0_us: t0Us,
      }),
    ),
  );
}

main().catch((err) => {
  console.log(JSON.stringify(result({ error: String(err?.stack ?? err).split('\n').slice(0, 3).join(' | ') })));
  process.exit(1);
});
