// The journal is one engine's at a time, opened safely, and applies only to the memory it was written for.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Journal, RasEngine } from '../src/index';
import { identityLine, lostLine, regionLine } from '../src/ledger/format';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB } from './helpers';

let dir: string;
let journal: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-lock-'));
  journal = path.join(dir, 'ras.journal');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): Error & Record<string, unknown> {
  try {
    fn();
  } catch (e) {
    return e as Error & Record<string, unknown>;
  }
  throw new Error('expected an error');
}

const root = process.getuid?.() === 0;

describe('one engine per journal', () => {
  it('a second engine of this process gets ERR_JOURNAL_LOCKED; after close the journal opens again', () => {
    const a = openEngine({ journalPath: journal });
    expect(errorOf(() => RasEngine.open({ reserveBytes: 0, journalPath: journal }))).toMatchObject({ code: 'ERR_JOURNAL_LOCKED', path: journal, ownerPid: process.pid });
    expect(errorOf(() => Journal.open(journal))).toMatchObject({ code: 'ERR_JOURNAL_LOCKED' });
    a.close();
    expect(fs.existsSync(`${journal}.lock`)).toBe(false);
    openEngine({ journalPath: journal }).close();
  });

  it('an engine of another process gets ERR_JOURNAL_LOCKED while the owner runs; its lock is stale once it died', async () => {
    const child = spawn(process.execPath, ['-e', `
      const { RasEngine } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      console.log('ready');
      setTimeout(() => {}, 30000);
    `], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, J: journal }, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        child.on('exit', () => reject(new Error('child exited')));
      });
      expect(errorOf(() => Journal.open(journal))).toMatchObject({ code: 'ERR_JOURNAL_LOCKED', ownerPid: child.pid });
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    // Killed without closing: the lock file stays, and is stale.
    expect(fs.existsSync(`${journal}.lock`)).toBe(true);
    Journal.open(journal).journal.close();
  });

  it('an engine that fails to open (another JS thread has one) does not keep the journal locked (child)', () => {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const { Worker } = require('worker_threads');
      const e = RasEngine.open();
      const w = new Worker("try { require(process.cwd() + '/dist/src/index.js').RasEngine.open({ journalPath: process.env.J }); console.log('opened') } catch (err) { console.log(err.code) }", { eval: true });
      w.on('exit', () => {
        e.close();
        console.log(require('fs').existsSync(process.env.J + '.lock') ? 'still locked' : 'unlocked');
        RasEngine.open({ journalPath: process.env.J }).close();
        console.log('reopened');
      });
    `, { J: journal });
    expect(r.stdout.trim().split('\n')).toEqual(['ERR_ENGINE_IN_OTHER_THREAD', 'unlocked', 'reopened']);
    expect(r.status).toBe(0);
  });

  it('a lock from another boot, or from a pid that is now another process, is stale', () => {
    fs.writeFileSync(`${journal}.lock`, JSON.stringify({ pid: process.pid, start: '1', boot: 'an-earlier-boot' }) + '\n');
    Journal.open(journal).journal.close();
    fs.writeFileSync(`${journal}.lock`, JSON.stringify({ pid: 1, start: 'not-the-start-time', boot: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() }) + '\n');
    Journal.open(journal).journal.close();
  });
});

describe('journal errors are ERR_JOURNAL_* with the path', () => {
  it('a missing directory', () => {
    const p = path.join(dir, 'no-such-dir', 'j');
    expect(errorOf(() => Journal.open(p))).toMatchObject({ code: 'ERR_JOURNAL_OPEN', path: p, fsCode: 'ENOENT', message: expect.stringContaining('directory does not exist') });
    expect(errorOf(() => RasEngine.open({ journalPath: p }))).toMatchObject({ code: 'ERR_JOURNAL_OPEN' });
  });

  it('a symbolic link is refused (O_NOFOLLOW), and its target is not touched', () => {
    const target = path.join(dir, 'target');
    fs.writeFileSync(target, '', { mode: 0o600 });
    fs.symlinkSync(target, journal);
    expect(errorOf(() => Journal.open(journal))).toMatchObject({ code: 'ERR_JOURNAL_OPEN', path: journal, fsCode: 'ELOOP', message: expect.stringContaining('symbolic link') });
    expect(fs.statSync(target).size).toBe(0);
  });

  it.skipIf(!root)('a journal owned by another user is refused (root: chown)', () => {
    Journal.open(journal).journal.close();
    fs.chownSync(journal, 65534, 65534);
    expect(errorOf(() => Journal.open(journal))).toMatchObject({ code: 'ERR_JOURNAL_PERMISSIONS', path: journal, uid: 65534 });
  });

  it.skipIf(!root)('a read-only file system (root: a tmpfs remounted read-only)', () => {
    const m = path.join(dir, 'ro');
    fs.mkdirSync(m);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'none', m]);
    try {
      const j = path.join(m, 'j');
      Journal.open(j).journal.close();
      execFileSync('mount', ['-o', 'remount,ro', m]);
      expect(errorOf(() => Journal.open(j))).toMatchObject({ code: 'ERR_JOURNAL_OPEN', path: j, fsCode: 'EROFS', message: expect.stringContaining('read-only') });
    } finally {
      execFileSync('umount', [m]);
    }
  });
});

describe('losses of other memory are history, not applied', () => {
  function firstLife(file: string): void {
    const r = runChild(`
      const { RasEngine } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const r = e.mapRegion({ name: 'ram', path: process.env.F, size: 2 << 20 });
      e.injectPoison(r, 21 * 4096, { mode: 'simulate' });
      e.whenIdle().then(() => e.prepareHandover()).then(() => process.exit(0));
    `, { J: journal, F: file });
    expect(r.stderr).toBe('');
  }

  it('the same file (same boot, same inode) gets its losses back', () => {
    const file = hugeFile('same');
    firstLife(file);
    const engine = openEngine({ journalPath: journal });
    engine.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 21 * SUB, cause: 'replayed' })]);
    expect(engine.journalReplay!.history).toEqual([]);
  });

  it('a backing file created again: the old losses are in journalReplay.history, the memory is usable', () => {
    const file = hugeFile('recreated');
    firstLife(file);
    // The VMM's management deletes and creates the file again (it holds other memory now).
    fs.rmSync(file);
    const keep = hugeFile('other-inode');
    fs.writeFileSync(keep, '');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    expect(engine.lostPages()).toEqual([]);
    expect(engine.journalReplay!.history).toEqual([expect.objectContaining({ offset: 21 * SUB, why: expect.stringContaining('another backing file') })]);
    expect(region.read(21 * SUB, 8)).toHaveLength(8);
    engine.close();
    // Durably so: the next life sees the same.
    const again = Journal.open(journal);
    again.journal.close();
    expect(again.replay.lost).toEqual([]);
    expect(again.replay.history).toHaveLength(1);
  });

  it('losses recorded in another boot of the host are history', () => {
    const file = hugeFile('reboot');
    const setup = openEngine();
    const r = setup.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    setup.unmapRegion(r);
    const st = fs.statSync(file);
    const layout = { name: 'ram', path: file, size: 2 * MiB, offset: 0, guestPhysAddr: 0n, hugePageSize: 2 * MiB };
    fs.writeFileSync(
      journal,
      regionLine(layout, '') +
        identityLine('ram', { boot: 'an-earlier-boot', dev: st.dev, ino: st.ino, birthMs: Math.floor(st.birthtimeMs) }, '') +
        lostLine({ region: 'ram', guestPhysAddr: BigInt(5 * SUB), size: SUB, offset: 5 * SUB, cause: 'recovered', wallTime: '' }),
      { mode: 0o600 },
    );
    const engine = openEngine({ journalPath: journal });
    engine.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    expect(engine.lostPages()).toEqual([]);
    expect(engine.journalReplay!.history).toEqual([expect.objectContaining({ offset: 5 * SUB, why: expect.stringContaining('another boot') })]);
  });
});
