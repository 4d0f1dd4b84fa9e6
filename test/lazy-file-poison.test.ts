// Issue 19, defect 7: a lazy back half reads the whole old page into its block while the guest runs
// on the pieces it touched. A poison that lands on the old page after a piece was read from it hits
// memory nobody maps any more: the guest's copy of that piece (with its writes since) is what the
// swap keeps, so the back half's failed read of it is no loss. A piece nobody touched yet has no
// other copy: there the failed read is a loss, recorded and guarded.
import { describe, expect, it } from 'vitest';
import type { RecoveredEvent } from '../src/index';
import { native, PageState } from '../src/native';
import { poisonBackingFile } from '../src/testing';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';
import { until } from './helpers/time';

const lazy = native.lazyInfo();
const PIECE = 64 * 1024;

describe.skipIf(!lazy.available)('poison of the old page during a lazy back half', () => {
  it('a touched piece keeps the guest data and writes; an untouched piece is a loss', { timeout: 60_000 }, async () => {
    const engine = openEngine({ lostPageGuard: 'uffd' });
    const region = engine.mapRegion({ name: 'fp', path: hugeFile('fp'), size: 2 * MiB });
    const data = seededBytes(71, region.size);
    region.write(0, data);
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    native.testHoldBackHalves(true);
    try {
      const first = 3 * SUB;
      engine.injectPoison(region, first, { mode: 'simulate', kind: 'AR' });
      await until(() => native.pageStates(region.id)[0] === PageState.Split, 30_000);
      // The guest touches piece 9 (read from the file, good) and writes into it.
      const touched = 9 * PIECE + 5 * SUB;
      expect(region.read(touched, SUB).equals(data.subarray(touched, touched + SUB))).toBe(true);
      const mine = Buffer.alloc(SUB, 0x6b);
      region.write(touched, mine);
      // Then the old page goes bad there, and in piece 20, which nobody touched.
      const untouched = 20 * PIECE + 7 * SUB;
      poisonBackingFile(region, touched);
      poisonBackingFile(region, untouched);
      native.testHoldBackHalves(false);
      await until(() => got.length === 1, 30_000);
      await engine.whenIdle({ timeoutMs: 30_000 });
      expect(got[0].lostGuestPhysAddrs).toEqual([BigInt(first), BigInt(untouched)]);
      expect(engine.lostPages().map((p) => p.offset)).toEqual([first, untouched]);
      expect(region.read(touched, SUB).equals(mine)).toBe(true);
      // Every other byte of the page is the guest's.
      for (const at of [0, touched + SUB, 2 * MiB - SUB])
        expect(region.read(at, SUB).equals(data.subarray(at, at + SUB))).toBe(true);
      expect(() => region.read(untouched, SUB)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    } finally {
      native.testHoldBackHalves(false);
    }
  });
});
