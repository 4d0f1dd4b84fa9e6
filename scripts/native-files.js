// The prebuilt binaries the package ships, and the fingerprint of the sources they are built from
// (shared by scripts/prebuild.js, the pack step, and scripts/install.js, the install step).
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const RELEASE = path.join(ROOT, 'build', 'Release');
/** The engine, the demo's reference points, the reference VMM's KVM module and its guest image. */
const ADDONS = ['hugetlb_ras.node', 'hugetlb_ras_bench.node', 'ras_vmm.node'];
const FILES = [...ADDONS, 'ras_vmm_guest.bin'];
const MARKER = path.join(RELEASE, 'prebuilt.json');
const SOURCE_DIRS = ['native', 'include', 'vmm/native', 'vmm/guest'];
const SOURCE_FILES = ['binding.gyp', 'common.gypi'];

function walk(dir, out) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile() && /\.(cc|h|c|S|ld|sh|gyp|gypi)$/.test(e.name)) out.push(p);
  }
  return out;
}

/** sha256 over every native source file (name and content): a prebuilt binary is used only for these sources. */
function sourceHash() {
  const files = [...SOURCE_FILES.map((f) => path.join(ROOT, f)), ...SOURCE_DIRS.flatMap((d) => walk(path.join(ROOT, d), []))];
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(path.relative(ROOT, f) + '\0');
    h.update(fs.readFileSync(f));
    h.update('\0');
  }
  return h.digest('hex');
}

module.exports = { ROOT, RELEASE, ADDONS, FILES, MARKER, sourceHash };
