// The benchmark's migration rows (issue 22 #4), each against its limit in the same run:
//   guarded copy: the C API's copy_from_guest and region.readAvailable over COPY_MIB of 2 MiB pages,
//     with no frame lost and with LOST_FRAMES lost, against memcpy of the same bytes from the same
//     mapping (a raw memcpy can only be timed where nothing is lost: it is the same bytes either way).
//   importLost of 10, 1 000 and 100 000 frames, dense (511 of the 512 frames of each huge page of
//     2 MiB: 100 000 frames are 196 huge pages; one frame per page stays healthy, so that every page is
//     split, the costlier case: a page with all 512 imported is lost whole, without a split), journal on
//     tmpfs: per frame, and against memcpy of the bytes it split (every page is read back from its file
//     into replacement memory: that copy is its floor);
//     the same manifest again (nothing new), and exportLost of the result.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RasEngine, type LostManifest } from '../src/index';
import { benchNative } from '../src/native';
import { fillPattern } from '../src/testing';
import { fmt, median } from './svg';

const MiB = 1 << 20;
const SUB = 4096;
const HUGE = 2 * MiB;
const COPY_MIB = 64;
const LOST_FRAMES = 4;
const IMPORT_PAGES = 200; // room for 100 000 dense frames (196 pages)
const GPA = 0x1_0000_0000n;

export interface CopyRow {
  label: string;
  ns: number[];
  limitNs: number[];
  lostFrames: number;
}

export interface ImportRow {
  frames: number;
  hugePagesSplit: number;
  importNs: number;
  againNs: number;
  exportNs: number;
  limitNs: number;
}

export interface MigrationResult {
  copy: CopyRow[];
  imports: ImportRow[];
  skipped?: string;
}

const now = () => process.hrtime.bigint();
const hex = (v: bigint) => '0x' + v.toString(16);

const PER_PAGE = HUGE / SUB - 1;

function denseManifest(frames: number, size: number): LostManifest {
  const lost = new Array(frames);
  for (let i = 0; i < frames; i++) lost[i] = { guestPhysAddr: hex(GPA + BigInt(Math.floor(i / PER_PAGE) * HUGE + (i % PER_PAGE) * SUB)), size: SUB };
  return { format: 'hugetlb-ras-lost', version: 1, regions: [{ name: 'src', guestPhysAddr: hex(GPA), size, hugePageSize: HUGE, lost }] };
}

function benchCopy(dir: string, reps: number): CopyRow[] {
  const bytes = COPY_MIB * MiB;
  const file = path.join(dir, `bench-copy-${process.pid}`);
  const engine = RasEngine.open({ reserveBytes: 0 });
  try {
    const region = engine.mapRegion({ name: 'ram', path: file, size: bytes, guestPhysAddr: GPA });
    fillPattern(region, 1);
    const api = engine.nativeApi();
    const b = benchNative();
    const rows: CopyRow[] = [];
    const js = (label: string, lostFrames: number, limitNs: number[]) => {
      const ns: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = now();
        const r = region.readAvailable(0, bytes);
        ns.push(Number(now() - t0));
        if (r.lostOffsets.length !== lostFrames) throw new Error(`readAvailable listed ${r.lostOffsets.length} lost frames, not ${lostFrames}`);
      }
      rows.push({ label, ns, limitNs, lostFrames });
    };
    const clean = b.guardedCopy(api, GPA, region.address, bytes, reps, true);
    if (clean.rc !== 0 || clean.lostFrames !== 0) throw new Error(`copy_from_guest: rc ${clean.rc}, ${clean.lostFrames} lost`);
    rows.push({ label: `C API copy_from_guest, ${COPY_MIB} MiB, nothing lost`, ns: clean.copyNs, limitNs: clean.memcpyNs, lostFrames: 0 });
    js(`region.readAvailable, ${COPY_MIB} MiB, nothing lost (a new Buffer each)`, 0, clean.memcpyNs);
    // What a new Buffer of that size costs by itself (its pages are faulted in by the copy).
    const alloc: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = now();
      const buf = Buffer.allocUnsafe(bytes).fill(1);
      alloc.push(Number(now() - t0));
      if (buf[bytes - 1] !== 1) throw new Error('fill');
    }
    rows.push({ label: `(reference) Buffer.allocUnsafe(${COPY_MIB} MiB).fill(): a new Buffer's page faults alone`, ns: alloc, limitNs: clean.memcpyNs, lostFrames: 0 });
    // A few frames lost, on different huge pages (those pages are split now: ordinary pages and THP).
    const m = denseManifest(0, bytes);
    for (let i = 0; i < LOST_FRAMES; i++) m.regions[0].lost.push({ guestPhysAddr: hex(GPA + BigInt(i * 8 * HUGE + 100 * SUB)), size: SUB });
    engine.importLost(m);
    const lossy = b.guardedCopy(api, GPA, region.address, bytes, reps, false);
    if (lossy.rc !== 0 || lossy.lostFrames !== LOST_FRAMES) throw new Error(`copy_from_guest: rc ${lossy.rc}, ${lossy.lostFrames} lost`);
    rows.push({ label: `C API copy_from_guest, ${COPY_MIB} MiB, ${LOST_FRAMES} frames lost`, ns: lossy.copyNs, limitNs: clean.memcpyNs, lostFrames: LOST_FRAMES });
    js(`region.readAvailable, ${COPY_MIB} MiB, ${LOST_FRAMES} frames lost`, LOST_FRAMES, clean.memcpyNs);
    return rows;
  } finally {
    engine.close();
    fs.rmSync(file, { force: true });
  }
}

