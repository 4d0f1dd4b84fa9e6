// Issue 19, defect 17: one transient guard failure (ENOMEM at vm.max_map_count when the marker's
// range is registered, memcg ENOMEM in UFFDIO_POISON) made every later split of the region use a
// fault guard (guard markers / PROT_NONE, which KVM cannot resolve: EFAULT) for good, and turned the
// lazy path off for it. The region keeps its chosen guard; the event of the split that fell back
// says what it got.
import { describe, expect, it } from 'vitest';
import type { RecoveredEvent } from '../src/index';
import { native } from '../src/native';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const t = native as unknown as { testFailNextMarker(errno: number): void };
const ENOMEM = 12;

describe('the chosen guard and the one used', () => {
  it('one fallback to a fault guard is not for good', async () => {
    const engine = openEngine({ reserveBytes: 0, lostPageGuard: 'uffd', lazyRecovery: false });
    if (engine.lostPageGuard !== 'uffd') return; // no userfaultfd here: nothing to fall back from
    const region = engine.mapRegion({ name: 'gc', path: hugeFile('gc'), size: 6 * MiB });
    region.write(0, Buffer.alloc(6 * MiB, 7));
    const got: RecoveredEvent[] = [];
    engine.on('recovered', (e) => got.push(e));
    t.testFailNextMarker(ENOMEM);
    engine.injectPoison(region, 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    engine.injectPoison(region, 2 * MiB + 9 * SUB, { mode: 'simulate' });
    engine.injectPoison(region, 4 * MiB + 11 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(got.map((e) => e.guard)).toEqual(['guard', 'uffd', 'uffd']);
    expect(got[0].guardErrno).toBe(-ENOMEM);
    for (const off of [5 * SUB, 2 * MiB + 9 * SUB, 4 * MiB + 11 * SUB]) expect(() => region.read(off, 1)).toThrow();
    expect(engine.lostPages().map((p) => p.offset)).toEqual([5 * SUB, 2 * MiB + 9 * SUB, 4 * MiB + 11 * SUB]);
  });
});
