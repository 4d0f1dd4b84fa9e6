import { describe, expect, it } from 'vitest';
import type { RecoveredEvent } from '../src/index';
import { fillPattern, verifyPattern } from '../src/testing';
import { DIR_1G, GiB, has1G, hugeFile, openEngine, SUB } from './helpers';

const available = has1G();
// Without a free 1 GiB page (scripts/setup-hugetlbfs.sh as root reserves them) vitest reports these as skipped.
describe.skipIf(!available)(`1 GiB pages (needs a free 1 GiB huge page at ${DIR_1G})`, () => {
  it('splits a poisoned 1 GiB page: 262143 subpages intact, one lost, mostly still on 2 MiB pages', async () => {
    const engine = openEngine({ reserveBytes: 'auto' });
    const region = engine.mapRegion({ name: 'big', path: hugeFile('1g', DIR_1G), size: GiB, guestPhysAddr: 0x4000_0000n });
    expect(region.hugePageSize).toBe(GiB);
    fillPattern(region, 77);
    const recovered: RecoveredEvent[] = [];
    engine.on('recovered', (e) => recovered.push(e));
    const off = 123_457 * SUB;
    engine.injectPoison(region, off, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 60_000 });
    expect(recovered).toHaveLength(1);
    expect(recovered[0].lostGuestPhysAddrs).toEqual([0x4000_0000n + BigInt(off)]);
    expect(recovered[0].bytesRecovered).toBe(GiB - SUB);
    const check = verifyPattern(region, 77);
    expect(check.wrongBytes).toBe(0);
    expect(check.unreadableOffsets).toEqual([off]);
    expect(check.checkedBytes).toBe(262_143 * SUB);
    // All but the 2 MiB around the lost frame stays on transparent huge pages (where THP is on).
    const share = engine.hugeMappedShare(region, 0);
    console.log(`1 GiB page after recovery: ${(share * 100).toFixed(2)}% mapped with 2 MiB pages`);
    expect(share).toBeGreaterThanOrEqual(0.99);
    expect(await engine.resetRegion(region)).toMatchObject({ restoredHugePages: 1 });
  });
});
