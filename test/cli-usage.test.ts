// Issue 20 #9: the demo's usage errors exit 2 with a message that names the option, before anything
// is mapped; whenIdle takes any timeout (Node clamps timers past 2^31-1 ms to 1 ms).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hugeFile, openEngine } from './helpers';

const ROOT = path.resolve(__dirname, '..');

describe('demo usage errors', () => {
  it.each([
    [['--dir'], /--dir needs a value/],
    [['--threads', 'x'], /--threads is an integer 1\.\.64/],
    [['--threads', '0'], /--threads is an integer 1\.\.64/],
    [['--page-size', '3M'], /--page-size is 2M or 1G/],
    [['--mode'], /--mode is auto, simulate or madvise/],
    [['--bogus'], /unknown option --bogus/],
    [['--kvm'], /hugetlb-ras-kvm-demo/],
  ])('demo %j exits 2 with a message, nothing mapped', (args, msg) => {
    const dir = fs.mkdtempSync('/tmp/hugetlb-ras-usage-');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), 'demo', ...args], {
      cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, HUGETLB_RAS_DIR: dir },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/TypeError/);
    expect(r.stdout).not.toMatch(/region ram0/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('the KVM demo (the reference VMM\'s own command)', () => {
  it.each([
    [['--vcpus', '9'], /--vcpus takes 1\.\.8, not 9/],
    [['--vcpus=x'], /--vcpus takes 1\.\.8, not x/],
    [['--mem-lock', 'always'], /--mem-lock takes on, on-fault or off/],
  ])('%j exits 2 with a message before it opens anything', (args, msg) => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/vmm/src/demo.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe('');
  });
});

describe('whenIdle timeouts', () => {
  it('a timeout past 2^31-1 ms does not reject at once', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('idle-big'), size: 2 << 20 });
    engine.pause();   // a report waits for resume(): not idle
    engine.injectPoison(region, 4096, { mode: 'simulate' });
    let settled: string | undefined;
    engine.whenIdle({ timeoutMs: 2 ** 31 }).then(() => { settled = 'resolved'; }, (e) => { settled = e.code; });
    await new Promise((r) => setTimeout(r, 100));
    expect(settled).toBeUndefined();
    engine.resume();
    await engine.whenIdle({ timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    expect(settled).toBe('resolved');
  });
});
