// Every loss reaches the ledger, the journal and its event, whatever a listener or the disk does;
// replayed losses reach listeners attached after mapRegion(); whenIdle() does not poll.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { readJournal, type RecoveredEvent } from '../src/index';
import { regionLine } from '../src/ledger/format';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, until } from './helpers';

describe('a throwing listener costs nothing', () => {
  it('a throwing poison listener without an error listener: recovered, ledger and journal of every loss of the batch (child)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-throw-'));
    const r = runChild(`
      const { RasEngine, readJournal } = ${PKG};
      const e = RasEngine.open({ reserveBytes: 0, journalPath: process.env.J });
      const reg = e.mapRegion({ name: 'ram', path: process.env.F, size: 8 << 20 });
      const recovered = [];
      e.on('poison', () => { throw new Error('listener bug'); });
      e.on('recovered', (ev) => recovered.push(ev.hugePageIndex));
      e.pause();
      for (let p = 0; p < 4; p++) e.injectPoison(reg, p * (2 << 20) + 3 * 4096, { mode: 'simulate' });
      e.resume();
      e.whenIdle({ timeoutMs: 20000 }).then(() => {
        console.log(JSON.stringify({
          recovered: recovered.sort(),
          ledger: e.lostPages().map((p) => p.offset),
          journal: readJournal(process.env.J).lost.map((f) => f.offset).sort((a, b) => a - b),
        }));
        e.close();
      });
    `, { J: path.join(dir, 'j'), F: hugeFile('throw') });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    const offsets = [0, 1, 2, 3].map((p) => p * 2 * MiB + 3 * SUB);
    expect(out).toEqual({ recovered: [0, 1, 2, 3], ledger: offsets, journal: offsets });
    expect(r.stderr).toMatch(/a 'poison' listener threw: listener bug/);
  });

  it('with an error listener, the listener failure is an ERR_LISTENER_FAILED error event and the other listeners run', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('throw2'), size: 2 * MiB });
    const errors: Error[] = [];
    const recovered: RecoveredEvent[] = [];
    engine.on('error', (e) => errors.push(e));
    engine.on('recovered', () => {
      throw new Error('first recovered listener');
    });
    engine.on('recovered', (e) => recovered.push(e));
    engine.injectPoison(region, 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(recovered).toHaveLength(1);
    expect(errors).toEqual([expect.objectContaining({ code: 'ERR_LISTENER_FAILED', event: 'recovered' })]);
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 5 * SUB })]);
  });
});

