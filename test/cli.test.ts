// The command line: --help and --version exit 0 and say what there is; the demo says why it simulated
// poison and which guard it uses and why.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

describe('hugetlb-ras (dist/src/cli.js)', () => {
  it('--help exits 0 and describes every option, the modes and HUGETLB_RAS_DIR', () => {
    for (const flag of ['--help', '-h']) {
      const r = cli(flag);
      expect(r.status).toBe(0);
      for (const word of ['demo', 'journal PATH', '--page-size 2M|1G', '--dir DIR', '--threads N', '--mode', 'madvise', 'simulate', 'auto', 'HUGETLB_RAS_DIR', '--version', 'npm run demo --', 'hugetlb-ras-kvm-demo', '--vcpus N', 'status --socket PATH | --journal PATH'])
        expect(r.stdout, word).toContain(word);
    }
    expect(cli('demo', '--help').status).toBe(0);
  });

  it("--version prints the package's version", () => {
    const r = cli('--version');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(require('../package.json').version);
  });

  it('an unknown command exits 2 with the usage', () => {
    const r = cli('bogus');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage:');
  });

  it('the demo says why poison was simulated, which guard it picked and why, and which recovery path ran', () => {
    const r = cli('demo', '--threads', '2');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/poison (simulated because .+|is real: MADV_HWPOISON.*)/);
    expect(r.stdout).toMatch(/guard (uffd|hwpoison|guard): .*'auto'/);
    expect(r.stdout).toMatch(/recovered huge page \d+ on the (lazy path: vCPUs released after .+ whole page in place after|eager path in .+\(not lazy: .+\))/);
  });
});
