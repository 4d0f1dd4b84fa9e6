import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fillPattern, verifyPattern } from '../src/testing';
import { freeHugePages, hugeFile, MiB, openEngine, smapsAt, SUB } from './helpers';

const NR = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';

describe('guest reset gives huge pages back', () => {
  it('punches the split page out and maps a fresh, zeroed huge page in its place', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('reset'), size: 4 * MiB, guestPhysAddr: 0n });
    fillPattern(region, 8);
    const freeBefore = freeHugePages('2048kB');
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const addr = region.address + BigInt(2 * MiB);
    expect(smapsAt(addr)?.kernelPageKb).toBe(4);
    expect(engine.lostPages()).toHaveLength(1);

    const resets: unknown[] = [];
    engine.on('reset', (e) => resets.push(e));
    const ev = await engine.resetRegion(region);
    expect(ev).toEqual({ region: 'ram', restoredHugePages: 1, stillSplit: 0, skipped: [] });
    expect(resets).toEqual([ev]);
    const sm = smapsAt(addr);
    expect(sm?.kernelPageKb).toBe(2048);
    // Populated: a real huge page is there (mapped once, so the kernel counts it as "Private").
    expect((sm?.fields.Shared_Hugetlb ?? 0) + (sm?.fields.Private_Hugetlb ?? 0)).toBe(2048);
    expect(freeHugePages('2048kB')).toBe(freeBefore);
    expect(engine.lostPages()).toEqual([]);
    expect(engine.stats().regions[0]).toMatchObject({ splitHugePages: 0, lostSubpages: 0 });
    // Fresh memory: zeroes, readable everywhere (the lost frame too); the other page kept its data.
    expect(region.read(2 * MiB, 2 * MiB).equals(Buffer.alloc(2 * MiB))).toBe(true);
    const check = verifyPattern(region, 8);
    expect(check.unreadableOffsets).toEqual([]);
    expect(check.wrongBytes).toBeGreaterThan(0); // the reset page is zero, not the pattern
    expect(region.read(0, 2 * MiB).equals(Buffer.from(region.read(0, 2 * MiB)))).toBe(true);
    fillPattern(region, 8);
    expect(verifyPattern(region, 8).wrongBytes).toBe(0);
  });

  it('restores a refused (whole lost) huge page of a private region too', async () => {
    const engine = openEngine({ kernelReadsAroundPoison: false });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('reset-refused'), size: 2 * MiB });
    engine.injectPoison(region, 0, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(() => region.read(0, 1)).toThrow();
    expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 1, stillSplit: 0, skipped: [] });
    expect(region.read(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
    expect(smapsAt(region.address)?.kernelPageKb).toBe(2048);
  });

  for (const [spec, reason] of [
    [{ share: true }, 'shared-mapping'],
    [{ consumers: ['vhost-user'] }, 'vhost-user'],
    [{ consumers: ['ivshmem'] }, 'ivshmem'],
    [{ consumers: ['vfio'] }, 'vfio'],
  ] as const) {
    it(`never punches or remaps a ${reason} region: the page stays lost and the reset says why`, async () => {
      const engine = openEngine();
      const path = hugeFile(`reset-${reason}`);
      const region = engine.mapRegion({ name: 'ram', path, size: 4 * MiB, guestPhysAddr: 0x1000_0000n, ...spec });
      region.write(2 * MiB + 64, Buffer.from('peer data'));
      engine.injectPoison(region, 2 * MiB + 3 * SUB, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 10_000 });
      // What the peer sees: the file itself (a second mapping would be the peer's).
      const peer = () => {
        const fd = fs.openSync(path, 'r');
        const b = Buffer.alloc(9);
        fs.readSync(fd, b, 0, 9, 2 * MiB + 64);
        fs.closeSync(fd);
        return b.toString();
      };
      const resets: unknown[] = [];
      engine.on('reset', (e) => resets.push(e));
      const ev = await engine.resetRegion(region);
      expect(ev).toEqual({
        region: 'ram',
        restoredHugePages: 0,
        stillSplit: 0,
        skipped: [{ hugePageIndex: 1, hugePageGuestPhysAddr: 0x1020_0000n, reason, message: expect.stringMatching(/zeros|pinned/) }],
      });
      expect(resets).toEqual([ev]);
      expect(peer()).toBe('peer data'); // not punched
      expect(() => region.read(2 * MiB, 1)).toThrow(); // still lost, not remapped
      expect(engine.lostPages()).toHaveLength(1);
    });
  }

  it.skipIf(process.getuid?.() !== 0)('keeps working on fresh 4 KiB memory and says so when the huge page pool is empty (needs root: shrinks the pool)', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('empty-pool'), size: 2 * MiB });
    fillPattern(region, 2);
    engine.injectPoison(region, 3 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    const nr = fs.readFileSync(NR, 'utf8').trim();
    // Shrink the pool to nothing: pages in use become surplus, so the page the reset punches out
    // leaves the pool for good (as a really poisoned page does) and no fresh one can be had.
    fs.writeFileSync(NR, '0');
    let ev;
    try {
      ev = await engine.resetRegion(region);
    } finally {
      fs.writeFileSync(NR, nr);
    }
    expect(ev).toMatchObject({ restoredHugePages: 0, stillSplit: 1 });
    expect(ev.reason).toMatch(/no huge page/);
    expect(engine.lostPages()).toEqual([]);
    // The memory is usable (fresh zeroes, the lost frame too), on 4 KiB pages.
    expect(region.read(0, 2 * MiB).equals(Buffer.alloc(2 * MiB))).toBe(true);
    region.write(3 * SUB, Buffer.from('ok'));
    expect(region.read(3 * SUB, 2).toString()).toBe('ok');
    expect(smapsAt(region.address)?.kernelPageKb).toBe(4);
  });
});
