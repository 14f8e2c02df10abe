// scenebench conform: what both bundlers share (build.mjs for the browser loop, runs_build.mjs
// for the run engine): finding checkout files, reading the names an importer takes from a
// module, the names a stub exports, the esbuild options that make a bundle deterministic, and
// the one-JSON-line protocol. Written for scenebench (MIT); no upstream code.
import { readFileSync, statSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';

const IDENT = /^[A-Za-z_$][\w$]*$/;

export function isFile(p) {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

// The checkout file `rel` names (under `root`), trying each of `suffixes` (extensions, index
// files) in order, or null.
export function inRoot(root, rel, suffixes) {
  for (const suffix of suffixes) {
    const p = join(root, rel + suffix);
    if (isFile(p)) return p;
  }
  return null;
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Value names that `importer` takes from `spec` (type-only imports left out), and whether it
// takes the default export. `reexports`: `export … from spec` counts as well as `import`.
export function importedNames(importer, spec, { reexports = true } = {}) {
  let src;
  try {
    src = readFileSync(importer, 'utf8');
  } catch {
    return { names: [], wantsDefault: false };
  }
  src = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const verb = reexports ? '(?:import|export)' : 'import';
  const re = new RegExp(`${verb}\\s+([^;]*?)\\s+from\\s*['"]${escapeRe(spec)}['"]`, 'g');
  const names = new Set();
  let wantsDefault = false;
  for (const m of src.matchAll(re)) {
    const clause = m[1].trim();
    if (/^type\s/.test(clause)) continue;
    const brace = clause.match(/\{([\s\S]*)\}/);
    const head = clause.replace(/\{[\s\S]*\}/, '').replace(/,/g, ' ').trim();
    if (head && !head.startsWith('*')) wantsDefault = true;
    if (!brace) continue;
    for (let part of brace[1].split(',')) {
      part = part.trim();
      if (!part || /^type\s/.test(part)) continue;
      const name = part.split(/\s+as\s+/)[0].trim();
      if (name === 'default') wantsDefault = true;
      else if (IDENT.test(name)) names.add(name);
    }
  }
  return { names: [...names].sort(), wantsDefault };
}

// The names a stub file declares as exports, and whether it has a default export.
export function stubExports(path) {
  const src = readFileSync(path, 'utf8');
  const decl = /^export\s+(?:async\s+)?(?:function|const|let|class)\s+([\w$]+)/gm;
  return {
    names: new Set([...src.matchAll(decl)].map((m) => m[1])),
    hasDefault: /^export default /m.test(src),
  };
}

// A package name (not a path, not a Node built-in).
export function isBare(spec) {
  if (spec.startsWith('.') || isAbsolute(spec) || spec.startsWith('node:')) return false;
  return !builtinModules.includes(spec.split('/')[0]);
}

// A package as esbuild would resolve it from the importer without the plugin (the checkout's
// node_modules), or null when it cannot be found. The plugin's own resolver skips the inner
// call (pluginData.sbInner).
export async function resolveInstalled(build, spec, args) {
  const r = await build.resolve(spec, {
    kind: args.kind,
    importer: args.importer,
    resolveDir: args.resolveDir,
    pluginData: { sbInner: true },
  });
  return r.errors.length > 0 ? null : r;
}

// A stub's esbuild path carries its import path and what the importer wants: `spec|<json>`.
export function stubPath(spec, want) {
  return `${spec}|${JSON.stringify(want)}`;
}

export function splitPath(path) {
  const cut = path.indexOf('|');
  return [path.slice(0, cut), JSON.parse(path.slice(cut + 1))];
}

// Records each name a stub lacks (module -> names); `sorted()` is the report's missing_names.
export function missingNames() {
  const byModule = new Map();
  return {
    add(label, name) {
      if (!byModule.has(label)) byModule.set(label, new Set());
      byModule.get(label).add(name);
    },
    sorted() {
      return Object.fromEntries([...byModule].map(([k, v]) => [k, [...v].sort()]));
    },
  };
}

// esbuild from scenebench's cache folder (cfg.esbuild).
export function loadEsbuild(cfg) {
  const require = createRequire(join(resolve(cfg.esbuild), 'package.json'));
  return require(resolve(cfg.esbuild));
}

// The options both bundles share: one ESM file for Node, written with its metafile, and the
// determinism hooks — every setTimeout delay and every Math.random of the bundled code go
// through the driver (scaled delay, pinned value).
export function bundleOptions(root, outfile) {
  return {
    absWorkingDir: root,
    outfile: resolve(outfile),
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node18',
    write: true,
    metafile: true,
    logLevel: 'silent',
    tsconfigRaw: { compilerOptions: {} },
    define: {
      setTimeout: 'globalThis.__sbSetTimeout',
      'Math.random': 'globalThis.__sbRandom',
      'process.env.NODE_ENV': '"production"',
    },
  };
}

// Run a bundler's main: its one JSON line, or {ok: false, error} (esbuild's errors with their
// places) and exit status 1.
export function runMain(main) {
  main().catch((err) => {
    const where = (e) => (e.location ? `${e.location.file}:${e.location.line}: ` : '');
    const errors = err?.errors?.map((e) => `${where(e)}${e.text}`);
    const error = errors?.length ? errors.join('; ') : String(err?.message ?? err);
    console.log(JSON.stringify({ ok: false, error }));
    process.exit(1);
  });
}
