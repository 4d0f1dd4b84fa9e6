// The benchmark's scaling table (issue 24 #3): what one lost frame costs when the engine already
// holds 10, 1 000 or 100 000 of them, spread over many huge pages of 2 MiB; a restart that replays
// them; and the bookkeeping of a region of 1 TiB with nothing lost (the native bookkeeping alone, on
// a descriptor with no memory behind it: 1 TiB of huge pages cannot be reserved here).
//
// Per count N: a region of PAGES huge pages, each split first by one poison (not timed: that is a
// recovery, measured elsewhere), then N frames poisoned in batches (simulated, signal on the JS
// thread), each batch waited for to its `lost` events. Rows: the batch's time per frame (poison to
// its event, journal append included), and the latency of single frames poisoned once the N are in
// (poison to its own `lost` event). With a journal on tmpfs (/dev/shm): see oneCount. The restart is
// timed in its parts (the journal read at open; mapRegion, which re-splits the handed-over pages
// from the file; the events delivered) against the limit of its read-back: the same 400 MiB read
// from the file with read(2) on one thread, into memory already faulted and into fresh memory. One more row: 1 000 frames
// with the journal on a disk file system (os.tmpdir()), where every append pays the disk's fsync.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RasEngine, type LostEvent } from '../src/index';
import { native } from '../src/native';
import { median } from './svg';

const MiB = 1 << 20;
const GiB = 1 << 30;
const TiB = 2 ** 40;
const SUB = 4096;
const PAGES = 200; // 200 x 2 MiB: 400 MiB of the pool, room for 100 000 frames (500 per page)

export interface ScaleRow {
  frames: number;
  perFrameNs: number; // batches: total time / frames
  singleNs: number; // median latency of one frame poisoned once the N are recorded
  lostPages: number; // what lostPages() held at the end (N + the PAGES that split them)
  restartMs?: number; // a new engine mapping the region: the journal replayed, every loss protected and reported
  openMs?: number; // RasEngine.open: the journal read
  mapMs?: number; // mapRegion: the pages re-split, the losses in the ledger
  eventsMs?: number; // until the last lost event was delivered
  readLimitMs?: number; // the region's file read with read(2) into faulted memory, one thread
  readFreshMs?: number; // the same into fresh memory (its page faults included)
  replayed?: number;
  journalLines?: number;
  disk?: boolean; // the journal on a disk file system, not tmpfs
  journalBytes: number;
}

export interface ScaleResult {
  rows: ScaleRow[];
  bookkeeping: { region: string; nothingLostBytes: number; oneLostBytes: number; rssDeltaBytes: number }[];
  skipped?: string;
}

const now = () => process.hrtime.bigint();

/**
 * The limit of a restart's read-back: `bytes` of the file read with read(2), 8 MiB at a time, on one
 * thread, into memory already faulted (`fresh` false: the copy alone) or into fresh memory (the copy
 * and the page faults that any re-split pays for the memory it puts in place).
 */
function readLimitMs(file: string, bytes: number, fresh: boolean): number {
  const buf = Buffer.allocUnsafeSlow(bytes); // a mapping of its own: not faulted yet
  if (!fresh) buf.fill(1); // faulted before the clock starts
  const fd = fs.openSync(file, 'r');
  try {
    const t0 = now();
    for (let off = 0; off < bytes; ) off += fs.readSync(fd, buf, off, Math.min(8 * MiB, bytes - off), off);
    return Number(now() - t0) / 1e6;
  } finally {
    fs.closeSync(fd);
  }
}

