// Issue 20 #6: a report merged while its huge page was pending is decided by what the recovery's
// read of that subpage saw. Here the eager read-back copies the subpage intact, and only then does
// the old page get poisoned there (a test switch holds the lane between its read-back and the split):
// the data is not lost, and no loss may be invented for it.
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('bindings')('hugetlb_ras');

describe('reports merged into a recovery (eager path)', () => {
  it('a merged report for a subpage the read-back copied intact is not a loss, even if the old page is poisoned there afterwards', async () => {
    const engine = openEngine({ lazyRecovery: false });
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('merged'), size: 4 * MiB });
    const data = seededBytes(21, region.size);
    region.write(0, data);
    const first = 2 * MiB + 3 * SUB, merged = 2 * MiB + 9 * SUB;
    native.testHoldAfterRead(1);
    try {
      engine.pause();
      engine.injectPoison(region, first, { mode: 'simulate' });           // the page is pending
      native.testRaise(region.address + BigInt(merged), 5, 12, 1);         // a report merged into it
      engine.resume();
      const until = Date.now() + 10_000;
      while (native.testHoldAfterRead(-1) !== 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 2));
      expect(native.testHoldAfterRead(-1)).toBe(2);
      // Read back, not yet split: now the old page is poisoned at the merged report's subpage.
      engine.injectPoison(region, merged, { mode: 'simulate', signal: false });
    } finally {
      native.testHoldAfterRead(0);
    }
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((l) => l.offset)).toEqual([first]);
    expect(region.read(merged, SUB).equals(data.subarray(merged, merged + SUB))).toBe(true);
  });
});
