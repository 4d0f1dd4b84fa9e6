// The pattern tools' guarded accesses wait for a huge page under recovery (up to 10 s) like any
// guarded accessor: the C API's per-call wait budget (issue 20 #2) must not leak into them.
import { describe, expect, it } from 'vitest';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('bindings')('hugetlb_ras');

describe('pattern tools and pages under recovery', () => {
  it('verifyPattern over a page found poisoned behind a lane backlog waits for it and skips only the lost frame', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('pattern-wait'), size: 4 * MiB });
    fillPattern(region, 8);
    // A probe with timeout 0 first: the slot it used must not hand its budget to the next user.
    const api = engine.nativeApi();
    expect(native.testCapiCheck(api, 'hva', region.address + BigInt(SUB), 0).rc).toBe(0);
    engine.pause();
    native.testRaise(region.address + BigInt(SUB), 5, 12, 2000);
    engine.injectPoison(region, 2 * MiB + 11 * SUB, { mode: 'simulate', signal: false });
    engine.resume();
    const v = verifyPattern(region, 8);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets).toEqual([2 * MiB + 11 * SUB]);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((l) => l.offset)).toEqual([2 * MiB + 11 * SUB]);
  });
});
