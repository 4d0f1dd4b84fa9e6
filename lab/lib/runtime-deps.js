'use strict';
// Prints the node_modules folders (relative to the repo root) that the compiled package needs
// at run time: the closure of the bare `require()`s found in dist/ plus their package.json
// dependencies. Always includes bindings and file-uri-to-path (the addon loader).
const fs = require('fs');
const path = require('path');
const { builtinModules } = require('module');

const root = process.argv[2];
const builtins = new Set(builtinModules);
const found = new Set();

function walk(dir, out) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith('.js')) out.push(p);
  }
  return out;
}

function addModule(name, fromDir) {
  if (found.has(name)) return;
  let dir = fromDir;
  let pkgDir = null;
  for (;;) {
    const cand = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(cand, 'package.json'))) { pkgDir = cand; break; }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  if (!pkgDir) { console.error(`runtime-deps: module '${name}' required by dist/ not found in node_modules`); process.exitCode = 1; return; }
  found.add(name);
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  for (const d of Object.keys(pkg.dependencies || {})) addModule(d, pkgDir);
}

const re = /require\((['"])([^'"]+)\1\)/g;
for (const f of walk(path.join(root, 'dist'), [])) {
  const src = fs.readFileSync(f, 'utf8');
  let m;
  while ((m = re.exec(src))) {
    const spec = m[2];
    if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) continue;
    const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
    if (builtins.has(name)) continue;
    addModule(name, root);
  }
}
addModule('bindings', root);
for (const n of [...found].sort()) console.log(path.join('node_modules', n));
