// Issue 22 item 2: imported frames live like any loss of the destination: a raw access by a thread
// the engine does not know gets the machine-check SIGBUS for exactly that 4 KiB; they survive a
// restart (journal replay) and a handover of the destination; a page under recovery is never raced;
// locked memory keeps its lock on the replacement.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LostEvent, LostManifest } from '../src/index';
import { native, PageState } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, PKG, runChild, SUB, TESTING } from './helpers';

const GPA = 0x2_0000_0000n;
const hex = (v: bigint) => '0x' + v.toString(16);
const memoryFailureKernel = fs.existsSync('/proc/sys/vm/memory_failure_recovery');

function manifest(offsets: number[], size = 4 * MiB): LostManifest {
  return {
    format: 'hugetlb-ras-lost',
    version: 1,
    regions: [{ name: 'source-ram', guestPhysAddr: hex(GPA), size, hugePageSize: 2 * MiB, lost: offsets.map((o) => ({ guestPhysAddr: hex(GPA + BigInt(o)), size: SUB })) }],
  };
}

function journalPath(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ras-migr-')), 'ledger.journal');
}

describe('a raw access to an imported frame', () => {
  it('a thread the engine does not know gets the machine-check SIGBUS for exactly that 4 KiB, and the bytes around it', () => {
    const IMPORTED = 2 * MiB + 5 * SUB;
    const LATER = 2 * MiB + 300 * SUB;
    const r = runChild(
      `
      const native = require('bindings')('hugetlb_ras');
      native.testInstallVmmHandler();  // the VMM's own SIGBUS handler, installed before the engine
      const { RasEngine } = ${PKG};
      const { fillPattern } = ${TESTING};
      const e = RasEngine.open({ reserveBytes: 0 });
      const r = e.mapRegion({ name: 'dst', path: process.env.F, size: 4 << 20, guestPhysAddr: ${GPA}n });
      fillPattern(r, 7);
      const offs = [${IMPORTED}, ${IMPORTED - SUB}, ${IMPORTED + SUB}, 0x10, ${LATER}];
      const want = offs.map((o) => r.read(o, 1)[0]);
      const res = e.importLost(${JSON.stringify(manifest([IMPORTED]))});
      // A later manifest: a frame of the page split now, guarded in place.
      const res2 = e.importLost(${JSON.stringify(manifest([IMPORTED, LATER]))});
      const A = (o) => r.address + BigInt(o);
      const got = native.testForeignRead(offs.map(A));
      console.log('RESULT ' + JSON.stringify({ res, res2, want, got, hva: [A(${IMPORTED}), A(${LATER})], guard: e.lostPageGuard }, (k, v) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v)));
      e.close();
    `,
      { F: hugeFile('raw') },
    );
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, `child: status ${r.status} signal ${r.signal}\n${r.stderr}`).toBeDefined();
    const o = JSON.parse(line!.slice(7));
    expect(o.res).toEqual({ imported: 1, alreadyLost: 0 });
    expect(o.res2).toEqual({ imported: 1, alreadyLost: 1 });
    expect(o.got.deliveries.map((d: { addr: string }) => d.addr)).toEqual(o.hva);
    for (const d of o.got.deliveries) {
      if (o.guard === 'uffd') expect([d.code, d.lsb]).toEqual(memoryFailureKernel ? [4, 12] : [2, 0]);
      else expect([d.code, d.lsb]).toEqual([4, 12]);
    }
    expect(o.got.values).toEqual([-1, o.want[1], o.want[2], o.want[3], -1]);
  });
});

