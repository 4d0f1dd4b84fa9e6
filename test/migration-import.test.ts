// Issue 22 item 2: a migration destination makes the source's lost frames lost here
// (engine.importLost), on the eager and the lazy engine, before and after the data arrives.
import { describe, expect, it } from 'vitest';
import type { LostEvent, LostManifest } from '../src/index';
import { native, PageState } from '../src/native';
import { fillPattern, startVcpuLoad, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x1_0000_0000n;
const hex = (v: bigint) => '0x' + v.toString(16);

function manifest(frames: { gpa: bigint; size?: number }[], size = 8 * MiB, gpa = GPA): LostManifest {
  return {
    format: 'hugetlb-ras-lost',
    version: 1,
    regions: [{ name: 'src-ram', guestPhysAddr: hex(gpa), size, hugePageSize: 2 * MiB, lost: frames.map((f) => ({ guestPhysAddr: hex(f.gpa), size: f.size ?? SUB })) }],
  };
}

for (const lazy of [false, true]) {
  describe(`importLost (${lazy ? 'lazy' : 'eager'} engine)`, () => {
    it('after the data arrived: the page is split with its bytes kept, the frames lost and guarded', async () => {
      const engine = openEngine({ lazyRecovery: lazy });
      const region = engine.mapRegion({ name: 'dst-ram', path: hugeFile('imp'), size: 8 * MiB, guestPhysAddr: GPA });
      fillPattern(region, 11);
      const events: LostEvent[] = [];
      engine.on('lost', (e) => events.push(e));
      const lostOffsets = [2 * MiB + 5 * SUB, 2 * MiB + 6 * SUB, 6 * MiB + 511 * SUB];
      const r = engine.importLost(manifest(lostOffsets.map((o) => ({ gpa: GPA + BigInt(o) }))));
      expect(r).toEqual({ imported: 3, alreadyLost: 0 });
      expect(events).toEqual([]); // delivered after importLost returned
      const lost = engine.lostPages();
      expect(lost.map((p) => [p.offset, p.size, p.cause, p.guestPhysAddr])).toEqual(lostOffsets.map((o) => [o, SUB, 'imported', GPA + BigInt(o)]));
      const states = native.pageStates(region.id);
      expect([...states]).toEqual([PageState.Normal, PageState.Split, PageState.Normal, PageState.Split]);
      // Every other byte is as it was; the imported frames read as lost.
      const v = verifyPattern(region, 11);
      expect(v.wrongBytes).toBe(0);
      expect(v.unreadableOffsets).toEqual(lostOffsets);
      const ra = region.readAvailable(0, 8 * MiB);
      expect(ra.lostOffsets).toEqual(lostOffsets);
      for (const o of lostOffsets) expect(ra.data.subarray(o, o + SUB).every((b) => b === 0)).toBe(true);
      for (const o of lostOffsets) expect(() => region.read(o, 1)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
      await engine.whenIdle({ timeoutMs: 10_000 });
      await new Promise((r2) => setImmediate(r2));
      expect(events.map((e) => [e.offset, e.size, e.cause])).toEqual(lostOffsets.map((o) => [o, SUB, 'imported']));
      // A vCPU touching the split page gets a machine check for exactly the imported frames, and
      // reads the pattern everywhere else.
      const load = startVcpuLoad(engine, { region, threads: 2, seed: 11, window: { offset: 2 * MiB, length: 2 * MiB } });
      await new Promise((r2) => setTimeout(r2, 300));
      const rep = await load.stop();
      expect(rep.wrongBytes).toBe(0);
      expect(rep.mceReports.length).toBeGreaterThan(0);
      for (const m of rep.mceReports) expect([2 * MiB + 5 * SUB, 2 * MiB + 6 * SUB]).toContain(m.offset - (m.offset % SUB));
      // The same manifest again changes nothing.
      const again = engine.importLost(manifest(lostOffsets.map((o) => ({ gpa: GPA + BigInt(o) }))));
      expect(again).toEqual({ imported: 0, alreadyLost: 3 });
      await new Promise((r2) => setImmediate(r2));
      expect(events.length).toBe(3);
      expect(engine.lostPages().length).toBe(3);
    });

    it('before the data arrives: writes skip the imported frames, the healthy bytes read back exactly', async () => {
      const engine = openEngine({ lazyRecovery: lazy });
      const region = engine.mapRegion({ name: 'dst-ram', path: hugeFile('imp'), size: 4 * MiB, guestPhysAddr: GPA });
      const lostOffsets = [0, 17 * SUB, 2 * MiB + 100 * SUB];
      expect(engine.importLost(manifest(lostOffsets.map((o) => ({ gpa: GPA + BigInt(o) })), 4 * MiB))).toEqual({ imported: 3, alreadyLost: 0 });
      const data = Buffer.alloc(4 * MiB);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      const skipped = region.writeAvailable(0, data);
      expect(skipped).toEqual(lostOffsets);
      const ra = region.readAvailable(0, 4 * MiB);
      expect(ra.lostOffsets).toEqual(lostOffsets);
      const expected = Buffer.from(data);
      for (const o of lostOffsets) expected.fill(0, o, o + SUB);
      expect(ra.data.equals(expected)).toBe(true);
    });

    it('a second, larger manifest adds only the new frames; a frame lost here already counts as alreadyLost', async () => {
      const engine = openEngine({ lazyRecovery: lazy });
      const region = engine.mapRegion({ name: 'dst-ram', path: hugeFile('imp'), size: 8 * MiB, guestPhysAddr: GPA });
      fillPattern(region, 3);
      const events: LostEvent[] = [];
      engine.on('lost', (e) => events.push(e));
      expect(engine.importLost(manifest([{ gpa: GPA + BigInt(9 * SUB) }]))).toEqual({ imported: 1, alreadyLost: 0 });
      // A second manifest: one old frame, one new in the split page (guarded in place), one in a new
      // page, and a whole huge page.
      const second = manifest([{ gpa: GPA + BigInt(9 * SUB) }, { gpa: GPA + BigInt(10 * SUB) }, { gpa: GPA + BigInt(2 * MiB + 3 * SUB) }, { gpa: GPA + BigInt(4 * MiB), size: 2 * MiB }]);
      expect(engine.importLost(second)).toEqual({ imported: 3, alreadyLost: 1 });
      expect(engine.lostPages().map((p) => [p.offset, p.size])).toEqual([
        [9 * SUB, SUB],
        [10 * SUB, SUB],
        [2 * MiB + 3 * SUB, SUB],
        [4 * MiB, 2 * MiB],
      ]);
      expect([...native.pageStates(region.id)]).toEqual([PageState.Split, PageState.Split, PageState.Lost, PageState.Normal]);
      const v = verifyPattern(region, 3);
      expect(v.wrongBytes).toBe(0);
      expect(v.unreadableOffsets.slice(0, 3)).toEqual([9 * SUB, 10 * SUB, 2 * MiB + 3 * SUB]);
      expect(v.unreadableOffsets.length).toBe(3 + 512);
      await new Promise((r2) => setImmediate(r2));
      expect(events.map((e) => e.offset)).toEqual([9 * SUB, 10 * SUB, 2 * MiB + 3 * SUB, 4 * MiB]);
      expect(engine.importLost(second)).toEqual({ imported: 0, alreadyLost: 4 });
    });

    it('a page split by a local loss gets the imported frames guarded in place, without re-reading it', async () => {
      const engine = openEngine({ lazyRecovery: lazy });
      const region = engine.mapRegion({ name: 'dst-ram', path: hugeFile('imp'), size: 4 * MiB, guestPhysAddr: GPA });
      fillPattern(region, 5);
      engine.injectPoison(region, 7 * SUB, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 10_000 });
      expect(native.pageStates(region.id)[0]).toBe(PageState.Split);
      // The split page's private memory now differs from the file: a re-read would lose this write.
      region.write(20 * SUB, Buffer.from('private bytes'));
      const r = engine.importLost(manifest([{ gpa: GPA + BigInt(7 * SUB) }, { gpa: GPA + BigInt(8 * SUB) }], 4 * MiB));
      expect(r).toEqual({ imported: 1, alreadyLost: 1 });
      expect(engine.lostPages().map((p) => [p.offset, p.cause])).toEqual([
        [7 * SUB, 'recovered'],
        [8 * SUB, 'imported'],
      ]);
      expect(region.read(20 * SUB, 13).toString()).toBe('private bytes');
      expect(region.readAvailable(0, 2 * MiB).lostOffsets).toEqual([7 * SUB, 8 * SUB]);
    });
  });
}

describe('importLost: whole pages and a split that reads a local loss', () => {
  it('every 4 KiB frame of a huge page imported: the page is lost whole, no split, no refused event', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('all'), size: 4 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 13);
    const seen: string[] = [];
    for (const name of ['lost', 'refused', 'recovered'] as const) engine.on(name, () => seen.push(name));
    const all = Array.from({ length: 512 }, (_, i) => ({ gpa: GPA + BigInt(2 * MiB + i * SUB) }));
    // Recorded as this engine records a whole lost page: one entry (a restart replays it as such).
    expect(engine.importLost(manifest(all, 4 * MiB))).toEqual({ imported: 1, alreadyLost: 0 });
    expect([...native.pageStates(region.id)]).toEqual([PageState.Normal, PageState.Lost]);
    expect(engine.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual([[2 * MiB, 2 * MiB, 'imported']]);
    expect(verifyPattern(region, 13).unreadableOffsets.length).toBe(512);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(seen).toEqual(['lost']);
    expect(engine.importLost(manifest(all, 4 * MiB))).toEqual({ imported: 0, alreadyLost: 1 });
  });

  it('a subpage the split cannot read (a silent local poison) is a loss of this host; all unreadable: the page is refused whole, recorded', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'dst', path: hugeFile('local'), size: 4 * MiB, guestPhysAddr: GPA });
    fillPattern(region, 14);
    const events: LostEvent[] = [];
    const refused: unknown[] = [];
    engine.on('lost', (e) => events.push(e));
    engine.on('refused', (e) => refused.push(e));
    // Silent poison (the report would come with the next access): the split's read finds it.
    engine.injectPoison(region, 9 * SUB, { mode: 'simulate', signal: false });
    expect(engine.importLost(manifest([{ gpa: GPA + BigInt(5 * SUB) }], 4 * MiB))).toEqual({ imported: 1, alreadyLost: 0 });
    expect(engine.lostPages().map((p) => [p.offset, p.cause])).toEqual([
      [5 * SUB, 'imported'],
      [9 * SUB, 'recovered'],
    ]);
    // Page 1: its last subpage silently poisoned, the other 511 imported (the first among them): nothing
    // left to split for.
    engine.injectPoison(region, 4 * MiB - SUB, { mode: 'simulate', signal: false });
    const rest = Array.from({ length: 511 }, (_, i) => ({ gpa: GPA + BigInt(2 * MiB + i * SUB) }));
    expect(engine.importLost(manifest([{ gpa: GPA + BigInt(5 * SUB) }, ...rest], 4 * MiB))).toEqual({ imported: 511, alreadyLost: 1 });
    expect([...native.pageStates(region.id)]).toEqual([PageState.Split, PageState.Lost]);
    expect(engine.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual([
      [5 * SUB, SUB, 'imported'],
      [9 * SUB, SUB, 'recovered'],
      [2 * MiB, 2 * MiB, 'refused'],
    ]);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(events.filter((e) => e.cause === 'recovered').map((e) => e.offset)).toEqual([9 * SUB]);
    expect(refused).toEqual([expect.objectContaining({ hugePageIndex: 1, reason: 'read-back-failed', size: 2 * MiB })]);
  });
});

describe('importLost: a region not eligible for recovery', () => {
  it('share=on loses the whole huge page, as at the source', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'shared', path: hugeFile('imp'), size: 4 * MiB, guestPhysAddr: GPA, share: true });
    fillPattern(region, 2);
    const events: LostEvent[] = [];
    engine.on('lost', (e) => events.push(e));
    const r = engine.importLost(manifest([{ gpa: GPA + BigInt(2 * MiB + 5 * SUB) }, { gpa: GPA + BigInt(2 * MiB + 6 * SUB) }], 4 * MiB));
    expect(r).toEqual({ imported: 1, alreadyLost: 0 });
    expect(engine.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual([[2 * MiB, 2 * MiB, 'imported']]);
    expect([...native.pageStates(region.id)]).toEqual([PageState.Normal, PageState.Lost]);
    expect(region.readAvailable(0, 4 * MiB).lostOffsets.length).toBe(512);
    expect(verifyPattern(region, 2).wrongBytes).toBe(0);
    await new Promise((r2) => setImmediate(r2));
    expect(events.map((e) => [e.offset, e.size])).toEqual([[2 * MiB, 2 * MiB]]);
  });
});
