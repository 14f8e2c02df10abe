// Stand-in of the host hooks (generation-run-hooks, run/hook-events): none registered, an
// execution runs as it is. Written for scenebench (MIT); no upstream code.
export function getGenerationRunHooks() {
  return {};
}
export async function runGenerationExecution(_ctx, fn) {
  return { ran: true, value: await fn() };
}
export function classifyHostFailure() {
  return null;
}
export function isNonRetryableHostFailure() {
  return false;
}
export function reportCommittedRunEvents() {}
