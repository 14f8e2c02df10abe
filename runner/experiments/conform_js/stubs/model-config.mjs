// Stub of the model config: one LLM provider whose API key is the driver's LLM key (the fake
// provider's per-key quota is keyed by it).
import { sb } from './_runtime.mjs';

export function getCurrentModelConfig() {
  const cfg = sb().config;
  return {
    providerId: 'openai',
    modelId: 'scenebench-model',
    modelString: 'openai:scenebench-model',
    apiKey: cfg.llmKey ?? 'llm-key',
    baseUrl: '',
    providerType: 'openai',
    requiresApiKey: true,
    isServerConfigured: false,
  };
}
export function buildModelRequestHeaders() {
  const c = getCurrentModelConfig();
  return {
    'Content-Type': 'application/json',
    'x-model': c.modelString,
    'x-api-key': c.apiKey,
    'x-base-url': c.baseUrl,
    'x-provider-type': c.providerType,
  };
}
