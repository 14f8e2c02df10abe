// Stand-in of the run store (lib/server/generation/run/store.ts, PostgreSQL) for conform's
// run-engine driver: one claimed run in memory (globalThis.__scenebench.run), its step
// checkpoints (…steps), every commit recorded with its model time. Written for scenebench
// (MIT); no upstream code.
import { record, sb } from '../stubs/_runtime.mjs';

function apply(change) {
  const s = sb();
  const run = s.run;
  const patch = change?.patch ?? {};
  for (const [k, v] of Object.entries(patch)) {
    if (k !== 'releaseLease') run[k] = v;
  }
  for (const cp of [change?.step, ...(change?.steps ?? [])]) {
    if (cp && cp.id !== undefined) s.steps.set(cp.id, cp.output);
  }
  const events = (change?.events ?? []).map((e) => ({ ...e }));
  record('commit', {
    state: run.state ?? null,
    step: run.step ?? null,
    released: Boolean(patch.releaseLease),
    events: events.map((e) => e.type ?? '?'),
    // a failed step: the engine's `data.step` (a scene skipped while others go on is marked
    // `continuing`)
    failed: events
      .filter((e) => e.type === 'step_failed')
      .map((e) => (e.data?.continuing ? `${e.data.step} (continuing)` : (e.data?.step ?? e.step ?? null))),
  });
  return { ...run };
}

export async function commitGenerationRun(_lease, change) {
  return apply(change);
}
export async function commitGenerationRunIn(_tx, _lease, change) {
  return apply(change);
}
export async function currentOwnerOf(ownerId) {
  return ownerId;
}
export async function fenceGenerationRunWriteIn() {}
export async function hasMediaWorkIn() {
  return false;
}
export function isGenerationRunLeaseLostError() {
  return false;
}
export async function finishMediaOnlyRun() {
  return 'completed';
}
export async function readGenerationRunMedia() {
  return [];
}
export async function readGenerationRunSteps() {
  return new Map(sb().steps);
}
export async function refuseGenerationRunExecution(_lease, failure) {
  apply({ patch: { state: 'paused' }, events: [{ type: 'step_failed', ...failure }] });
  return 'paused';
}
