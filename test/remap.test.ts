// unmapRegion() then mapRegion() in one engine: this life's losses and split pages apply to the new
// mapping as a restart's would (the private memory of a split page went with the unmap), not only
// what the journal held when the engine opened; a reset in between clears them.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';
import { fillPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const BUS_MCEERR_AO = 5;

describe('unmap, then map again in the same engine', () => {
  it("this life's lost frame and split page are there again; after a reset they are not", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-remap-'));
    const engine = openEngine({ journalPath: path.join(dir, 'j') });
    const file = hugeFile('remap');
    const spec = { name: 'ram', path: file, size: 6 * MiB, guestPhysAddr: 0x4000_0000n };
    let region = engine.mapRegion(spec);
    fillPattern(region, 3);
    engine.injectPoison(region, 2 * MiB + 7 * SUB, { mode: 'simulate' });
    (native as unknown as { testRaise(a: bigint, c: number, l: number, n: number): void }).testRaise(region.address + BigInt(4 * MiB) + 64n, BUS_MCEERR_AO, 21, 1);
    await engine.whenIdle({ timeoutMs: 10_000 });
    region.write(4 * MiB + 100, Buffer.from('private'));
    engine.unmapRegion(region);
    region = engine.mapRegion(spec);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages().map((p) => [p.offset, p.size, p.cause])).toEqual([
      [2 * MiB, 2 * MiB, 'stale'],
      [4 * MiB, 2 * MiB, 'stale'],
    ]);
    expect(() => region.read(4 * MiB + 100, 7)).toThrow(expect.objectContaining({ code: 'ERR_POISONED' }));
    // A reset gives them back; unmapped and mapped again, they stay given back.
    await engine.resetRegion(region);
    engine.unmapRegion(region);
    region = engine.mapRegion(spec);
    await engine.whenIdle({ timeoutMs: 10_000 });
    expect(engine.lostPages()).toEqual([]);
    expect(region.read(4 * MiB + 100, 4).length).toBe(4);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
