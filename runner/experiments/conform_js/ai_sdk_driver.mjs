// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, installed by scenebench into its cache folder)
// against the fake provider's OpenAI-compatible endpoint. Usage:
//   node ai_sdk_driver.mjs '{"cache": DIR, "baseURL": URL, "cases": [{key, stream, maxRetries}]}'
// Runs the cases at once (one API key each) and prints one JSON line: per case, whether it
// succeeded, the text length, and the error's name, reason and status code.
import { createRequire } from "node:module";
import { join } from "node:path";

const config = JSON.parse(process.argv[2]);
const require = createRequire(join(config.cache, "package.json"));
const { generateText, streamText } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");

function describe(err) {
  const last = err && err.lastError ? err.lastError : err;
  return {
    name: err && err.name,
    reason: err && err.reason,
    statusCode: last && last.statusCode,
    message: String((err && err.message) || err).slice(0, 300),
  };
}

async function runCase(c) {
  const provider = createOpenAI({ baseURL: config.baseURL, apiKey: c.key });
  const model = provider.chat(c.model || "gpt-4o-mini");
  const args = { model, prompt: "Say hello.", maxRetries: c.maxRetries ?? 2 };
  const t0 = performance.now();
  try {
    let text;
    if (c.stream) {
      let streamError = null;
      const r = streamText({ ...args, onError: ({ error }) => { streamError = error; } });
      text = "";
      for await (const part of r.textStream) text += part;
      if (streamError) throw streamError;
    } else {
      text = (await generateText(args)).text;
    }
    return { key: c.key, ok: true, chars: text.length, ms: performance.now() - t0 };
  } catch (err) {
    return { key: c.key, ok: false, error: describe(err), ms: performance.now() - t0 };
  }
}

const results = await Promise.all(config.cases.map(runCase));
process.stdout.write(JSON.stringify({ results }) + "\n");