describe('imported frames across a restart and a handover of the destination', () => {
  it('restart: the next life replays them (guarded); a split page not handed over is stale', async () => {
    const journal = journalPath();
    const file = hugeFile('restart');
    const first = openEngine({ journalPath: journal });
    const region = first.mapRegion({ name: 'dst', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 4);
    // One 4 KiB frame (its page split) and one frame of a page lost whole (a shared source).
    const m = manifest([3 * SUB]);
    m.regions[0].lost.push({ guestPhysAddr: hex(GPA + BigInt(2 * MiB)), size: 2 * MiB });
    expect(first.importLost(m)).toEqual({ imported: 2, alreadyLost: 0 });
    expect(first.lostPages().every((p) => p.durable)).toBe(true);
    first.close();

    const next = openEngine({ journalPath: journal });
    expect(next.journalReplay!.lost.map((f) => [f.offset, f.size, f.cause])).toEqual([
      [3 * SUB, SUB, 'imported'],
      [2 * MiB, 2 * MiB, 'imported'],
    ]);
    const events: LostEvent[] = [];
    next.on('lost', (e) => events.push(e));
    const again = next.mapRegion({ name: 'dst', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    // Page 0 was split (its data lived in private memory) and not handed over: stale, whole.
    expect(next.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual([
      [0, 2 * MiB, 'stale'],
      [2 * MiB, 2 * MiB, 'replayed'],
    ]);
    expect([...native.pageStates(again.id)]).toEqual([PageState.Lost, PageState.Lost]);
    expect(again.readAvailable(0, 4 * MiB).lostOffsets.length).toBe(1024);
    await next.whenIdle({ timeoutMs: 10_000 });
    expect(events.map((e) => e.cause).sort()).toEqual(['replayed', 'stale']);
    // Importing the same manifest in the next life changes nothing.
    const bytes = fs.readFileSync(journal);
    expect(next.importLost(m)).toEqual({ imported: 0, alreadyLost: 2 });
    expect(fs.readFileSync(journal).equals(bytes)).toBe(true);
  });

  it('handover: the successor has the imported 4 KiB frames lost and guarded, every other byte as written', async () => {
    const journal = journalPath();
    const file = hugeFile('handover');
    const first = openEngine({ journalPath: journal });
    const region = first.mapRegion({ name: 'dst', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    const lost = [7 * SUB, 2 * MiB + 100 * SUB];
    expect(first.importLost(manifest(lost))).toEqual({ imported: 2, alreadyLost: 0 });
    // The data arrives after the import (into the replacement memory), then the destination hands over.
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2246822519) >>> 0, i);
    expect(region.writeAvailable(0, data)).toEqual(lost);
    const h = await first.prepareHandover();
    expect(h.notHandedOver).toEqual([]);
    first.close();

    const next = openEngine({ journalPath: journal });
    const again = next.mapRegion({ name: 'dst', path: file, size: 4 * MiB, guestPhysAddr: GPA });
    expect(next.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual(lost.map((o) => [o, SUB, 'replayed']));
    expect([...native.pageStates(again.id)]).toEqual([PageState.Split, PageState.Split]);
    const ra = again.readAvailable(0, 4 * MiB);
    expect(ra.lostOffsets).toEqual(lost);
    const expected = Buffer.from(data);
    for (const o of lost) expected.fill(0, o, o + SUB);
    expect(ra.data.equals(expected)).toBe(true);
    for (const o of lost) expect(() => again.read(o, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
  });
});

describe('importLost and a page under recovery', () => {
  it('a paused engine with the page pending: ERR_ENGINE_PAUSED, nothing changed; after resume() the frame is guarded in the split page', async () => {
    const journal = journalPath();
    const engine = openEngine({ journalPath: journal });
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('busy'), size: 4 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 8);
    engine.pause();
    engine.injectPoison(region, 2 * MiB + 1 * SUB, { mode: 'simulate', kind: 'AO' });
    expect(native.pageStates(region.id)[1]).toBe(PageState.Pending);
    const bytes = fs.readFileSync(journal);
    expect(() => engine.importLost(manifest([2 * MiB + 2 * SUB]))).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_PAUSED', hugePageIndex: 1 }));
    expect(engine.lostPages()).toEqual([]);
    expect(fs.readFileSync(journal).equals(bytes)).toBe(true);
    expect(native.pageStates(region.id)[1]).toBe(PageState.Pending);
    // A page of the same manifest that is not busy does not make it go through half.
    expect(() => engine.importLost(manifest([5 * SUB, 2 * MiB + 2 * SUB]))).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_PAUSED' }));
    expect(native.pageStates(region.id)[0]).toBe(PageState.Normal);
    engine.resume();
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.importLost(manifest([5 * SUB, 2 * MiB + 2 * SUB]))).toEqual({ imported: 2, alreadyLost: 0 });
    expect(engine.lostPages().map((p) => [p.offset, p.cause])).toEqual([
      [5 * SUB, 'imported'],
      [2 * MiB + 1 * SUB, 'recovered'],
      [2 * MiB + 2 * SUB, 'imported'],
    ]);
    const v = verifyPattern(region, 8);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets).toEqual([5 * SUB, 2 * MiB + 1 * SUB, 2 * MiB + 2 * SUB]);
  });
});

describe('importLost while a recovery runs (engine not paused)', () => {
  for (const lazy of [false, true]) {
    it(`${lazy ? 'lazy' : 'eager'}: a frame of the page being recovered is guarded after the recovery, never raced`, async () => {
      const engine = openEngine({ lazyRecovery: lazy });
      const region = engine.mapRegion({ name: 'dst', path: hugeFile('race'), size: 4 * MiB, guestPhysAddr: GPA });
      fillPattern(region, 12);
      // The handler marks the page pending on this thread; the lane takes it meanwhile.
      engine.injectPoison(region, 2 * MiB + 40 * SUB, { mode: 'simulate', kind: 'AO' });
      expect(engine.importLost(manifest([2 * MiB + 41 * SUB, 3 * MiB]))).toEqual({ imported: 2, alreadyLost: 0 });
      await engine.whenIdle({ timeoutMs: 10_000 });
      expect(engine.lostPages().map((p) => [p.offset, p.cause])).toEqual([
        [2 * MiB + 40 * SUB, 'recovered'],
        [2 * MiB + 41 * SUB, 'imported'],
        [3 * MiB, 'imported'],
      ]);
      expect([...native.pageStates(region.id)]).toEqual([PageState.Normal, PageState.Split]);
      const v = verifyPattern(region, 12);
      expect(v.wrongBytes).toBe(0);
      expect(v.unreadableOffsets).toEqual([2 * MiB + 40 * SUB, 2 * MiB + 41 * SUB, 3 * MiB]);
    });
  }

  it('a handed-over engine refuses (ERR_HANDED_OVER), nothing changed', async () => {
    const engine = openEngine({ journalPath: journalPath() });
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('ho'), size: 4 * MiB, guestPhysAddr: GPA });
    await engine.prepareHandover();
    expect(() => engine.importLost(manifest([SUB]))).toThrow(expect.objectContaining({ code: 'ERR_HANDED_OVER' }));
    expect(engine.lostPages()).toEqual([]);
    expect([...native.pageStates(region.id)]).toEqual([PageState.Normal, PageState.Normal]);
  });
});

describe('locked memory', () => {
  it('a locked region keeps its lock on the replacement of a page split by an import', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('lock'), size: 4 * MiB, guestPhysAddr: GPA });
    region.lockMemory('on');
    try {
      fillPattern(region, 6);
      expect(engine.importLost(manifest([2 * MiB + 9 * SUB]))).toEqual({ imported: 1, alreadyLost: 0 });
      const page = region.address + BigInt(2 * MiB);
      const flags: string[][] = [];
      let cur: string[] | undefined;
      for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
        if (m) {
          cur = BigInt('0x' + m[1]) < page + BigInt(2 * MiB) && BigInt('0x' + m[2]) > page ? [] : undefined;
          if (cur) flags.push(cur);
        } else if (cur && line.startsWith('VmFlags:')) cur.push(...line.slice(8).trim().split(/\s+/));
      }
      expect(flags.length).toBeGreaterThan(0);
      for (const f of flags) {
        expect(f).not.toContain('ht'); // the replacement, not the huge page
        expect(f).toContain('lo');
      }
      expect(verifyPattern(region, 6).wrongBytes).toBe(0);
    } finally {
      region.lockMemory('off');
    }
  });
});
