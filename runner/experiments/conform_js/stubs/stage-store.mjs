// Stub of the stage store: the stage, outlines and (no) scenes come from the driver's config;
// addScene, addFailedOutline and setGenerationStatus are recorded with their model time.
import { lenient, makeStore, record, sb } from './_runtime.mjs';

export const useStageStore = makeStore((set, get) => {
  const cfg = sb().config;
  const state = {
    stage: { id: cfg.stageId ?? 'sb-0', name: 'scenebench' },
    outlines: cfg.outlines ?? [],
    scenes: [],
    failedOutlines: [],
    generatingOutlines: [],
    generationStatus: 'idle',
    generationEpoch: 0,
    currentGeneratingOrder: -1,
    generationComplete: false,
    mode: 'autonomous',
    currentSceneId: null,
    addScene(scene) {
      get().scenes = [...get().scenes, scene];
      record('scene', { order: scene?.order ?? -1 });
    },
    addFailedOutline(outline) {
      const cur = get().failedOutlines;
      if (!cur.some((o) => o.id === outline.id)) get().failedOutlines = [...cur, outline];
      record('failed', { order: outline?.order ?? -1 });
    },
    retryFailedOutline(id) {
      get().failedOutlines = get().failedOutlines.filter((o) => o.id !== id);
    },
    setGenerationStatus(status) {
      get().generationStatus = status;
      record('status', { status });
    },
    setGeneratingOutlines(list) {
      get().generatingOutlines = list;
    },
    setCurrentGeneratingOrder(order) {
      get().currentGeneratingOrder = order;
    },
    bumpGenerationEpoch() {
      get().generationEpoch += 1;
    },
    setGenerationComplete(done) {
      get().generationComplete = !!done;
    },
    markGenerationCompleteIfDone() {},
  };
  return lenient(state, 'stageStore');
});
sb().stageStore = useStageStore; // the driver's foreground scene adds through it
export default useStageStore;
// Persistence bookkeeping of the stage (which parts to save): nothing is saved.
export function markStagePersistenceDirty() {}
