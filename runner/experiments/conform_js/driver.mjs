// scenebench conform: run a bundled scene loop (build.mjs) once against the fake provider.
// Written for scenebench (MIT); no upstream code.
//
//   node driver.mjs '<json>'
//   json = {bundle, baseUrl, concurrency, outlines, sceneTypes, classroom, timeScale, random,
//           llmKey, ttsKey, drainS, foreground}
//
// Prints one JSON line: {status, scene_order, scene_ready_s, failed_orders, t0_us, unstubbed,
// ...}, or {error, unstubbed}. `unstubbed` lists the names of auto-stubbed modules (and names
// a stub lacks) that the run touched: a run that touched one is a harness error.
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(process.argv[2]);
const scale = Number(cfg.timeScale);
const realSetTimeout = globalThis.setTimeout;
const realFetch = globalThis.fetch;
let perf0 = performance.now();
let inflight = 0;
let timers = 0;

// Model seconds since the run's start (the provider's clock reading t0_us).
const now = () => (performance.now() - perf0) / 1000 / scale;

// Every setTimeout of the bundle (build.mjs defines it to this): delay x time scale.
globalThis.__sbSetTimeout = (fn, ms, ...args) => {
  timers += 1;
  const delay = Math.max(0, Number(ms) || 0) * scale;
  return realSetTimeout(() => {
    timers -= 1;
    fn(...args);
  }, delay);
};
// Every Math.random of the bundle: one fixed value.
globalThis.__sbRandom = () => cfg.random;

globalThis.fetch = async (input, init = {}) => {
  let url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (url.startsWith('/')) url = cfg.baseUrl + url;
  inflight += 1;
  try {
    return await realFetch(url, init);
  } finally {
    inflight -= 1;
  }
};

const outlines = Array.from({ length: cfg.outlines }, (_, i) => ({
  id: `outline-${i}`,
  type: cfg.sceneTypes[i % cfg.sceneTypes.length],
  title: `Outline ${i + 1}`,
  description: `scenebench outline ${i + 1}`,
  keyPoints: [`point ${i + 1}`],
  order: i,
}));

globalThis.__scenebench = {
  config: {
    concurrency: cfg.concurrency,
    outlines,
    stageId: `sb-${cfg.classroom}`,
    llmKey: cfg.llmKey,
    ttsKey: cfg.ttsKey,
  },
  events: [],
  now,
};

// Before the clock starts: load fetch's lazy parts (a POST with a JSON body) and open a few
// keep-alive connections, so that neither lands on the first requests of the loop.
async function warmUp() {
  const post = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' };
  await realFetch(`${cfg.baseUrl}/api/_scenebench/clock`, post).then((r) => r.arrayBuffer());
  const gets = Array.from({ length: 12 }, () =>
    realFetch(`${cfg.baseUrl}/api/health`).then((r) => r.arrayBuffer()),
  );
  await Promise.all(gets);
}

async function providerNowUs() {
  const r = await realFetch(`${cfg.baseUrl}/api/_scenebench/clock`);
  const data = await r.json();
  return Number(data.now_us);
}

// After the loop returns, queued work (content prefetches, retry sleeps) may still run, as in a
// browser: wait until nothing is in flight or sleeping, for at most drainS model seconds.
async function drain() {
  const until = now() + Number(cfg.drainS ?? 60);
  while ((inflight > 0 || timers > 0) && now() < until) {
    await new Promise((r) => realSetTimeout(r, 5));
  }
}

const STAGE_INFO = { name: 'scenebench', language: 'en-US' };
const FOREGROUND_NEEDS = ['fetchSceneContent', 'fetchSceneActions', 'generateTTSForScene'];

// The generation-preview page's first scene, as the page sequences it (scenebench's own
// sequencing; every call is the checkout's): content → actions → the scene's clips through
// the checkout's generateTTSForScene, each with the page's foreground retry options; then the
// scene is added. Returns false when the page would show its error instead of the classroom.
async function foregroundScene(mod) {
  const missing = FOREGROUND_NEEDS.filter((n) => typeof mod[n] !== 'function');
  if (missing.length) {
    throw new Error(`foreground: the checkout's scene loop exports no ${missing.join(', ')}`);
  }
  const opts = mod.FOREGROUND_SCENE_RETRY_OPTIONS;
  if (opts === undefined) throw new Error('foreground: the checkout has no FOREGROUND_SCENE_RETRY_OPTIONS');
  const { stageStore } = globalThis.__scenebench;
  const { stage, outlines } = stageStore.getState();
  const first = outlines[0];
  const base = { allOutlines: outlines, stageId: stage.id, agents: [] };
  const content = await mod.fetchSceneContent(
    { ...base, outline: first, stageInfo: STAGE_INFO },
    undefined,
    opts,
  );
  let scene = null;
  if (content.success && content.content) {
    const outline = content.effectiveOutline || first;
    const body = { ...base, outline, content: content.content, previousSpeeches: [] };
    const actions = await mod.fetchSceneActions(body, undefined, opts);
    scene = actions.success && actions.scene ? actions.scene : null;
  }
  if (scene) {
    const tts = await mod.generateTTSForScene(scene, undefined, undefined, opts);
    if (!tts.success) scene = null;
  }
  if (!scene) {
    stageStore.getState().addFailedOutline(first);
    stageStore.getState().setGenerationStatus('first_scene_failed');
    return false;
  }
  stageStore.getState().addScene(scene);
  return true;
}

async function main() {
  const mod = await import(pathToFileURL(cfg.bundle).href);
  if (typeof mod.useSceneGenerator !== 'function') {
    throw new Error('the bundle exports no useSceneGenerator');
  }
  const gen = mod.useSceneGenerator({});
  await warmUp();
  const t0Us = await providerNowUs();
  perf0 = performance.now();
  globalThis.__scenebench.running = true;
  const loop = cfg.foreground ? await foregroundScene(mod) : true;
  if (loop) {
    await gen.generateRemaining({ stageInfo: STAGE_INFO, agents: [], userProfile: '' });
  }
  const loopEnd = now();
  await drain();
  const ev = globalThis.__scenebench.events;
  const scenes = ev.filter((e) => e.kind === 'scene');
  const statuses = ev.filter((e) => e.kind === 'status').map((e) => e.status);
  const out = {
    status: statuses.length ? statuses[statuses.length - 1] : null,
    statuses,
    scene_order: scenes.map((e) => e.order),
    scene_ready_s: scenes.map((e) => Math.round(e.t_s * 1000) / 1000),
    failed_orders: ev.filter((e) => e.kind === 'failed').map((e) => e.order),
    loop_end_s: Math.round(loopEnd * 1000) / 1000,
    t0_us: t0Us,
    warnings: ev.filter((e) => e.kind === 'log').length,
    noop_calls: names('noop-call'),
    unstubbed: names('unstubbed'),
    unstubbed_init: names('unstubbed-init'),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function names(kind) {
  const ev = globalThis.__scenebench.events;
  return [...new Set(ev.filter((e) => e.kind === kind).map((e) => e.name))].sort();
}

main().then(
  () => process.exit(0),
  (err) => {
    const error = String(err?.stack ?? err);
    process.stdout.write(`${JSON.stringify({ error, unstubbed: names('unstubbed') })}\n`);
    process.exit(1);
  },
);
