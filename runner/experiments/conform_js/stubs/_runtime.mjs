// scenebench conform: the state the stubs share with the driver (globalThis.__scenebench).
// Written for scenebench (MIT); no upstream code.

export function sb() {
  const g = globalThis;
  if (!g.__scenebench) {
    g.__scenebench = { config: {}, events: [], now: () => 0 };
  }
  return g.__scenebench;
}

export function record(kind, data = {}) {
  const s = sb();
  s.events.push({ kind, t_s: s.now(), ...data });
}

const SKIP = new Set(['then', 'catch', 'finally', 'toJSON', 'constructor', 'prototype']);

/** A callable that does nothing, returns undefined and answers any property with another one. */
export function noop(label) {
  const fn = function () {
    record('noop-call', { name: label });
    return undefined;
  };
  return new Proxy(fn, {
    get(target, prop) {
      if (typeof prop === 'symbol') return target[prop];
      if (SKIP.has(prop)) return undefined;
      return noop(`${label}.${prop}`);
    },
  });
}

/**
 * A name scenebench does not stub (an auto-stubbed module's, or one its stub lacks): a no-op
 * like noop(), but every call or property read is recorded as 'unstubbed' — once the driver
 * has started the run (`running`), a harness error; before it (module initialisation), only
 * listed.
 */
export function unstubbed(label) {
  const touch = (what) => {
    const s = sb();
    record(s.running ? 'unstubbed' : 'unstubbed-init', { name: what });
  };
  const fn = function () {
    touch(label);
    return undefined;
  };
  return new Proxy(fn, {
    get(target, prop) {
      if (typeof prop === 'symbol') return target[prop];
      if (SKIP.has(prop) || prop === '__esModule') return undefined;
      touch(`${label}.${prop}`);
      return unstubbed(`${label}.${prop}`);
    },
  });
}

/** A tiny zustand-like store: callable as a hook, with getState/setState/subscribe. */
export function makeStore(init) {
  let state = null;
  const listeners = new Set();
  const getState = () => {
    if (state === null) state = init(setState, () => state);
    return state;
  };
  const setState = (patch) => {
    const cur = getState();
    const next = typeof patch === 'function' ? patch(cur) : patch;
    Object.assign(cur, next);
    for (const l of listeners) l(cur);
  };
  const hook = (selector) => (selector ? selector(getState()) : getState());
  hook.getState = getState;
  hook.setState = setState;
  hook.subscribe = (l) => {
    listeners.add(l);
    return () => listeners.delete(l);
  };
  return hook;
}

const VERB = /^(set|add|remove|mark|bump|clear|update|retry|reset|append|delete|toggle)[A-Z]/;

/** Unknown action methods (setX, addX, ...) of a stubbed store do nothing but are recorded. */
export function lenient(obj, label) {
  return new Proxy(obj, {
    get(target, prop) {
      if (prop in target || typeof prop === 'symbol') return target[prop];
      if (VERB.test(prop)) return noop(`${label}.${prop}`);
      return undefined;
    },
  });
}
