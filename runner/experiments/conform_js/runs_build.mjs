// scenebench conform, run-engine era: bundle an OpenMAIC checkout's run engine
// (lib/server/generation/run/engine.ts) for Node with esbuild. Written for scenebench (MIT);
// no upstream code.
//
//   node runs_build.mjs '<json>'   json = {root, entry, outfile, esbuild}
//
// Prints one JSON line: {ok, stubbed, auto_stubbed, missing_names, inputs} or {ok: false, error}.
// The server-only modules the engine reaches (the PostgreSQL run store, the course document,
// the host hooks, ...) are replaced by the in-memory stand-ins in runs_stubs/ (RUN_STUBS below),
// whether the engine imports them as '@/...' or relatively; its own scheduling (retry,
// deadlines, the generate-ahead pool, the plan) is bundled from the checkout as it is. A module
// that cannot be found becomes an auto-stub; a run that touches one of its names, or a name a
// stand-in lacks, is a harness error (runs_driver.mjs reports it).
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bundleOptions,
  importedNames,
  inRoot,
  isBare,
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
const RUN_STUB_DIR = join(HERE, 'runs_stubs');
const AUTO = JSON.stringify(join(HERE, 'stubs', '_auto.mjs'));

// checkout module (path under the root, no extension) or package -> stand-in (runs_stubs/)
export const RUN_STUBS = {
  // the run store (PostgreSQL): one claimed run in memory; commits recorded with their time
  'lib/server/generation/run/store': 'store.mjs',
  // the course document: scenes kept in memory; each written scene is a scene_ready event
  'lib/server/generation/run/document': 'document.mjs',
  // the host's hooks: none registered; an execution runs as it is
  'lib/server/generation/run/hook-events': 'hooks.mjs',
  'lib/server/generation-run-hooks/registry': 'hooks.mjs',
  'lib/server/generation-run-hooks/runtime': 'hooks.mjs',
  // the media lane: no media items
  'lib/server/generation/run/media': 'media.mjs',
  // narration voices: one voice of the TTS slot, narrated on the server
  'lib/server/generation/run/narration-voice': 'voices.mjs',
  'lib/audio/agent-voice-options': 'voices.mjs',
  'lib/audio/unavailable-voice-bindings': 'voices.mjs',
  // the document's scene validation: every generated scene is valid
  'lib/document-store/validators': 'misc.mjs',
  // ids and assets
  'lib/server/classroom-persistence': 'misc.mjs',
  'lib/server/store-generated-asset': 'misc.mjs',
  'lib/media/generated-media-references': 'misc.mjs',
  'lib/media/video-manifest': 'misc.mjs',
  // error classes a failure is classified by (model configuration, web search): never thrown
  'lib/server/model-config/llm': 'misc.mjs',
  'lib/server/web-search-config': 'misc.mjs',
  // media failure codes: media is not modelled (no items)
  'lib/media/media-failure': 'media.mjs',
  // long speeches split for the TTS provider: the driver's speeches are short (one clip each)
  'lib/audio/tts-utils': 'voices.mjs',
  // the built-in agents: one teacher, no voice binding
  'lib/orchestration/registry/built-in': 'voices.mjs',
  // logger: silent, warnings recorded
  'lib/logger': '../stubs/logger.mjs',
  // the storage package (PostgreSQL), every subpath: nothing
  '@openmaic/storage/*': '../stubs/storage.mjs',
};

// how an '@/' path finds its file: these extensions, then these index files
const SUFFIXES = ['', '.ts', '.tsx', '.mts', '.js', '.mjs', '/index.ts', '/index.js'];

// The RUN_STUBS key for an import (a '@/' path, a relative path inside the checkout, a package).
function stubKey(root, spec, importer) {
  let key = spec;
  if (spec.startsWith('@/')) key = spec.slice(2);
  else if (spec.startsWith('.') && importer) {
    key = relative(root, resolve(dirname(importer), spec)).split('\\').join('/');
    key = key.replace(/\.(ts|tsx|mts|js|mjs)$/, '');
  }
  if (Object.hasOwn(RUN_STUBS, key)) return key;
  for (const k of Object.keys(RUN_STUBS)) {
    if (k.endsWith('/*') && (spec === k.slice(0, -2) || spec.startsWith(k.slice(0, -1)))) return k;
  }
  return null;
}

