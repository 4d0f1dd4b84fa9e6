// The reserve (issue 10 #7): one pool per huge page size, depth configurable, refilled in the
// background, its cost in stats().
import { describe, expect, it } from 'vitest';
import { RasEngine, type RecoveredEvent } from '../src/index';
import { RESERVE_1G_STALL, reserveWish } from '../src/pipeline/reserve';
import type { Region } from '../src/region';
import { fillPattern, verifyPattern } from '../src/testing';
import { DIR_1G, GiB, has1G, hugeFile, MiB, openEngine, SUB } from './helpers';
import { until } from './helpers/time';

describe('reserve', () => {
  it('keeps each page size served: two 2 MiB recoveries leave the 1 GiB block alone', { timeout: 120_000 }, async () => {
    const big = has1G();
    const engine = openEngine({ reserveBytes: 'auto', reserve: { '2M': 2, '1G': 1 }, lazyRecovery: false });
    const small = engine.mapRegion({ name: 'small', path: hugeFile('rs'), size: 4 * MiB });
    const large = big ? engine.mapRegion({ name: 'large', path: hugeFile('rl', DIR_1G), size: GiB, guestPhysAddr: 1n << 32n }) : undefined;
    await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 60_000);
    const s0 = engine.stats();
    expect(s0.reserve['2M']).toMatchObject({ depth: 2, ready: 2, bytes: 4 * MiB });
    if (large) expect(s0.reserve['1G']).toMatchObject({ depth: 1, ready: 1, bytes: GiB });
    expect(s0.reserveTarget).toBe(4 * MiB + (large ? GiB : 0));
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    fillPattern(small, 3);
    engine.injectPoison(small, 5 * SUB, { mode: 'simulate' });
    engine.injectPoison(small, 2 * MiB + 9 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 30_000 });
    expect(got.map((e) => e.usedReserve)).toEqual([true, true]);
    expect(verifyPattern(small, 3).wrongBytes).toBe(0);
    if (large) {
      fillPattern(large, 4);
      engine.injectPoison(large, 77 * SUB, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 60_000 });
      expect(got).toHaveLength(3);
      expect(got[2].usedReserve).toBe(true);
      expect(verifyPattern(large, 4).wrongBytes).toBe(0);
      expect(engine.stats().reserve['1G'].taken).toBe(1);
    }
    // Refilled in the background.
    await until(() => engine.stats().reserve['2M'].ready === 2, 30_000);
    expect(engine.stats().reserve['2M'].taken).toBe(2);
  });

  it('a number keeps as many whole blocks of each size as fit; 0 keeps none', async () => {
    const engine = openEngine({ reserveBytes: 5 * MiB });
    engine.mapRegion({ name: 'r', path: hugeFile('rn'), size: 2 * MiB });
    await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 30_000);
    expect(engine.stats().reserve['2M']).toMatchObject({ depth: 2, ready: 2 });
    expect(engine.stats().reserveTarget).toBe(4 * MiB);
  });

  it("'auto' holds 8 blocks of 2 MiB and no 1 GiB block: at most 32 MiB whatever page sizes a VMM maps", () => {
    const r = (hugePageSize: number) => ({ hugePageSize }) as Region;
    const wish = reserveWish('auto', undefined, [r(2 * MiB), r(GiB), r(GiB)]);
    expect([...wish]).toEqual([[2 * MiB, 8]]);
    const bytes = [...wish].reduce((a, [size, d]) => a + size * d, 0);
    expect(bytes).toBeLessThanOrEqual(32 * MiB);
    expect([...reserveWish('auto', { '1G': 1 }, [r(GiB)])]).toEqual([[GiB, 1]]); // the operator's choice
    expect(RESERVE_1G_STALL).toMatch(/reserve: \{ '1G': 1 \}/);
  });

  it('an engine with a 2 MiB region holds 16 MiB by default', async () => {
    const engine = RasEngine.open({});
    try {
      engine.mapRegion({ name: 'd', path: hugeFile('rd'), size: 2 * MiB });
      await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 30_000);
      expect(engine.stats().reserveTarget).toBe(16 * MiB);
      expect(engine.stats().reserve1GStall).toBeUndefined();
    } finally {
      engine.close();
    }
  });

  it('refuses a bad depth', () => {
    expect(() => openEngine({ reserve: { '2M': -1 } })).toThrow(/reserve/);
    expect(() => openEngine({ reserve: { '4K': 1 } as never })).toThrow(/unknown page size/);
  });
});
