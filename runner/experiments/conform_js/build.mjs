// scenebench conform: bundle an OpenMAIC checkout's scene loop for Node with esbuild.
// Written for scenebench (MIT); no upstream code.
//
//   node build.mjs '<json>'   json = {root, entry, outfile, esbuild, also}
//   also = [{file, names}]: named exports of other checkout files to bundle when they exist
//
// Prints one JSON line: {ok, stubbed, auto_stubbed, missing_names, workspace,
// workspace_unresolved, inputs} or {ok: false, error}.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bundleOptions,
  importedNames,
  inRoot,
  isBare,
  isFile,
  loadEsbuild,
  missingNames,
  resolveInstalled,
  runMain,
  splitPath,
  stubExports,
  stubPath,
} from './bundle_util.mjs';
import { workspaceResolver } from './workspace.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const STUB_DIR = join(HERE, 'stubs');

// The one table of stubbed modules: import path -> stub file (in stubs/) and what it does.
// A key ending in '/*' covers the package and every subpath of it. Everything else under '@/'
// is bundled from the checkout as it is, and so are the checkout's workspace packages (their
// TypeScript source, workspace.mjs); a module that cannot be found at all (not in the
// checkout, package not installed) becomes an auto-stub whose names are recorded no-ops, and
// is listed in the report. A run that touches an auto-stubbed name, or a name a stub lacks, is
// a harness error (the driver reports it).
export const STUBS = {
  // React hooks for one call outside a component: useRef box, useCallback = the function
  react: 'react.mjs',
  // stage store: stage `sb-<classroom>`, the N outlines, no scenes; records addScene,
  // addFailedOutline and setGenerationStatus with their model time
  '@/lib/store/stage': 'stage-store.mjs',
  // settings store: TTS on (one provider, the TTS key), media off, parallelSceneConcurrency = c
  '@/lib/store/settings': 'settings-store.mjs',
  // model config: the LLM key sent as x-api-key
  '@/lib/utils/model-config': 'model-config.mjs',
  // IndexedDB wrapper (Dexie): every table accepts writes, reads nothing
  '@/lib/utils/database': 'database.mjs',
  // media orchestrator and asset pool: nothing to generate or store
  '@/lib/media/media-orchestrator': 'media.mjs',
  '@/lib/media/commit-to-pool': 'media.mjs',
  '@/lib/media/asset-pool': 'media.mjs',
  // voice registries: the settings' provider and voice as they are, no agent binding
  '@/lib/audio/voice-map': 'voices.mjs',
  '@/lib/audio/voice-resolver': 'voices.mjs',
  '@/lib/audio/agent-voice': 'voices.mjs',
  '@/lib/audio/unavailable-voice-bindings': 'voices.mjs',
  // provider enablement: the TTS provider is enabled
  '@/lib/audio/provider-enablement': 'voices.mjs',
  // agent registry: no agents
  '@/lib/orchestration/registry/store': 'agents.mjs',
  // regen lock: never locked; generation permission: granted; persistence: browser-only;
  // audio duration: unknown; i18n: the key itself
  '@/lib/edit/regen-lock': 'misc.mjs',
  '@/lib/classroom/generation-permission': 'misc.mjs',
  '@/lib/persistence/media-persistence': 'misc.mjs',
  '@/lib/audio/audio-duration': 'misc.mjs',
  '@/lib/i18n': 'misc.mjs',
  '@/lib/hooks/use-i18n': 'misc.mjs',
  // storage package (persistence: IndexedDB, HTTP, PostgreSQL), every subpath: nothing
  '@openmaic/storage/*': 'storage.mjs',
  // logger: silent, warnings recorded
  '@/lib/logger': 'logger.mjs',
  // toasts (sonner): recorded, never shown
  sonner: 'toast.mjs',
  // the route probe (routes.mjs): the AI SDK's error classes, Next.js's JSON response
  ai: 'ai.mjs',
  'next/server': 'next-server.mjs',
};

// how an '@/' path finds its file: these extensions, then these index files
const SUFFIXES = ['', '.ts', '.tsx', '.mts', '.js', '.mjs', '.jsx', '/index.ts', '/index.tsx', '/index.js'];
// assets a loop module might import: bundled as empty modules
const ASSETS = ['.svg', '.png', '.jpg', '.css', '.woff2'];

// The STUBS key that covers an import path, or null.
function stubKey(spec) {
  if (Object.hasOwn(STUBS, spec)) return spec;
  for (const key of Object.keys(STUBS)) {
    if (!key.endsWith('/*')) continue;
    const pkg = key.slice(0, -2);
    if (spec === pkg || spec.startsWith(`${pkg}/`)) return key;
  }
  return null;
}

const AUTO = JSON.stringify(join(STUB_DIR, '_auto.mjs'));

