// Guarded access (region.read / region.write, what device emulation in a VMM uses) to a huge page
// that is being recovered: its healthy part is not lost, so the access waits as a vCPU does and
// returns the data; only lost memory throws ERR_POISONED. While the engine is paused it cannot wait.
import { describe, expect, it } from 'vitest';
import { PoisonError } from '../src/index';
import { hugeFile, MiB, openEngine, seededBytes, SUB } from './helpers';

describe('guarded access to a huge page under recovery', () => {
  it('a read or write of its healthy part waits and succeeds; the lost frame throws; paused: ERR_ENGINE_PAUSED', async () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'ram', path: hugeFile('guarded'), size: 4 * MiB });
    const data = seededBytes(5, region.size);
    region.write(0, data);
    const lostOff = 2 * MiB + 7 * SUB;
    engine.pause();
    // Silent: the report comes with the next access, which then finds the page pending.
    engine.injectPoison(region, lostOff, { mode: 'simulate', signal: false });
    expect(() => region.read(2 * MiB, 16)).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_PAUSED', offset: 2 * MiB }));
    expect(() => region.write(2 * MiB + SUB, Buffer.alloc(4, 1))).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_PAUSED' }));
    expect(engine.stats().regions[0].splitHugePages).toBe(0);
    engine.resume();
    // At once, while the recovery lane works: the healthy part of the page reads back.
    expect(region.read(2 * MiB, 2 * SUB).equals(data.subarray(2 * MiB, 2 * MiB + 2 * SUB))).toBe(true);
    region.write(2 * MiB + SUB, Buffer.from('device wrote this'));
    expect(region.read(2 * MiB + SUB, 17).toString()).toBe('device wrote this');
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((l) => l.offset)).toEqual([lostOff]);
    expect(() => region.read(lostOff, 1)).toThrow(PoisonError);
    // Around the lost frame, everything else of the page is intact.
    expect(region.read(lostOff - SUB, SUB).equals(data.subarray(lostOff - SUB, lostOff))).toBe(true);
    expect(region.read(lostOff + SUB, SUB).equals(data.subarray(lostOff + SUB, lostOff + 2 * SUB))).toBe(true);
  });
});
