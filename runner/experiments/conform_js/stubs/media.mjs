// Stub of the media orchestrator (images/videos run beside the loop): nothing to generate.
export async function generateMediaForOutlines() {}
export async function commitToPool() {
  return { status: 'stored', assetId: '' };
}
