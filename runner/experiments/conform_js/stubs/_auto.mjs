// What an auto-stubbed name is: a recorded no-op (see _runtime.mjs noop()).
export { noop } from './_runtime.mjs';
