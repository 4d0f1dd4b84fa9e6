// Issue 24: the lazy back half takes its block (the memory the page is read into) when it starts;
// without a reserve block that memory is fresh and faulted in then, and the recovered event says how
// long that took (blockFaultNs), apart from the read. From the reserve it costs nothing (0n).
import { describe, expect, it } from 'vitest';
import type { RecoveredEvent } from '../src/index';
import { native } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';
import { until } from './helpers/time';

const lazy = native.lazyInfo();
const why = lazy.available ? '' : `skipped: no lazy path here (${lazy.reason})`;
if (why) console.warn(why);

describe.skipIf(!!why)('the lazy back half reports its block fault-in apart', () => {
  it.each([
    ['no reserve: fresh block, faulted in by the back half', 0, false],
    ['reserve: a pre-faulted block, nothing to fault', 'auto' as const, true],
  ])('%s', { timeout: 120_000 }, async (_label, reserveBytes, fromReserve) => {
    const engine = openEngine({ reserveBytes, lostPageGuard: 'uffd' });
    const region = engine.mapRegion({ name: 'bf', path: hugeFile(`bf${fromReserve}`), size: 4 * MiB });
    fillPattern(region, 31);
    if (fromReserve) await until(() => engine.stats().reserveBytes >= engine.stats().reserveTarget, 60_000);
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    const off = 2 * MiB + 9 * SUB;
    engine.injectPoison(region, off, { mode: 'simulate', kind: 'AR' });
    await until(() => got.length === 1, 30_000);
    const e = got[0];
    expect(e.path).toBe('lazy');
    expect(e.usedReserve).toBe(fromReserve);
    if (fromReserve) expect(e.blockFaultNs).toBe(0n);
    else {
      expect(e.blockFaultNs).toBeGreaterThan(0n);
      expect(e.blockFaultNs).toBeLessThan(e.filledNs); // a part of the back half, never all of it
    }
    const check = verifyPattern(region, 31);
    expect(check.wrongBytes).toBe(0);
    expect(check.unreadableOffsets).toEqual([off]);
  });
});
