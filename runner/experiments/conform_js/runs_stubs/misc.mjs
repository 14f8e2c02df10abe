// Stand-ins of server-only helpers the run engine calls around a scene: the document's scene
// validation (every scene valid), ids, stored assets, media references. Written for
// scenebench (MIT); no upstream code.
import { sb } from '../stubs/_runtime.mjs';

export function validateAppScene() {
  return { valid: true, errors: [] };
}
export function generateClassroomId() {
  return sb().config.stageId;
}
export async function storeGeneratedAsset() {
  const s = sb();
  s.assets = (s.assets ?? 0) + 1;
  return { status: 'stored', assetId: `sb-asset-${s.assets}` };
}
export function sceneCarriesMediaReference() {
  return false;
}
export function buildVideoManifestFromOutlines() {
  return [];
}
export class ModelConfigurationError extends Error {
  code = 'MODEL_CONFIGURATION';
}
export class WebSearchConfigError extends Error {
  code = 'WEB_SEARCH_CONFIGURATION';
}
