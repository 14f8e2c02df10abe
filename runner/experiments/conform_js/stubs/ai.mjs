// Stub of the Vercel AI SDK ('ai') for the route probe (routes.mjs): its two error classes, as
// a provider call's failure reaches a route (an API call error carrying the provider's HTTP
// status, or a retry error wrapping the last one). No model is ever called. Recognised by a
// registered symbol, so that the probe's copy of this module and the bundle's agree.
const API_CALL = Symbol.for('scenebench.ai.APICallError');
const RETRY = Symbol.for('scenebench.ai.RetryError');

export class APICallError extends Error {
  constructor({ message = 'provider call failed', statusCode } = {}) {
    super(message);
    this[API_CALL] = true;
    this.statusCode = statusCode;
  }
  static isInstance(error) {
    return error?.[API_CALL] === true;
  }
}
export class RetryError extends Error {
  constructor({ message = 'retries exhausted', errors = [] } = {}) {
    super(message);
    this[RETRY] = true;
    this.errors = errors;
    this.lastError = errors[errors.length - 1];
  }
  static isInstance(error) {
    return error?.[RETRY] === true;
  }
}