function moduleSource(label, file, want, missing) {
  const lines = [`import { unstubbed } from ${AUTO};`];
  const have = file ? stubExports(join(RUN_STUB_DIR, file)).names : new Set();
  const present = want.filter((n) => have.has(n));
  if (present.length) {
    lines.push(`export { ${present.join(', ')} } from ${JSON.stringify(join(RUN_STUB_DIR, file))};`);
  }
  for (const n of want.filter((n) => !have.has(n))) {
    missing.add(label, n);
    lines.push(`export const ${n} = unstubbed(${JSON.stringify(`${label}:${n}`)});`);
  }
  lines.push(`export default unstubbed(${JSON.stringify(label)});`);
  return { contents: lines.join('\n'), loader: 'js', resolveDir: RUN_STUB_DIR };
}

function plugin(root, report, workspace) {
  const missing = missingNames();
  return {
    name: 'scenebench-runs',
    setup(build) {
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData?.sbInner) return undefined;
        const spec = args.path;
        const key = stubKey(root, spec, args.importer);
        // the names it imports (not re-exports) from the module
        const want = () => importedNames(args.importer, spec, { reexports: false }).names;
        if (key) {
          report.stubbed.add(key);
          return { path: stubPath(key, want()), namespace: 'sb-run-stub' };
        }
        if (spec.startsWith('@/')) {
          const file = inRoot(root, spec.slice(2), SUFFIXES);
          if (file) return { path: file };
          report.auto.add(spec);
          return { path: stubPath(spec, want()), namespace: 'sb-run-auto' };
        }
        if (!isBare(spec)) return undefined;
        const ws = workspace.resolveSpec(spec);
        if (ws?.file) return { path: ws.file };
        const r = await resolveInstalled(build, spec, args);
        if (r) return { path: r.path, external: r.external };
        report.auto.add(spec);
        return { path: stubPath(spec, want()), namespace: 'sb-run-auto' };
      });
      build.onLoad({ filter: /.*/, namespace: 'sb-run-stub' }, (args) => {
        const [key, want] = splitPath(args.path);
        return moduleSource(key, RUN_STUBS[key], want, missing);
      });
      build.onLoad({ filter: /.*/, namespace: 'sb-run-auto' }, (args) => {
        const [spec, want] = splitPath(args.path);
        return moduleSource(spec, null, want, missingNames());
      });
      build.onEnd(() => {
        report.missing = missing.sorted();
      });
    },
  };
}

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const esbuild = loadEsbuild(cfg);
  const root = resolve(cfg.root);
  const report = { stubbed: new Set(), auto: new Set(), missing: {} };
  const workspace = workspaceResolver(root);
  const result = await esbuild.build({
    ...bundleOptions(root, cfg.outfile),
    stdin: {
      contents: `export { executeGenerationRun } from ${JSON.stringify(`./${cfg.entry}`)};`,
      resolveDir: root,
      sourcefile: 'scenebench-runs-entry.ts',
      loader: 'ts',
    },
    loader: { '.svg': 'empty', '.png': 'empty', '.css': 'empty' },
    // CommonJS dependencies of the checkout's packages (the AI SDK's) require Node built-ins
    banner: { js: "import { createRequire as __sbCreateRequire } from 'node:module'; const require = __sbCreateRequire(import.meta.url);" },
    plugins: [plugin(root, report, workspace)],
  });
  const inputs = Object.keys(result.metafile.inputs).filter(
    (p) => !p.includes(':') && !p.includes('|') && !p.startsWith('<') && !p.startsWith('scenebench-'),
  );
  console.log(
    JSON.stringify({
      ok: true,
      stubbed: [...report.stubbed].sort(),
      auto_stubbed: [...report.auto].sort(),
      missing_names: report.missing,
      inputs: inputs.sort(),
    }),
  );
}

runMain(main);
