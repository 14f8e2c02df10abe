// Stand-in of the course document (lib/server/generation/run/document.ts): scenes kept in
// memory; each scene written is recorded as scene_ready with its model time. Written for
// scenebench (MIT); no upstream code.
import { record, sb } from '../stubs/_runtime.mjs';

// The scene among a call's arguments: an object with a numeric `order`, or one holding one.
function sceneOf(args) {
  for (const a of args) {
    if (a && typeof a === 'object') {
      if (typeof a.order === 'number') return a;
      for (const v of Object.values(a)) {
        if (v && typeof v === 'object' && typeof v.order === 'number') return v;
      }
    }
  }
  return null;
}

function written(args) {
  const scene = sceneOf(args);
  const s = sb();
  s.scenes = s.scenes ?? [];
  s.scenes.push(scene);
  record('scene_ready', { order: scene ? scene.order : null, id: scene?.id ?? null });
}

export class RunCourseDeletedError extends Error {}
export async function createRunCourse(...args) {
  if (sceneOf(args)) written(args);
  return { id: sb().config.stageId };
}
export async function appendRunScene(...args) {
  written(args);
}
export async function completeRunCourse() {
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