// A stubbed module as its importer sees it: the stub's names, plus a recorded no-op for each
// name the importer wants that the stub lacks (reported as missing_names).
function loadStub(path, missing) {
  const [spec, want] = splitPath(path);
  const stub = STUBS[stubKey(spec)];
  const file = JSON.stringify(join(STUB_DIR, stub));
  const have = stubExports(join(STUB_DIR, stub));
  const lines = [`import { unstubbed } from ${AUTO};`];
  const present = want.names.filter((n) => have.names.has(n));
  if (present.length) lines.push(`export { ${present.join(', ')} } from ${file};`);
  for (const n of want.names.filter((n) => !have.names.has(n))) {
    missing.add(spec, n);
    lines.push(`export const ${n} = unstubbed(${JSON.stringify(`${spec}:${n}`)});`);
  }
  if (want.wantsDefault) {
    lines.push(
      have.hasDefault
        ? `export { default } from ${file};`
        : `export default unstubbed(${JSON.stringify(spec)});`,
    );
  }
  return { contents: lines.join('\n'), loader: 'js', resolveDir: STUB_DIR };
}

// A module that cannot be found: every name its importer wants is a recorded no-op.
function loadAuto(path) {
  const [spec, want] = splitPath(path);
  const lines = [`import { unstubbed } from ${AUTO};`];
  for (const n of want.names) {
    lines.push(`export const ${n} = unstubbed(${JSON.stringify(`${spec}:${n}`)});`);
  }
  lines.push(`export default unstubbed(${JSON.stringify(spec)});`);
  return { contents: lines.join('\n'), loader: 'js', resolveDir: STUB_DIR };
}

function autoStub(spec, args, report) {
  report.auto.add(spec);
  const want = importedNames(args.importer, spec);
  return { path: stubPath(spec, want), namespace: 'sb-auto' };
}

function scenebenchPlugin(root, report, workspace) {
  const missing = missingNames();
  return {
    name: 'scenebench-conform',
    setup(build) {
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData?.sbInner) return undefined;
        const spec = args.path;
        const key = stubKey(spec);
        if (key) {
          report.stubbed.add(spec);
          const want = importedNames(args.importer, spec);
          return { path: stubPath(spec, want), namespace: 'sb-stub' };
        }
        if (spec.startsWith('@/')) {
          const file = inRoot(root, spec.slice(2), SUFFIXES);
          return file ? { path: file } : autoStub(spec, args, report);
        }
        if (!isBare(spec)) return undefined;
        // a workspace package of the checkout: its TypeScript source
        const ws = workspace.resolveSpec(spec);
        if (ws?.file) return { path: ws.file, sideEffects: ws.sideEffects ? undefined : false };
        // another package: as the checkout would resolve it, else an auto-stub
        const r = await resolveInstalled(build, spec, args);
        if (!r) return autoStub(spec, args, report);
        const { path, external, sideEffects, namespace } = r;
        return { path, external, sideEffects, namespace };
      });
      build.onLoad({ filter: /.*/, namespace: 'sb-stub' }, (args) => loadStub(args.path, missing));
      build.onLoad({ filter: /.*/, namespace: 'sb-auto' }, (args) => loadAuto(args.path));
      build.onEnd(() => {
        report.missing = missing.sorted();
      });
    },
  };
}

const ENTRY_NAME = 'scenebench-entry.ts';

// The bundle's entry: the scene loop module, plus the named exports of `cfg.also` files that
// exist in the checkout (the generation-preview page's foreground retry options).
function entrySource(root, cfg) {
  const lines = [`export * from ${JSON.stringify(`./${cfg.entry}`)};`];
  for (const { file, names } of cfg.also ?? []) {
    if (isFile(join(root, file))) {
      lines.push(`export { ${names.join(', ')} } from ${JSON.stringify(`./${file}`)};`);
    }
  }
  return lines.join('\n');
}

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const esbuild = loadEsbuild(cfg);
  const root = resolve(cfg.root);
  const report = { stubbed: new Set(), auto: new Set(), missing: {} };
  const workspace = workspaceResolver(root);
  const result = await esbuild.build({
    ...bundleOptions(root, cfg.outfile),
    stdin: { contents: entrySource(root, cfg), resolveDir: root, sourcefile: ENTRY_NAME, loader: 'ts' },
    jsx: 'automatic',
    loader: Object.fromEntries(ASSETS.map((ext) => [ext, 'empty'])),
    plugins: [scenebenchPlugin(root, report, workspace)],
  });
  const inputs = Object.keys(result.metafile.inputs).filter(
    (p) => !p.includes(':') && p !== ENTRY_NAME && !p.startsWith('<'),
  );
  console.log(
    JSON.stringify({
      ok: true,
      stubbed: [...report.stubbed].sort(),
      auto_stubbed: [...report.auto].sort(),
      missing_names: report.missing,
      workspace: workspace.resolved,
      workspace_unresolved: [...workspace.unresolved].sort(),
      inputs: inputs.sort(),
      warnings: result.warnings.map((w) => w.text),
    }),
  );
}

runMain(main);
