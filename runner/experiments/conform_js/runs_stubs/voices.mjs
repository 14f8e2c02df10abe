// Stand-in of the narration voices (run/narration-voice.ts, agent voice options): one voice
// of the TTS slot, narrated on the server. Written for scenebench (MIT); no upstream code.
const VOICE = { providerId: 'openai-tts', voice: 'alloy', speed: 1 };
export function pickNarratorAgent(agents) {
  return agents?.[0];
}
export function resolveServerAgentVoiceOptions() {
  return { ...VOICE };
}
export function voiceBindingKey(...parts) {
  return parts.join(':');
}
export function advertisedVoices() {
  return [VOICE.voice];
}
export function clipProviderConfig() {
  return {};
}
export function clipVoice() {
  return { voice: VOICE.voice, speed: VOICE.speed };
}
export function clipVoiceAfterMissingClone() {
  return { voice: VOICE.voice, speed: VOICE.speed };
}
export function narratorVoiceForGeneration() {
  return { ...VOICE };
}
export function slotVoice() {
  return { ...VOICE };
}
// one clip per speech action (the driver's texts are far below any split length)
export function splitLongSpeechActions(actions) {
  return actions;
}
export const BUILT_IN_AGENTS = {
  'default-1': { id: 'default-1', name: 'Teacher', role: 'teacher', persona: '', isDefault: true },
};