function benchImport(dir: string, frames: number): ImportRow {
  const jdir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'ras-bench-import-'));
  const file = path.join(dir, `bench-import-${process.pid}-${frames}`);
  const engine = RasEngine.open({ reserveBytes: 0, journalPath: path.join(jdir, 'journal') });
  try {
    const size = IMPORT_PAGES * HUGE;
    const region = engine.mapRegion({ name: 'ram', path: file, size, guestPhysAddr: GPA });
    fillPattern(region, 2); // the data arrived first: every split reads its page back
    const wire: unknown = JSON.parse(JSON.stringify(denseManifest(frames, size)));
    const hugePagesSplit = Math.ceil(frames / PER_PAGE);
    let t0 = now();
    const r = engine.importLost(wire);
    const importNs = Number(now() - t0);
    if (r.imported !== frames || engine.lostPages().length !== frames) throw new Error(`importLost: ${JSON.stringify(r)}, ${engine.lostPages().length} in the ledger`);
    t0 = now();
    const again = engine.importLost(wire);
    const againNs = Number(now() - t0);
    if (again.imported !== 0 || again.alreadyLost !== frames) throw new Error(`importLost again: ${JSON.stringify(again)}`);
    t0 = now();
    const out = engine.exportLost();
    const exportNs = Number(now() - t0);
    if (out.regions[0].lost.length !== frames) throw new Error(`exportLost listed ${out.regions[0].lost.length}`);
    const limitNs = median(Array.from({ length: 5 }, () => benchNative().memcpyLimit(hugePagesSplit * HUGE)));
    return { frames, hugePagesSplit, importNs, againNs, exportNs, limitNs };
  } finally {
    engine.close();
    fs.rmSync(file, { force: true });
    fs.rmSync(jdir, { recursive: true, force: true });
  }
}

export function benchMigration(dir: string, reps = 10, counts = [10, 1000, 100_000]): MigrationResult {
  const free = Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', 'utf8'));
  if (free < IMPORT_PAGES + 8) return { copy: [], imports: [], skipped: `${free} free huge pages of 2 MiB, ${IMPORT_PAGES + 8} needed` };
  return { copy: benchCopy(dir, reps), imports: counts.map((n) => benchImport(dir, n)) };
}

export function migrationTable(r: MigrationResult): string[] {
  const lines = ['', '| guarded copy (median of reps) | time | throughput | / memcpy of the same bytes |', '|---|---|---|---|'];
  if (r.skipped) return [...lines, `| migration rows not measured: ${r.skipped} | | | |`];
  const gbs = (ns: number) => `${((COPY_MIB * MiB) / ns).toFixed(2)} GB/s`;
  lines.push(`| memcpy of ${COPY_MIB} MiB from the same mapping (the limit) | ${fmt(median(r.copy[0].limitNs))} | ${gbs(median(r.copy[0].limitNs))} | 1.00x |`);
  for (const c of r.copy) lines.push(`| ${c.label} | ${fmt(median(c.ns))} | ${gbs(median(c.ns))} | ${(median(c.ns) / median(c.limitNs)).toFixed(2)}x |`);
  lines.push('', '| importLost, dense frames (journal on tmpfs) | huge pages split | importLost | per frame | / memcpy of the bytes split | same manifest again | exportLost |', '|---|---|---|---|---|---|---|');
  for (const i of r.imports)
    lines.push(
      `| ${i.frames} | ${i.hugePagesSplit} | ${fmt(i.importNs)} | ${fmt(i.importNs / i.frames)} | ${(i.importNs / i.limitNs).toFixed(2)}x | ${fmt(i.againNs)} | ${fmt(i.exportNs)} |`,
    );
  if (r.imports.length >= 2) {
    const a = r.imports[r.imports.length - 2];
    const b = r.imports[r.imports.length - 1];
    lines.push('', `importLost per frame at ${b.frames} / at ${a.frames}: ${(b.importNs / b.frames / (a.importNs / a.frames)).toFixed(2)}x (flat: no quadratic step)`);
  }
  return lines;
}
