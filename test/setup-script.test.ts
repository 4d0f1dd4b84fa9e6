// scripts/setup-hugetlbfs.sh: what it tells a non-root user to run never shrinks a bigger pool; and no
// test reports "skipped" on stderr while counting as passed.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));
const canDrop = process.getuid?.() === 0 && setpriv !== undefined;

function nonRootMessage(): string {
  const dir = path.join(os.tmpdir(), `ras-not-mounted-${process.pid}`);
  const args = ['bash', path.join(ROOT, 'scripts/setup-hugetlbfs.sh')];
  const r =
    process.getuid?.() === 0
      ? spawnSync(setpriv!, ['--reuid=65534', '--regid=65534', '--clear-groups', ...args], { encoding: 'utf8', env: { ...process.env, HUGETLB_RAS_DIR: dir } })
      : spawnSync(args[0], args.slice(1), { encoding: 'utf8', env: { ...process.env, HUGETLB_RAS_DIR: dir } });
  expect(r.status).toBe(1);
  return r.stderr;
}

describe('scripts/setup-hugetlbfs.sh, not as root', () => {
  it.skipIf(process.getuid?.() === 0 && !canDrop)('prints commands that only raise the pool (run as nobody with setpriv when root)', () => {
    const msg = nonRootMessage();
    const raises = msg.split('\n').filter((l) => l.includes('nr_hugepages'));
    expect(raises).toHaveLength(2);
    for (const line of raises) expect(line).not.toMatch(/^\s*echo \d+ >/);
    // Run the printed commands against a fake sysfs: a smaller pool is raised, a bigger one kept.
    const fake = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-fake-sys-'));
    try {
      for (const [before, after] of [
        ['100', '512'],
        ['1024', '1024'],
      ]) {
        fs.mkdirSync(path.join(fake, 'hugepages-2048kB'), { recursive: true });
        fs.writeFileSync(path.join(fake, 'hugepages-2048kB/nr_hugepages'), before);
        const cmd = raises[0].trim().replaceAll('/sys/kernel/mm/hugepages', fake);
        expect(spawnSync('bash', ['-c', cmd]).status).toBe(0);
        expect(fs.readFileSync(path.join(fake, 'hugepages-2048kB/nr_hugepages'), 'utf8').trim()).toBe(after);
      }
    } finally {
      fs.rmSync(fake, { recursive: true, force: true });
    }
  });
});

describe('skipped tests show as skipped', () => {
  it('no test prints "skipped" and passes: they use vitest skip/skipIf', () => {
    const files = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : []));
    const offenders = files(path.join(ROOT, 'test')).filter(
      (f) => f !== __filename && /console\.(warn|error|log)\([^)]*skipp?/i.test(fs.readFileSync(f, 'utf8')),
    );
    expect(offenders).toEqual([]);
  });
});
