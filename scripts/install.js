#!/usr/bin/env node
// The install step: uses the prebuilt binaries the package carries (build/Release, where `bindings`
// and the reference VMM look) when they are for this platform and these sources and load here;
// builds from source (node-gyp, scripts/build-native.js) otherwise, or when asked:
// `npm install --build-from-source` or HUGETLB_RAS_BUILD_FROM_SOURCE=1.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, RELEASE, ADDONS, FILES, MARKER, sourceHash } = require('./native-files');

/** Why the prebuilt binary is not used (undefined: it is). `marker`: prebuilt.json (a test passes another). */
function whyNotPrebuilt(env = process.env, marker = MARKER) {
  if (env.npm_config_build_from_source === 'true' || env.HUGETLB_RAS_BUILD_FROM_SOURCE === '1') return 'building from source was asked for';
  if (!fs.existsSync(marker)) return 'no prebuilt binary in this copy (a checkout: build/Release/prebuilt.json is written by the pack step)';
  const m = JSON.parse(fs.readFileSync(marker, 'utf8'));
  if (m.platform !== process.platform || m.arch !== process.arch) return `the prebuilt binary is for ${m.platform}-${m.arch}, this is ${process.platform}-${process.arch}`;
  if (Number(process.versions.napi) < m.napi) return `the prebuilt binary needs N-API ${m.napi}, this Node has ${process.versions.napi}`;
  for (const f of FILES) if (!fs.existsSync(path.join(RELEASE, f))) return `build/Release/${f} is missing`;
  if (m.sourceHash !== sourceHash()) return 'the native sources differ from those the prebuilt binary was built from';
  // Loaded in a child: a binary that cannot load here (an older glibc: it needs ${m.glibc}) must not take npm down.
  for (const f of ADDONS) {
    const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', path.join(RELEASE, f)], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) return `build/Release/${f} does not load here (it needs ${m.glibc}): ${(r.stderr || '').trim().split('\n').find((l) => /Error/.test(l)) ?? `exit ${r.status}`}`;
  }
  return undefined;
}

module.exports = { whyNotPrebuilt };
if (require.main !== module) return;
const why = whyNotPrebuilt();
if (why === undefined) {
  console.log('hugetlb-ras: using the prebuilt binary (build/Release); `npm install --build-from-source` builds it from source');
  process.exit(0);
}
console.log(`hugetlb-ras: building from source: ${why}`);
const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js'), 'rebuild'], { cwd: ROOT, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
