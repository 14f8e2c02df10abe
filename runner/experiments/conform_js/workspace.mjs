// scenebench conform: resolve a checkout's pnpm (or npm/yarn) workspace packages to their
// TypeScript source, as the checkout's own build would after `pnpm install && pnpm build`.
// Written for scenebench (MIT); no upstream code.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const SOURCE_EXTS = ['.ts', '.tsx', '.mts', '.cts'];
const BUILT_EXT = /(\.d)?\.(m|c)?(j|t)sx?$/;
// export conditions, most source-like first
const CONDITIONS = ['source', 'import', 'module', 'default', 'node', 'require', 'types'];

function isFile(p) {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p) {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** JSON with comments and trailing commas (tsconfig.json) → a value, or null. */
export function readJsonc(path) {
  let src;
  try {
    src = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  let out = '';
  for (let i = 0; i < src.length; i += 1) {
    const ch = src[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j;
    } else if (ch === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n') i += 1;
      out += '\n';
    } else if (ch === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      i = end < 0 ? src.length : end + 1;
    } else out += ch;
  }
  try {
    return JSON.parse(out.replace(/,(\s*[}\]])/g, '$1'));
  } catch {
    return null;
  }
}

/** The `packages:` globs of pnpm-workspace.yaml (a list of strings; nothing else is read). */
export function pnpmGlobs(text) {
  const globs = [];
  let inList = false;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+#.*$/, '').replace(/^#.*$/, '');
    if (!line.trim()) continue;
    if (/^\S/.test(line)) {
      inList = /^packages\s*:\s*$/.test(line);
      const inline = line.match(/^packages\s*:\s*\[(.*)\]\s*$/);
      if (inline) globs.push(...inline[1].split(',').map(unquote).filter(Boolean));
      continue;
    }
    const item = line.match(/^\s+-\s*(.+?)\s*$/);
    if (inList && item) globs.push(unquote(item[1]));
  }
  return globs;
}