async function oneCount(n: number, dir: string, restart: boolean, disk = false): Promise<ScaleRow> {
  // The journal on tmpfs where there is one: an fsync there costs nothing, so the rows show what the
  // engine's own work per frame is; on a disk every append adds that disk's fsync.
  const jdir = fs.mkdtempSync(path.join(!disk && fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'ras-bench-scale-'));
  const journalPath = path.join(jdir, 'journal');
  const file = path.join(dir, `bench-scale-${process.pid}-${n}`);
  const engine = RasEngine.open({ journalPath, reserve: { '2M': 8 } });
  let row: ScaleRow = { frames: n, perFrameNs: 0, singleNs: 0, lostPages: 0, journalBytes: 0 };
  try {
    const region = engine.mapRegion({ name: 'ram', path: file, size: PAGES * 2 * MiB });
    let events = 0;
    let lastEvent = 0n;
    engine.on('lost', (_e: LostEvent) => {
      events++;
      lastEvent = now();
    });
    for (let p = 0; p < PAGES; p++) engine.injectPoison(region, p * 2 * MiB + 511 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 600_000 });
    // N frames, page by page in turn: frame i is subpage floor(i / PAGES) of page i % PAGES.
    const samples = 9;
    const total = n;
    const offsetOf = (i: number) => (i % PAGES) * 2 * MiB + Math.floor(i / PAGES) * SUB;
    const batch = 1000;
    let ns = 0n;
    for (let i = 0; i < total; ) {
      const end = Math.min(total, i + batch);
      const before = events;
      const first = i;
      const t0 = now();
      for (; i < end; i++) engine.injectPoison(region, offsetOf(i), { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 600_000 });
      if (events - before !== end - first) throw new Error(`${events - before} lost events for ${end - first} poisons`);
      ns += lastEvent - t0;
    }
    const singles: number[] = [];
    for (let k = 0; k < samples; k++) {
      const off = offsetOf(total + k);
      const before = events;
      const t0 = now();
      engine.injectPoison(region, off, { mode: 'simulate' });
      while (events === before) await new Promise((r) => setImmediate(r));
      singles.push(Number(lastEvent - t0));
    }
    await engine.whenIdle({ timeoutMs: 600_000 });
    const lost = engine.lostPages();
    if (lost.length !== PAGES + total + samples) throw new Error(`lostPages() holds ${lost.length}, expected ${PAGES + total + samples}`);
    const journalLines = fs.readFileSync(journalPath, 'latin1').split('\n').length - 1;
    row = { frames: n, perFrameNs: Number(ns) / total, singleNs: median(singles), lostPages: lost.length, journalBytes: fs.statSync(journalPath).size, journalLines, disk };
    if (restart) {
      await engine.prepareHandover();
      engine.close();
      const t0 = now(); // the journal is read at open, replayed at mapRegion
      const again = RasEngine.open({ journalPath, reserve: { '2M': 8 } });
      try {
        let replayed = 0;
        again.on('lost', () => replayed++);
        const t1 = now();
        again.mapRegion({ name: 'ram', path: file, size: PAGES * 2 * MiB });
        const t2 = now();
        await again.whenIdle({ timeoutMs: 600_000 });
        const t3 = now();
        row.restartMs = Number(t3 - t0) / 1e6;
        row.openMs = Number(t1 - t0) / 1e6;
        row.mapMs = Number(t2 - t1) / 1e6;
        row.eventsMs = Number(t3 - t2) / 1e6;
        row.replayed = again.lostPages().length;
        if (row.replayed !== lost.length) throw new Error(`restart replayed ${row.replayed} of ${lost.length} losses`);
        if (replayed !== lost.length) throw new Error(`restart reported ${replayed} of ${lost.length} losses`);
      } finally {
        again.close();
      }
      row.readLimitMs = readLimitMs(file, PAGES * 2 * MiB, false);
      row.readFreshMs = readLimitMs(file, PAGES * 2 * MiB, true);
    }
  } finally {
    try {
      engine.close();
    } catch {
      /* closed for the restart */
    }
    fs.rmSync(file, { force: true });
    fs.rmSync(jdir, { recursive: true, force: true });
  }
  return row;
}

