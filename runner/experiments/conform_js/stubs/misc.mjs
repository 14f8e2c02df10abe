// Small stubs: regen lock (never locked), generation permission (always), persistence mode
// (browser-only), audio duration (unknown), i18n (the key itself).
export function isSceneEditLocked() {
  return false;
}
export function mayGenerateForStage() {
  return true;
}
export function isServerBackedMediaPersistence() {
  return false;
}
export function measureAudioDuration() {
  return null;
}
export function getClientTranslation(key) {
  return key;
}
export function useI18n() {
  return { t: (key) => key, locale: 'en-US', setLocale: () => {} };
}
