#!/usr/bin/env node
// The pack step (`prepack`): builds the addons from source on this machine and marks them as the
// package's prebuilt binaries (build/Release/prebuilt.json: platform, arch, N-API version, the
// sources' fingerprint, the newest glibc symbol version they need). Never committed: build/ is
// ignored, and `npm pack` / `npm publish` run this every time.
// Linked as the source build is (libstdc++ dynamically): on Debian 12 that needs GLIBC_2.34 and
// GLIBCXX_3.4.30. Linking libstdc++ and libgcc in statically was tried: it pulls in arc4random
// (GLIBC_2.36) and _dl_find_object (GLIBC_2.35), a newer floor, so it is not done.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, RELEASE, ADDONS, FILES, MARKER, sourceHash } = require('./native-files');

const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js'), 'rebuild'], { cwd: ROOT, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
for (const f of FILES) if (!fs.existsSync(path.join(RELEASE, f))) throw new Error(`prebuild: build/Release/${f} was not built`);

/** The newest GLIBC_x.y (or GLIBCXX_) symbol version the binaries reference (objdump -T). */
function needs(prefix) {
  const versions = [];
  for (const f of ADDONS) {
    const o = spawnSync('objdump', ['-T', path.join(RELEASE, f)], { encoding: 'utf8' });
    if (o.status !== 0) return 'unknown (no objdump)';
    for (const m of o.stdout.matchAll(new RegExp(`\\(${prefix}_([0-9.]+)\\)`, 'g'))) versions.push(m[1].split('.').map(Number));
  }
  const cmp = (a, b) => { for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0); return 0; };
  versions.sort(cmp);
  return versions.length ? `${prefix}_${versions[versions.length - 1].join('.')}` : 'none';
}

const marker = {
  platform: process.platform,
  arch: process.arch,
  napi: Number(process.versions.napi),
  builtWith: `node ${process.version}`,
  sourceHash: sourceHash(),
  glibc: needs('GLIBC'),
  glibcxx: needs('GLIBCXX'),
  files: FILES,
};
fs.writeFileSync(MARKER, JSON.stringify(marker, null, 2) + '\n');
console.log(`prebuild: ${FILES.join(', ')} for ${marker.platform}-${marker.arch}, N-API ${marker.napi}; needs ${marker.glibc} (libstdc++: ${marker.glibcxx})`);
