// Stub of the logger: silent; warnings and errors are recorded (the driver prints their count).
import { record } from './_runtime.mjs';

export function createLogger(name) {
  const at = (level) => (...args) => {
    if (level === 'warn' || level === 'error') {
      record('log', { level, name, message: args.map((a) => String(a?.message ?? a)).join(' ') });
    }
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), log: at('info') };
}
export const logger = createLogger('root');
export default createLogger;
