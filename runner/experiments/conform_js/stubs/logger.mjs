// Stub of the logger: silent; warnings and errors are recorded (the driver prints their count).
import { record } from './_runtime.mjs';

export function createLogger(name) {
  const at = (level) => (...args) => {
    if (level === 'warn' || level === 'error') {
      record('log', { level, name, message: args.map((a) => String(a?.message ?? a)).join(' ') });
    }
  };
  const levels = ['debug', 'info', 'warn', 'error'];
  return { ...Object.fromEntries(levels.map((l) => [l, at(l)])), log: at('info') };
}
export const logger = createLogger('root');
export default createLogger;