function unquote(s) {
  const t = s.trim();
  return /^(['"]).*\1$/.test(t) ? t.slice(1, -1) : t;
}

function workspaceGlobs(root) {
  const yaml = join(root, 'pnpm-workspace.yaml');
  const globs = isFile(yaml) ? pnpmGlobs(readFileSync(yaml, 'utf8')) : [];
  const pkg = readJsonc(join(root, 'package.json'));
  const ws = pkg?.workspaces;
  const more = Array.isArray(ws) ? ws : Array.isArray(ws?.packages) ? ws.packages : [];
  return [...globs, ...more.filter((g) => typeof g === 'string')];
}

// Folders matching a glob of `*` (one level) and `**` (any depth) segments.
function expand(root, glob) {
  let dirs = [root];
  for (const seg of glob.replace(/^\.\//, '').replace(/\/+$/, '').split('/')) {
    const next = [];
    for (const d of dirs) {
      if (seg === '**') next.push(d, ...descendants(d, 6));
      else if (seg.includes('*')) {
        const re = new RegExp(`^${seg.split('*').map(escapeRe).join('[^/]*')}$`);
        next.push(...children(d).filter((c) => re.test(c.slice(d.length + 1))));
      } else if (isDir(join(d, seg))) next.push(join(d, seg));
    }
    dirs = next;
  }
  return dirs;
}

function children(d) {
  try {
    return readdirSync(d, { withFileTypes: true })
      .filter((e) => e.isDirectory() && e.name !== 'node_modules' && !e.name.startsWith('.'))
      .map((e) => join(d, e.name));
  } catch {
    return [];
  }
}

function descendants(d, depth) {
  if (depth === 0) return [];
  return children(d).flatMap((c) => [c, ...descendants(c, depth - 1)]);
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** name -> {dir, pkg} for every workspace package of the checkout (negated globs honoured). */
export function workspacePackages(root) {
  const keep = new Set();
  for (const g of workspaceGlobs(root)) {
    const neg = g.startsWith('!');
    for (const d of expand(root, neg ? g.slice(1) : g)) {
      if (neg) keep.delete(d);
      else keep.add(d);
    }
  }
  const out = new Map();
  for (const dir of [...keep].sort()) {
    const pkg = readJsonc(join(dir, 'package.json'));
    if (pkg && typeof pkg.name === 'string' && dir !== root) out.set(pkg.name, { dir, pkg });
  }
  return out;
}

function pickCondition(v) {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.map(pickCondition).find(Boolean) ?? null;
  if (v && typeof v === 'object') {
    for (const c of CONDITIONS) if (c in v) return pickCondition(v[c]);
  }
  return null;
}

// The file a subpath ('.' or './x') of a package points at, by its exports (else main/module).
function exportTarget(pkg, sub) {
  let ex = pkg.exports;
  if (ex === undefined || ex === null) {
    if (sub !== '.') return sub;
    return pkg.source ?? pkg.module ?? pkg.main ?? './index';
  }
  if (typeof ex === 'string' || Array.isArray(ex) || !Object.keys(ex).some((k) => k.startsWith('.'))) {
    ex = { '.': ex };
  }
  if (Object.hasOwn(ex, sub)) return pickCondition(ex[sub]);
  for (const [key, val] of Object.entries(ex)) {
    const star = key.indexOf('*');
    if (star < 0) continue;
    const pre = key.slice(0, star);
    const post = key.slice(star + 1);
    if (sub.startsWith(pre) && sub.endsWith(post) && sub.length >= pre.length + post.length) {
      const t = pickCondition(val);
      return t ? t.replaceAll('*', sub.slice(pre.length, sub.length - post.length)) : null;
    }
  }
  return null;
}

function withSourceExt(base) {
  for (const ext of SOURCE_EXTS) if (isFile(base + ext)) return base + ext;
  for (const ext of SOURCE_EXTS) if (isFile(join(base, `index${ext}`))) return join(base, `index${ext}`);
  return null;
}

// A built path (dist/x.js, dist/x.d.ts) → its TypeScript source, by the package's tsconfig
// (outDir → rootDir; default dist → src); a target that is already source is kept.
function toSource(dir, target) {
  const rel = target.replace(/^\.\//, '');
  if (SOURCE_EXTS.some((e) => rel.endsWith(e)) && !rel.endsWith('.d.ts') && isFile(join(dir, rel))) {
    return join(dir, rel);
  }
  const opts = readJsonc(join(dir, 'tsconfig.json'))?.compilerOptions ?? {};
  const outDir = String(opts.outDir ?? 'dist').replace(/^\.\//, '').replace(/\/+$/, '');
  const rootDir = String(opts.rootDir ?? 'src').replace(/^\.\//, '').replace(/\/+$/, '');
  const stem = rel.replace(BUILT_EXT, '');
  const bases = [];
  if (stem === outDir || stem.startsWith(`${outDir}/`)) {
    bases.push(join(dir, rootDir, stem.slice(outDir.length)));
  }
  bases.push(join(dir, stem), join(dir, rootDir, stem));
  for (const b of bases) {
    const hit = withSourceExt(b);
    if (hit) return hit;
  }
  return null;
}

/**
 * A resolver for bare specifiers naming a workspace package: spec -> source file, or null
 * (not a workspace package). `unresolved` collects workspace specs without a TS source.
 */
export function workspaceResolver(root) {
  const pkgs = workspacePackages(root);
  const names = [...pkgs.keys()].sort((a, b) => b.length - a.length);
  const resolved = {};
  const unresolved = new Set();
  function resolveSpec(spec) {
    const name = names.find((n) => spec === n || spec.startsWith(`${n}/`));
    if (!name) return null;
    const { dir, pkg } = pkgs.get(name);
    const sub = spec === name ? '.' : `.${spec.slice(name.length)}`;
    const target = exportTarget(pkg, sub);
    const file = target ? toSource(dir, target) : null;
    if (file) resolved[spec] = relative(root, file);
    else unresolved.add(spec);
    return file ? { file, sideEffects: pkg.sideEffects !== false } : { file: null };
  }
  return { packages: pkgs, resolveSpec, resolved, unresolved };
}