export async function benchScale(dir: string, counts = [10, 1000, 100_000]): Promise<ScaleResult> {
  const free = Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', 'utf8'));
  const out: ScaleResult = { rows: [], bookkeeping: [] };
  for (const [label, huge] of [
    ['1 TiB of 1 GiB pages', GiB],
    ['1 TiB of 2 MiB pages', 2 * MiB],
  ] as const) {
    const none = native.testBookkeeping(TiB, huge, [], []);
    const one = native.testBookkeeping(TiB, huge, [517 * GiB + 12345 * SUB], []);
    out.bookkeeping.push({ region: label, nothingLostBytes: none.bookkeepingBytes, oneLostBytes: one.bookkeepingBytes, rssDeltaBytes: none.rssDeltaBytes });
  }
  if (free < PAGES + 16) {
    out.skipped = `${free} free huge pages of 2 MiB, ${PAGES + 16} needed`;
    return out;
  }
  for (const n of counts) out.rows.push(await oneCount(n, dir, n === counts[counts.length - 1]));
  out.rows.push(await oneCount(1000, dir, false, true));
  return out;
}

export function scaleTable(s: ScaleResult, fmt: (ns: number) => string): string[] {
  const lines = [
    '',
    `| lost frames held (journal) | per frame, batches of 1 000 (poison to lost event) | one more frame (median of 9) | journal lines | restart: open + mapRegion replaying all, every loss reported |`,
    '|---|---|---|---|---|',
  ];
  if (s.skipped) lines.push(`| scaling not measured: ${s.skipped} | | | | |`);
  const ms = (v: number | undefined) => (v ?? 0).toFixed(0);
  for (const r of s.rows)
    lines.push(
      `| ${r.frames} (+${PAGES} that split the ${PAGES} pages; ${r.disk ? 'disk' : 'tmpfs'}) | ${fmt(r.perFrameNs)} | ${fmt(r.singleNs)} | ${r.journalLines ?? '-'} | ` +
        `${r.restartMs !== undefined ? `${ms(r.restartMs)} ms for ${r.replayed} losses (open ${ms(r.openMs)}, mapRegion ${ms(r.mapMs)}, events ${ms(r.eventsMs)})` : '-'} |`,
    );
  const tmpfs = s.rows.filter((r) => !r.disk);
  if (tmpfs.length >= 2) {
    const a = tmpfs[0].perFrameNs;
    const b = tmpfs[tmpfs.length - 1].perFrameNs;
    lines.push('', `per frame at ${tmpfs[tmpfs.length - 1].frames} / at ${tmpfs[0].frames}: ${(b / a).toFixed(2)}x (target: within 2x)`);
  }
  const last = tmpfs[tmpfs.length - 1];
  if (last?.restartMs !== undefined && last.readLimitMs !== undefined && last.readFreshMs !== undefined)
    lines.push(
      `restart: ${ms(last.restartMs)} ms (target < 1 000 ms); its re-split of the ${(PAGES * 2 * MiB) / MiB} MiB reads back only the subpages not known lost ` +
        `(${(((PAGES * 2 * MiB) / SUB - last.lostPages) * SUB / MiB).toFixed(1)} MiB). Limits for reading all of it (read(2), one thread): ` +
        `into faulted memory ${ms(last.readLimitMs)} ms, into fresh memory ${ms(last.readFreshMs)} ms; mapRegion / those: ` +
        `${(last.mapMs! / last.readLimitMs).toFixed(2)}x, ${(last.mapMs! / last.readFreshMs).toFixed(2)}x`,
    );
  for (const b of s.bookkeeping)
    lines.push(
      `bookkeeping, ${b.region} (native descriptor alone, no memory behind it): ${(b.nothingLostBytes / 1024).toFixed(1)} KiB with nothing lost, ` +
        `${(b.oneLostBytes / 1024).toFixed(1)} KiB with one lost subpage (target < 1 MiB)`,
    );
  return lines;
}
