// Issue 19, defect 1: a page of the lazy range pinned for I/O (an io_uring fixed buffer, as SPDK or a
// vhost backend registers guest RAM; O_DIRECT reads) cannot be moved back into the block. It must
// never become a hole or a loss: the back half leaves it where it is and finishes in place.
import { describe, expect, it } from 'vitest';
import type { RecoveredEvent } from '../src/index';
import { native, PageState } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';
import { until } from './helpers/time';

const t = native as unknown as {
  testPinIoUring(addr: bigint, len: number): number;
  testUnpin(fd: number): number;
};
const lazy = native.lazyInfo();
const PIECE = 64 * 1024;

describe.skipIf(!lazy.available)('a pinned page in the lazy back half', () => {
  it('io_uring fixed buffer over a touched piece: every healthy byte right, no invented loss, nothing registered', { timeout: 60_000 }, async () => {
    const engine = openEngine({ reserveBytes: 'auto', lostPageGuard: 'uffd' });
    const region = engine.mapRegion({ name: 'pin', path: hugeFile('pin'), size: 2 * MiB });
    fillPattern(region, 31);
    await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 30_000);
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    const before = engine.stats().recovery;
    native.testHoldBackHalves(true);
    let ring = -1;
    try {
      const lostAt = 3 * SUB;
      engine.injectPoison(region, lostAt, { mode: 'simulate', kind: 'AR' });
      await until(() => native.pageStates(region.id)[0] === PageState.Split, 30_000);
      // A piece the guest touches and writes during the fill, then pinned by an io_uring buffer.
      const at = 9 * PIECE;
      const orig = region.read(at, PIECE);
      const mine = Buffer.alloc(PIECE, 0x5a);
      region.write(at, mine);
      ring = t.testPinIoUring(region.address + BigInt(at), PIECE);
      expect(ring).toBeGreaterThanOrEqual(0);
      native.testHoldBackHalves(false);
      await until(() => got.length === 1, 30_000);
      await engine.whenIdle({ timeoutMs: 30_000 });
      expect(got[0]).toMatchObject({ path: 'lazy', lostGuestPhysAddrs: [BigInt(lostAt)], bytesRecovered: 2 * MiB - SUB });
      expect(engine.lostPages().map((p) => p.offset)).toEqual([lostAt]);
      expect(region.read(at, PIECE).equals(mine)).toBe(true);
      const check = verifyPattern(region, 31);
      expect(check.unreadableOffsets).toEqual([lostAt]);
      expect(check.wrongBytes).toBe(orig.filter((b) => b !== 0x5a).length); // exactly the guest's writes
      // The swap was called off for the pinned page: finished in place.
      expect(engine.stats().recovery.inPlaceFinishes).toBe(before.inPlaceFinishes + 1);
    } finally {
      native.testHoldBackHalves(false);
      if (ring >= 0) t.testUnpin(ring);
    }
  });
});
