// scenebench conform: probe a checkout's LLM-route error mapping (lib/server/llm-error-response.ts,
// since #788) with provider failures, bundled by build.mjs with the 'ai' and 'next/server' stubs.
// Written for scenebench (MIT); no upstream code.
//
//   node routes.mjs '<json>'   json = {bundle, statuses}
//
// Prints one JSON line: {answers: [{provider, wrapped, status, code, retry_after}]} — for each
// provider status (0: a failure without one), the route's answer to the AI SDK's error, bare
// and wrapped in a retry error — or {error}.
import { pathToFileURL } from 'node:url';
import { APICallError, RetryError } from './stubs/ai.mjs';

const cfg = JSON.parse(process.argv[2]);

async function main() {
  const mod = await import(pathToFileURL(cfg.bundle).href);
  if (typeof mod.llmApiError !== 'function') throw new Error('the bundle exports no llmApiError');
  const answers = [];
  for (const provider of cfg.statuses) {
    const err = new APICallError({ statusCode: provider || undefined });
    for (const [wrapped, e] of [[false, err], [true, new RetryError({ errors: [err] })]]) {
      const res = mod.llmApiError(e);
      const headers = Object.keys(res.headers ?? {}).map((h) => h.toLowerCase());
      answers.push({
        provider,
        wrapped,
        status: res.status,
        code: res.body?.errorCode ?? null,
        retry_after: headers.some((h) => h.startsWith('retry-after')),
      });
    }
  }
  process.stdout.write(`${JSON.stringify({ answers })}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(`${JSON.stringify({ error: String(err?.stack ?? err) })}\n`);
    process.exit(1);
  },
);
