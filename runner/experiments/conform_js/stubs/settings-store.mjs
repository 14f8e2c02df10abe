// Stub of the settings store: TTS on with one server-side provider keyed by the driver's TTS
// key, media generation off, and parallelSceneConcurrency = the case's c.
import { lenient, makeStore, sb } from './_runtime.mjs';

export const useSettingsStore = makeStore(() => {
  const cfg = sb().config;
  const tts = cfg.ttsProviderId ?? 'openai-tts';
  return lenient(
    {
      parallelSceneConcurrency: cfg.concurrency ?? 0,
      ttsEnabled: true,
      ttsProviderId: tts,
      ttsVoice: 'alloy',
      ttsSpeed: 1,
      ttsProvidersConfig: {
        [tts]: { apiKey: cfg.ttsKey ?? 'tts-key', baseUrl: '', modelId: 'tts-1', enabled: true },
      },
      imageProviderId: '',
      imageModelId: '',
      imageProvidersConfig: {},
      videoProviderId: '',
      videoModelId: '',
      videoProvidersConfig: {},
      imageGenerationEnabled: false,
      videoGenerationEnabled: false,
    },
    'settingsStore',
  );
});
export default useSettingsStore;
