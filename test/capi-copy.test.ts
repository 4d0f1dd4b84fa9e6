// Issue 22 #1, C API: copy_from_guest / copy_to_guest (API version 2) never fault. A lost frame
// reads as zeros (from) or is not written (to) and its bit is set; a huge page under recovery is
// waited for within timeout_ms; a bad range is -EINVAL.
import { describe, expect, it } from 'vitest';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('bindings')('hugetlb_ras');
const GPA = 0x100000000n;
const EINVAL = -22, ETIMEDOUT = -110;

describe('C API copy_from_guest / copy_to_guest', () => {
  it('copies around lost frames, zeros and bits for them, and waits for a page under recovery', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('capi-copy'), size: 8 * MiB, guestPhysAddr: GPA });
    const data = seededBytes(11, region.size);
    region.write(0, data);
    const api = engine.nativeApi();
    expect(native.testCapiNextLost(api, 0n)).toMatchObject({ version: 2 });
    // A lost frame in page 1 (split), a whole lost page would need a refusal: page 2 stays healthy.
    engine.injectPoison(region, 2 * MiB + 5 * SUB, { mode: 'simulate' });
    await engine.whenIdle({ timeoutMs: 10_000 });
    // From 3 frames before the lost one, unaligned start, 9 frames long.
    const start = 2 * MiB + 2 * SUB + 100;
    const len = 9 * SUB;
    const r = native.testCapiCopy(api, 'from', GPA + BigInt(start), len, 1000);
    expect(r.rc).toBe(0);
    expect(r.lost).toEqual([3]);  // frames: 2 (holds start), 3, 4, 5 -> index 3
    const want = Buffer.from(data.subarray(start, start + len));
    want.fill(0, 2 * MiB + 5 * SUB - start, 2 * MiB + 6 * SUB - start);
    expect(r.data.equals(want)).toBe(true);
    // Across the huge page boundary into a healthy page.
    const across = native.testCapiCopy(api, 'from', GPA + BigInt(4 * MiB - SUB), 2 * SUB, 0);
    expect(across.rc).toBe(0);
    expect(across.lost).toEqual([]);
    expect(across.data.equals(data.subarray(4 * MiB - SUB, 4 * MiB + SUB))).toBe(true);
    // To: every healthy frame written, the lost one not (it stays lost, its bit set).
    const bytes = Buffer.alloc(4 * SUB, 0x42);
    const w = native.testCapiCopy(api, 'to', GPA + BigInt(2 * MiB + 4 * SUB), bytes, 1000);
    expect(w).toMatchObject({ rc: 0, lost: [1] });
    expect(region.read(2 * MiB + 4 * SUB, SUB).equals(Buffer.alloc(SUB, 0x42))).toBe(true);
    expect(region.read(2 * MiB + 6 * SUB, 2 * SUB).equals(Buffer.alloc(2 * SUB, 0x42))).toBe(true);
    expect(() => region.read(2 * MiB + 5 * SUB, 1)).toThrow();
    expect(engine.lostPages().map((l) => l.offset)).toEqual([2 * MiB + 5 * SUB]);

    // A fresh poison met by the copy itself, behind a lane backlog: timeout 0 gives up (-ETIMEDOUT),
    // a longer one waits for the recovery and skips the frame.
    engine.pause();
    native.testRaise(region.address + BigInt(SUB), 5, 12, 2000);
    engine.injectPoison(region, 6 * MiB + 7 * SUB, { mode: 'simulate', signal: false });
    engine.resume();
    expect(native.testCapiCopy(api, 'from', GPA + BigInt(6 * MiB), 16 * SUB, 0).rc).toBe(ETIMEDOUT);
    const late = native.testCapiCopy(api, 'from', GPA + BigInt(6 * MiB), 16 * SUB, 10_000);
    expect(late.rc).toBe(0);
    expect(late.lost).toEqual([7]);
    const want2 = Buffer.from(data.subarray(6 * MiB, 6 * MiB + 16 * SUB));
    want2.fill(0, 7 * SUB, 8 * SUB);
    expect(late.data.equals(want2)).toBe(true);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((l) => l.offset).sort((a, b) => a - b)).toEqual([2 * MiB + 5 * SUB, 6 * MiB + 7 * SUB]);
  });

  it('a range not inside one region is -EINVAL and copies nothing; an empty copy is 0', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('capi-copy-inval'), size: 2 * MiB, guestPhysAddr: GPA });
    region.write(0, Buffer.alloc(2 * MiB, 1));
    const api = engine.nativeApi();
    expect(native.testCapiCopy(api, 'from', GPA - 4096n, 8192, 0).rc).toBe(EINVAL);
    expect(native.testCapiCopy(api, 'from', GPA + BigInt(2 * MiB - SUB), 2 * SUB, 0).rc).toBe(EINVAL);
    expect(native.testCapiCopy(api, 'to', GPA + BigInt(2 * MiB - SUB), Buffer.alloc(2 * SUB, 9), 0).rc).toBe(EINVAL);
    expect(region.read(2 * MiB - SUB, SUB).equals(Buffer.alloc(SUB, 1))).toBe(true);
    expect(native.testCapiCopy(api, 'from', GPA, 0, 0)).toMatchObject({ rc: 0, lost: [] });
  });
});
