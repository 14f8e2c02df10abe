// Stub of 'react' for a hook called once outside a component: useRef keeps a box, useCallback
// and useMemo hand back what they are given, useState holds a value, effects do not run.
export function useRef(initial) {
  return { current: initial };
}
export function useCallback(fn) {
  return fn;
}
export function useMemo(factory) {
  return factory();
}
export function useState(initial) {
  let value = typeof initial === 'function' ? initial() : initial;
  const set = (v) => {
    value = typeof v === 'function' ? v(value) : v;
  };
  return [value, set];
}
export function useEffect() {}
export function useLayoutEffect() {}
export function useContext() {
  return undefined;
}
export function useSyncExternalStore(subscribe, getSnapshot) {
  return getSnapshot();
}
export function createContext(value) {
  return { Provider: null, Consumer: null, _value: value };
}
export default {
  useRef,
  useCallback,
  useMemo,
  useState,
  useEffect,
  useLayoutEffect,
  useContext,
  useSyncExternalStore,
  createContext,
};
