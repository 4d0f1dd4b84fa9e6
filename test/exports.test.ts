// What operators and VMM authors import: the root is the product, the test tools are behind
// `hugetlb-ras/testing`, the metrics behind `hugetlb-ras/metrics`; the CLI does not load the reference
// VMM (its KVM demo is the VMM's own bin); the package carries its prebuilt binary and bundles what it
// needs at run time, so an offline host installs it (scripts/check-offline-install.sh does that).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const pkg = require('../package.json');

describe('entry points', () => {
  it('the package root exports the product only; the test tools are in hugetlb-ras/testing', () => {
    const root = Object.keys(require('../dist/src/index.js'));
    for (const tool of ['startVcpuLoad', 'fillPattern', 'verifyPattern', 'poisonBackingFile']) expect(root).not.toContain(tool);
    expect(root).toEqual(expect.arrayContaining(['RasEngine', 'Region', 'RasError', 'PoisonError', 'Journal', 'readJournal', 'formatJournal']));
    expect(Object.keys(require('../dist/src/testing/index.js')).sort()).toEqual(['fillPattern', 'poisonBackingFile', 'startVcpuLoad', 'verifyPattern']);
    expect(pkg.exports['./metrics'].default).toBe('./dist/src/metrics/index.js');
    expect(typeof require('../dist/src/metrics/index.js').registerMetrics).toBe('function');
    // prom-client is loaded when metrics are asked for, not by every VMM that loads the engine.
    const r = spawnSync(process.execPath, ['-e', "require('./dist/src/index.js'); console.log(Object.keys(require.cache).some((f) => f.includes('/node_modules/prom-client/')))"], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('false');
  });

  it('resolves as an installed package does (package.json exports)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-exports-'));
    try {
      fs.mkdirSync(path.join(dir, 'node_modules'));
      fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'hugetlb-ras'));
      const r = spawnSync(process.execPath, ['-e', "const m = require('hugetlb-ras/metrics'); const r = require('hugetlb-ras'); const t = require('hugetlb-ras/testing'); console.log(typeof m.registerMetrics, typeof r.startVcpuLoad, typeof t.startVcpuLoad)"], {
        cwd: dir,
        encoding: 'utf8',
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('function undefined function');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the CLI does not load the reference VMM: its KVM demo is the VMM bin, hugetlb-ras-kvm-demo', () => {
    const cli = fs.readFileSync(path.join(ROOT, 'dist/src/cli.js'), 'utf8');
    expect(cli).not.toMatch(/require\([^)]*vmm/);
    const loaded = spawnSync(process.execPath, ['-e', "process.argv = [process.argv[0], 'cli', '--help']; require('./dist/src/cli.js'); process.on('exit', () => { const v = Object.keys(require.cache).filter((f) => f.includes('/dist/vmm/')); if (v.length) { console.error(v.join(' ')); process.exitCode = 3; } })"], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(loaded.stderr).toBe('');
    expect(loaded.status).toBe(0);
    expect(pkg.bin['hugetlb-ras-kvm-demo']).toBe('dist/vmm/src/demo.js');
    expect(fs.readFileSync(path.join(ROOT, 'dist/vmm/src/demo.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
    const kvm = spawnSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), 'demo', '--kvm'], { encoding: 'utf8' });
    expect(kvm.status).toBe(2);
    expect(kvm.stderr).toContain('hugetlb-ras-kvm-demo');
  });
});

describe('install without a compiler or network (the package as packed)', () => {
  it('ships the prebuilt binaries where bindings and the VMM load them, and bundles its run-time dependencies', () => {
    for (const f of ['hugetlb_ras.node', 'hugetlb_ras_bench.node', 'ras_vmm.node', 'ras_vmm_guest.bin', 'prebuilt.json']) expect(pkg.files).toContain(`build/Release/${f}`);
    expect(pkg.scripts.prepack).toBe('node scripts/prebuild.js');
    expect(pkg.bundleDependencies.sort()).toEqual(Object.keys(pkg.dependencies).sort());
    expect(fs.readFileSync(path.join(ROOT, '.ci/run'), 'utf8')).toContain('scripts/check-offline-install.sh');
  });

  it('install.js uses the prebuilt binary only for this platform and these sources, else says why it builds', () => {
    const { whyNotPrebuilt } = require('../scripts/install.js') as { whyNotPrebuilt: (env: object, marker: string) => string | undefined };
    const { sourceHash, FILES } = require('../scripts/native-files.js') as { sourceHash: () => string; FILES: string[] };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-marker-'));
    const marker = path.join(dir, 'prebuilt.json');
    const good = { platform: process.platform, arch: process.arch, napi: 9, sourceHash: sourceHash(), glibc: 'GLIBC_2.34', files: FILES };
    const write = (m: object) => fs.writeFileSync(marker, JSON.stringify(m));
    try {
      expect(whyNotPrebuilt({}, marker)).toMatch(/^no prebuilt binary/);
      write(good);
      expect(whyNotPrebuilt({}, marker)).toBeUndefined(); // this checkout's build loads
      expect(whyNotPrebuilt({ npm_config_build_from_source: 'true' }, marker)).toBe('building from source was asked for');
      expect(whyNotPrebuilt({ HUGETLB_RAS_BUILD_FROM_SOURCE: '1' }, marker)).toBe('building from source was asked for');
      write({ ...good, arch: 'arm64' });
      expect(whyNotPrebuilt({}, marker)).toBe(`the prebuilt binary is for ${process.platform}-arm64, this is ${process.platform}-${process.arch}`);
      write({ ...good, napi: 99 });
      expect(whyNotPrebuilt({}, marker)).toMatch(/needs N-API 99/);
      write({ ...good, sourceHash: '0'.repeat(64) });
      expect(whyNotPrebuilt({}, marker)).toBe('the native sources differ from those the prebuilt binary was built from');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
