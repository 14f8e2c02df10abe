// Stand-in of the course document (lib/server/generation/run/document.ts): scenes kept in
// memory; each scene written is recorded as scene_ready with its model time. Written for
// scenebench (MIT); no upstream code.
import { record, sb } from '../stubs/_runtime.mjs';

// The scene among a call's arguments: `firstScene` or `scene` of its one object argument.
function sceneOf(args) {
  const a = args[0];
  if (!a || typeof a !== 'object') return null;
  return a.firstScene ?? a.scene ?? null;
}

// The write and the run's commit are one transaction: the commit (`inTransaction`) first, then
// the scene counts as written.
async function written(args) {
  await args[0]?.inTransaction?.({ scenebench: 'tx' });
  const scene = sceneOf(args);
  const s = sb();
  s.scenes = s.scenes ?? [];
  s.scenes.push(scene);
  record('scene_ready', { order: scene ? scene.order : null, id: scene?.id ?? null });
}

export class RunCourseDeletedError extends Error {}
export async function createRunCourse(...args) {
  if (sceneOf(args)) await written(args);
  return { id: sb().config.stageId };
}
export async function appendRunScene(...args) {
  await written(args);
}
export async function completeRunCourse(arg) {
  await arg?.commit?.({ scenebench: 'tx' });
  record('course_complete');
}
export async function isRunCourseDeleted() {
  return false;
}
export async function loadRunCourse() {
  return { id: sb().config.stageId, scenes: sb().scenes ?? [] };
}
export async function mutateRunScene() {}
export async function touchRunCourseIn() {}
