// One journal append per batch of native events (issue 24: one fsync per frame was the cost of a
// loss at scale), in a version-4 `lost-frames` line, and still record-then-report: no `lost` event
// of the batch reaches a listener before its frame is in the file.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { readJournal, type LostEvent } from '../src/index';
import { Journal } from '../src/ledger/file';
import type { LostFrame } from '../src/ledger/records';
import { hugeFile, MiB, openEngine, SUB, until } from './helpers';

const dirs: string[] = [];
function tmpJournal(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-jb-'));
  dirs.push(dir);
  return path.join(dir, 'journal');
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function line(obj: Record<string, unknown>): string {
  const json = JSON.stringify(obj);
  return `${crc32(Buffer.from(json)).toString(16).padStart(8, '0')} ${json}\n`;
}
const regionRec = line({ v: 1, type: 'region', name: 'ram', path: '/x', size: 4 * MiB, offset: 0, guestPhysAddr: '0x100000000', hugePageSize: 2 * MiB, wallTime: '' });

function replayOf(text: string): ReturnType<typeof readJournal> {
  const file = tmpJournal();
  fs.writeFileSync(file, text, { mode: 0o600 });
  return readJournal(file);
}

describe('lost-frames records (format version 4)', () => {
  it('an append of frames that share region, size, cause and time is one line; they read back frame by frame', () => {
    const file = tmpJournal();
    const { journal } = Journal.open(file);
    const layout = { name: 'ram', path: '/x', size: 4 * MiB, offset: 0, guestPhysAddr: 1n << 32n, hugePageSize: 2 * MiB };
    journal.checkRegion(layout);
    const frame = (offset: number, cause: LostFrame['cause'] = 'recovered', wallTime = 't1'): LostFrame => ({
      region: 'ram',
      guestPhysAddr: (1n << 32n) + BigInt(offset),
      size: SUB,
      offset,
      cause,
      wallTime,
    });
    const frames = [frame(3 * SUB), frame(9 * SUB), frame(2 * MiB + SUB), frame(5 * SUB, 'split-poison'), frame(6 * SUB, 'split-poison', 't2')];
    journal.appendLost(frames);
    journal.close();
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n').slice(1);
    // Three frames in one v4 line, then two lines of one frame each (v1: a version-3 build reads them).
    expect(lines.map((l) => JSON.parse(l.slice(9)))).toEqual([
      { v: 4, type: 'lost-frames', region: 'ram', base: '0x100000000', size: SUB, cause: 'recovered', wallTime: 't1', offsets: [3 * SUB, 9 * SUB, 2 * MiB + SUB] },
      expect.objectContaining({ v: 1, type: 'lost', offset: 5 * SUB, cause: 'split-poison' }),
      expect.objectContaining({ v: 1, type: 'lost', offset: 6 * SUB, wallTime: 't2' }),
    ]);
    expect(readJournal(file).lost).toEqual(frames);
  });

  it('a bad lost-frames line is skipped (bad record), a reset clears its frames, a newer version is refused', () => {
    const rec = (o: Record<string, unknown>) => line({ v: 4, type: 'lost-frames', region: 'ram', base: '0x100000000', size: SUB, cause: 'recovered', wallTime: '', offsets: [0, SUB], ...o });
    expect(replayOf(regionRec + rec({})).lost.map((f) => f.guestPhysAddr)).toEqual([1n << 32n, (1n << 32n) + 4096n]);
    for (const bad of [{ offsets: [] }, { offsets: [0, -1] }, { offsets: [0.5] }, { base: 12 }, { cause: 'nope' }, { v: 3 }, { size: 0 }]) {
      const r = replayOf(regionRec + rec(bad));
      expect(r.lost).toEqual([]);
      expect(r.warnings).toEqual([expect.objectContaining({ code: 'ERR_JOURNAL_BAD_RECORD' })]);
    }
    const reset = line({ v: 1, type: 'reset', region: 'ram', guestPhysAddr: '0x100000000', size: 2 * MiB, wallTime: '' });
    expect(replayOf(regionRec + rec({ offsets: [0, 2 * MiB] }) + reset).lost.map((f) => f.offset)).toEqual([2 * MiB]);
    expect(() => replayOf(regionRec + rec({ v: 5 }))).toThrow(expect.objectContaining({ code: 'ERR_JOURNAL_VERSION' }));
  });
});

describe('one append per batch of native events', () => {
  it('the losses of one batch share an append; every lost event finds its frame already in the file', async () => {
    const journalPath = tmpJournal();
    const engine = openEngine({ journalPath });
    const file = hugeFile('jbatch');
    try {
      const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB });
      engine.injectPoison(region, 0, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 20_000 });
      const offsets = [...Array(64).keys()].map((i) => (i + 1) * SUB);
      const missing: number[] = [];
      const seen: number[] = [];
      engine.on('lost', (e: LostEvent) => {
        seen.push(e.offset);
        // Record first, then report: the frame is in the journal when its event arrives.
        if (!readJournal(journalPath).lost.some((f) => f.offset === e.offset)) missing.push(e.offset);
      });
      const before = fs.readFileSync(journalPath, 'utf8').split('\n').length;
      engine.pause();
      for (const o of offsets) engine.injectPoison(region, o, { mode: 'simulate' });
      engine.resume();
      await engine.whenIdle({ timeoutMs: 20_000 });
      expect(seen.sort((a, b) => a - b)).toEqual(offsets);
      expect(missing).toEqual([]);
      expect(engine.lostPages().filter((p) => p.offset > 0).every((p) => p.durable)).toBe(true);
      expect(readJournal(journalPath).lost.map((f) => f.offset).sort((a, b) => a - b)).toEqual([0, ...offsets]);
      // Fewer lines than frames: the frames of a batch went in together (one line per frame before).
      const lines = fs.readFileSync(journalPath, 'utf8').split('\n').length - before;
      expect(lines).toBeLessThan(offsets.length / 2);
    } finally {
      engine.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('a listener that closes the engine in the middle of a batch loses nothing: every frame is in the journal', async () => {
    const journalPath = tmpJournal();
    const engine = openEngine({ journalPath });
    const file = hugeFile('jbatch-close');
    try {
      const region = engine.mapRegion({ name: 'ram', path: file, size: 4 * MiB });
      engine.injectPoison(region, 0, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 20_000 });
      const offsets = [...Array(16).keys()].map((i) => (i + 1) * SUB);
      let closedAt = -1;
      engine.on('lost', (e: LostEvent) => {
        if (closedAt < 0) {
          closedAt = e.offset;
          engine.close();
        }
      });
      engine.pause();
      for (const o of offsets) engine.injectPoison(region, o, { mode: 'simulate' });
      engine.resume();
      await until(() => closedAt >= 0, 20_000);
      expect(readJournal(journalPath).lost.map((f) => f.offset).sort((a, b) => a - b)).toEqual([0, ...offsets]);
    } finally {
      engine.close();
      fs.rmSync(file, { force: true });
    }
  });
});
