// Stub of 'sonner' toasts: recorded, never shown.
import { record } from './_runtime.mjs';

const show = (level) => (message) => record('toast', { level, message: String(message) });
export const toast = Object.assign(show('info'), {
  success: show('success'),
  info: show('info'),
  warning: show('warning'),
  error: show('error'),
  message: show('message'),
  dismiss: () => {},
});
export default toast;
