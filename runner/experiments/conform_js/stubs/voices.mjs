// Stub of the voice map / voice resolver / agent voice: the settings' provider and voice as is,
// no agent binding, no provider options.
export function resolveProvider(_lang, providerId) {
  return providerId;
}
export function resolveVoice(_lang, _role, _providerId, voice) {
  return voice;
}
export function resolveNarratorVoiceBinding(_bound, globalVoice) {
  const { providerId, modelId, voiceId } = globalVoice;
  return { providerId, modelId, voiceId };
}
export function resolveDeterministicFallbackVoice() {
  return null;
}
export function getEnabledProvidersWithVoices() {
  return [];
}
export async function resolveAgentVoiceOptions() {
  return undefined;
}
export function pickNarratorAgent() {
  return undefined;
}
export function isTTSProviderEnabled() {
  return true;
}
export function isVoiceBindingUnavailable() {
  return false;
}
export function markVoiceBindingUnavailable() {}
export function markVoiceBindingNoticeShown() {
  return false;
}
export function voiceBindingKey(v) {
  return `${v?.providerId ?? ''}:${v?.voiceId ?? ''}`;
}