// A journal that cannot be written: a tiny tmpfs, filled up (root only).
const root = process.getuid?.() === 0;
let mnt: string | undefined;
function tinyFs(): string {
  if (mnt) return mnt;
  const m = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-tinyfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'none', m]);
  mnt = m;
  return m;
}
/** Fills the file system, and the journal's last page with a valid (padded) record: no append fits. */
function fill(dir: string, journal: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  try {
    for (;;) fs.writeSync(fd, Buffer.alloc(4096, 1));
  } catch (e) {
    expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
  } finally {
    fs.closeSync(fd);
  }
  const free = (4096 - (fs.statSync(journal).size % 4096)) % 4096;
  if (free > 0) {
    const layout = [...readJournal(journal).regions.values()][0];
    const base = regionLine(layout, '').length;
    fs.appendFileSync(journal, regionLine(layout, 'x'.repeat(free - base)));
  }
  return filler;
}
afterAll(() => {
  if (mnt) {
    execFileSync('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
});

describe.skipIf(!root)('a journal on a full disk (tmpfs of 64 KiB; needs root to mount)', () => {
  it('every loss of the batch reaches the ledger (durable: false) and its event; the error names the frames; counted; retried', async () => {
    const dir = tinyFs();
    const journal = path.join(dir, 'full.journal');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('full'), size: 16 * MiB, guestPhysAddr: 1n << 32n });
    const filler = fill(dir, journal);
    onTestFinished(() => fs.rmSync(filler, { force: true }));
    onTestFinished(() => fs.rmSync(journal, { force: true }));
    const errors: (Error & { code?: string; frames?: { offset: number }[] })[] = [];
    const recovered: RecoveredEvent[] = [];
    engine.on('error', (e) => errors.push(e));
    engine.on('recovered', (e) => recovered.push(e));
    const offsets = [...Array(8).keys()].map((p) => p * 2 * MiB + 7 * SUB);
    engine.pause();
    for (const o of offsets) engine.injectPoison(region, o, { mode: 'simulate' });
    engine.resume();
    await engine.whenIdle({ timeoutMs: 20_000 });
    // In any order: lazy fills of several pages finish in their own order.
    const byGpa = (a: bigint[], b: bigint[]) => (a[0] < b[0] ? -1 : 1);
    expect(recovered.map((e) => e.lostGuestPhysAddrs).sort(byGpa)).toEqual(offsets.map((o) => [(1n << 32n) + BigInt(o)]));
    expect(engine.lostPages().map((p) => [p.offset, p.durable])).toEqual(offsets.map((o) => [o, false]));
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((e) => e.code === 'ERR_JOURNAL_WRITE')).toBe(true);
    expect(errors.flatMap((e) => e.frames!.map((f) => f.offset)).sort((a, b) => a - b)).toEqual(offsets);
    expect(errors[0].message).toContain(journal);
    expect(engine.stats().journal).toMatchObject({ path: journal, notDurable: 8 });
    expect(engine.stats().journal!.failedWrites).toBeGreaterThanOrEqual(errors.length);
    // Space again: the retry timer writes them.
    fs.rmSync(filler);
    await until(() => engine.stats().journal!.notDurable === 0, 5_000);
    expect(engine.lostPages().every((p) => p.durable)).toBe(true);
    expect(readJournal(journal).lost.map((f) => f.offset)).toEqual(offsets);
    fs.rmSync(journal);
  });

  it('mapRegion when the journal cannot take the region record: ERR_JOURNAL_WRITE with the path, nothing stays mapped', () => {
    const dir = tinyFs();
    const journal = path.join(dir, 'map.journal');
    const engine = openEngine({ journalPath: journal });
    engine.mapRegion({ name: 'first', path: hugeFile('map-first'), size: 2 * MiB });
    const filler = fill(dir, journal);
    onTestFinished(() => fs.rmSync(filler, { force: true }));
    onTestFinished(() => fs.rmSync(journal, { force: true }));
    const p = hugeFile('map-full');
    expect(() => engine.mapRegion({ name: 'second', path: p, size: 2 * MiB, guestPhysAddr: 1n << 32n })).toThrow(
      expect.objectContaining({ code: 'ERR_JOURNAL_WRITE', path: journal, fsCode: 'ENOSPC' }),
    );
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readFileSync('/proc/self/maps', 'utf8')).not.toContain(p);
  });

  it('a failed append cuts only its own bytes, not records written since the last append', async () => {
    const dir = tinyFs();
    const journal = path.join(dir, 'cut.journal');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('cut'), size: 4 * MiB });
    engine.on('error', () => {});
    const before = fs.readFileSync(journal);
    // Another record lands after the engine's last append (as another writer's would).
    fs.appendFileSync(journal, before);
    const filler = fill(dir, journal);
    onTestFinished(() => fs.rmSync(filler, { force: true }));
    onTestFinished(() => fs.rmSync(journal, { force: true }));
    const size = fs.statSync(journal).size;
    engine.injectPoison(region, 9 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.stats().journal!.notDurable).toBe(1);
    expect(fs.statSync(journal).size).toBe(size);
    fs.rmSync(filler);
    fs.rmSync(journal);
  });
});

