// `hugetlb-ras status`: a running engine over its status socket, and a journal; table and --json on
// stdout, diagnostics on stderr, exit 0 / 1 / 2.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const ROOT = path.resolve(__dirname, '..');
const GPA = 0x1_0000_0000n;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
const tmpDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-status-'));
  dirs.push(d);
  return d;
};

/** The CLI in a child, asynchronously: this process's engine must answer the socket meanwhile. */
function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'dist/src/cli.js'), ...args], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('hugetlb-ras status', () => {
  it('asks a running engine over its socket: table, --json with the lost frame; the socket goes with the engine (then exit 1)', async () => {
    const dir = tmpDir();
    const sock = path.join(dir, 'ras.sock');
    const journal = path.join(dir, 'ras.journal');
    const engine = openEngine({ statusSocket: sock, journalPath: journal });
    await engine.outputsOpened!.statusServer!.listening();
    expect(fs.statSync(sock).isSocket()).toBe(true);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const region = engine.mapRegion({ name: 'ram0', path: hugeFile('status'), size: 4 * MiB, guestPhysAddr: GPA });
    engine.injectPoison(region, 2 * MiB + 3 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });

    const json = await cli('status', '--socket', sock, '--json');
    expect(json.stderr).toBe('');
    expect(json.status).toBe(0);
    const report = JSON.parse(json.stdout);
    expect(report).toMatchObject({
      source: 'engine',
      pid: process.pid,
      guard: engine.lostPageGuard,
      recoveryPath: engine.stats().recovery.path,
      journal: { path: journal, failedWrites: 0, notDurable: 0, healthy: true },
      regions: [{ name: 'ram0', pageSize: '2M', hugePages: 2, splitHugePages: 1, lostHugePages: 0, lostFrames: 1, lostBytes: SUB }],
      stalePages: [],
    });
    expect(report.reserve).toEqual({ bytes: engine.stats().reserveBytes, targetBytes: engine.stats().reserveTarget });

    const table = await cli('status', '--socket', sock);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^ram0\s+2M\s+2\s+1\s+0\s+1\s+4096$/m);
    expect(table.stdout).toContain(`guard: ${engine.lostPageGuard}`);
    expect(table.stdout).toContain('journal: ' + journal + ': healthy');

    engine.close();
    expect(fs.existsSync(sock)).toBe(false);
    const gone = await cli('status', '--socket', sock);
    expect(gone.status).toBe(1);
    expect(gone.stdout).toBe('');
    expect(gone.stderr).toMatch(/cannot ask the engine at .*ENOENT/);

    // The journal alone says the same loss, and that the split page is stale at the next open.
    const fromJournal = await cli('status', '--journal', journal, '--json');
    expect(fromJournal.status).toBe(0);
    expect(JSON.parse(fromJournal.stdout)).toMatchObject({
      source: 'journal',
      journal: { path: journal, healthy: true, warnings: [] },
      regions: [{ name: 'ram0', pageSize: '2M', lostFrames: 1, lostBytes: SUB }],
      stalePages: [{ region: 'ram0', guestPhysAddr: '0x' + (GPA + BigInt(2 * MiB)).toString(16), size: 2 * MiB }],
    });
  });

  it('usage is exit 2 on stderr; --help and --version exit 0 on stdout; a missing journal is exit 1', async () => {
    for (const args of [[], ['--json'], ['--socket'], ['--socket', 'a', '--journal', 'b'], ['--bogus']]) {
      const r = await cli('status', ...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('usage:');
    }
    const help = await cli('status', '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('exit status: 0');
    const version = await cli('status', '--version');
    expect(version.stdout.trim()).toBe(require('../package.json').version);
    const missing = await cli('status', '--journal', path.join(tmpDir(), 'none'));
    expect(missing.status).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toContain('hugetlb-ras status:');
  });

  it('statusSocket: a path that is not a socket is refused, nothing opened', () => {
    const file = path.join(tmpDir(), 'plain');
    fs.writeFileSync(file, 'keep me');
    expect(() => openEngine({ statusSocket: file })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });
});
