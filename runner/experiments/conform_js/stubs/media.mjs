// Stub of the media orchestrator (images/videos run beside the loop): nothing to generate.
export async function generateMediaForOutlines() {}
export async function commitToPool() {
  return { status: 'stored', assetId: '' };
}
// Asset pool (#1039): every clip is stored under a fresh id; removal and replacement succeed.
let assets = 0;
export async function putAsset() {
  assets += 1;
  return `sb-asset-${assets}`;
}
export async function replaceAsset() {}
export async function removeAsset() {}
// A scene's completed media reconciled into the stage: nothing to reconcile (media is off).
export function reconcileCompletedMediaForScene(scene, stage) {
  return { scene, stage };
}