describe('replayed losses reach listeners attached after mapRegion()', () => {
  it('as the README attaches them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-replay-'));
    const journal = path.join(dir, 'j');
    const file = hugeFile('replay');
    const first = openEngine({ journalPath: journal });
    const r1 = first.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    first.injectPoison(r1, 11 * SUB, { mode: 'simulate' });
    await first.whenIdle({ timeoutMs: 10_000 });
    await first.prepareHandover(); // a warm restart: the split page's data is current in the file
    first.close();
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: file, size: 2 * MiB });
    // Protected and in the ledger at once; the event comes after mapRegion returned.
    expect(engine.lostPages()).toEqual([expect.objectContaining({ offset: 11 * SUB, cause: 'replayed', durable: true })]);
    expect(() => region.read(11 * SUB, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    const lost: number[] = [];
    engine.on('lost', (e) => lost.push(e.offset));
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(lost).toEqual([11 * SUB]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('whenIdle()', () => {
  it('does not poll: a paused engine is waited for with a couple of timers, and timeoutMs still rejects', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('idle'), size: 2 * MiB });
    engine.pause();
    engine.injectPoison(region, 0, { mode: 'simulate' });
    const timeouts = vi.spyOn(globalThis, 'setTimeout');
    const intervals = vi.spyOn(globalThis, 'setInterval');
    try {
      await expect(engine.whenIdle({ timeoutMs: 300 })).rejects.toMatchObject({ code: 'ERR_TIMEOUT', message: /paused/ });
      expect(timeouts.mock.calls.length + intervals.mock.calls.length).toBeLessThanOrEqual(3);
    } finally {
      timeouts.mockRestore();
      intervals.mockRestore();
    }
    const done = engine.whenIdle({ timeoutMs: 10_000 });
    engine.resume();
    await done;
    expect(engine.lostPages()).toHaveLength(1);
  });

  it('resolves when the last event has been delivered, without polling timers', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('idle2'), size: 2 * MiB });
    const order: string[] = [];
    engine.on('recovered', () => order.push('recovered'));
    engine.pause();
    engine.injectPoison(region, 0, { mode: 'simulate' });
    setTimeout(() => engine.resume(), 60);
    const timeouts = vi.spyOn(globalThis, 'setTimeout');
    const intervals = vi.spyOn(globalThis, 'setInterval');
    try {
      await engine.whenIdle({ timeoutMs: 10_000 });
      order.push('idle');
      // The deadline's timer and one slow fallback check: no polling every millisecond.
      expect(timeouts.mock.calls.length + intervals.mock.calls.length).toBeLessThanOrEqual(2);
    } finally {
      timeouts.mockRestore();
      intervals.mockRestore();
    }
    expect(order).toEqual(['recovered', 'idle']);
  });
});

describe.skipIf(!root)('a journal made immutable while the engine runs (root: chattr +i on the temp directory\'s file system)', () => {
  it('every loss is reported and in the ledger; ERR_JOURNAL_WRITE says EPERM; written once it is writable again', async (ctx) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-immutable-'));
    const journal = path.join(dir, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('immutable'), size: 4 * MiB });
    try {
      execFileSync('chattr', ['+i', journal], { stdio: 'ignore' });
    } catch {
      fs.rmSync(dir, { recursive: true, force: true });
      return ctx.skip();
    }
    onTestFinished(() => {
      execFileSync('chattr', ['-i', journal]);
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const errors: (Error & { code?: string; fsCode?: string; cause?: NodeJS.ErrnoException })[] = [];
    engine.on('error', (e) => errors.push(e));
    const recovered: RecoveredEvent[] = [];
    engine.on('recovered', (e) => recovered.push(e));
    engine.pause();
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    engine.injectPoison(region, 2 * MiB + 4 * SUB, { mode: 'simulate' });
    engine.resume();
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(recovered).toHaveLength(2);
    expect(engine.lostPages().map((p) => p.durable)).toEqual([false, false]);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatchObject({ code: 'ERR_JOURNAL_WRITE', path: journal });
    expect(errors[0].cause?.code).toBe('EPERM');
    expect(errors[0]).toMatchObject({ fsCode: 'EPERM' });
    execFileSync('chattr', ['-i', journal]);
    await until(() => engine.stats().journal!.notDurable === 0, 5_000);
    expect(readJournal(journal).lost.map((f) => f.offset)).toEqual([3 * SUB, 2 * MiB + 4 * SUB]);
  });
  it('a reset goes on when its journal record cannot be written, and says so', async (ctx) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-immutable-reset-'));
    const journal = path.join(dir, 'j');
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('immutable-reset'), size: 4 * MiB });
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    engine.injectPoison(region, 2 * MiB + 3 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    try {
      execFileSync('chattr', ['+i', journal], { stdio: 'ignore' });
    } catch {
      fs.rmSync(dir, { recursive: true, force: true });
      return ctx.skip();
    }
    onTestFinished(() => {
      execFileSync('chattr', ['-i', journal]);
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const errors: (Error & { code?: string; hugePageIndex?: number })[] = [];
    engine.on('error', (e) => errors.push(e));
    expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 2, stillSplit: 0 });
    expect(errors.map((e) => [e.code, e.hugePageIndex])).toEqual([
      ['ERR_JOURNAL_WRITE', 0],
      ['ERR_JOURNAL_WRITE', 1],
    ]);
    expect(engine.lostPages()).toEqual([]);
  });
});
