// Stand-in of the run's media lane (run/media.ts): a run with no media items. Written for
// scenebench (MIT); no upstream code.
export const MAX_PLACEMENT_ATTEMPTS = 0;
export const MEDIA_PLACEMENT_FAILED = 'MEDIA_PLACEMENT_FAILED';
export function doneOf() {
  return true;
}
export function endsLane() {
  return true;
}
export function isMediaWork() {
  return false;
}
export function mayGenerate() {
  return false;
}
export function mediaEvent(item) {
  return { type: 'media', item };
}
export async function ownerAssetExists() {
  return true;
}
export function placeInScene(scene) {
  return scene;
}
export async function runMediaLane() {}
export const PERMANENT_MEDIA_FAILURE_CODES = [];
