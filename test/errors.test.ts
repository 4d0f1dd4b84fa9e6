import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RasEngine } from '../src/index';
import { fillPattern } from '../src/testing';
import { hugeFile, MiB, openEngine } from './helpers';

function mapsOf(file: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(file)).length;
}

describe('bad input gets a clear error and changes nothing', () => {
  it('refuses a path that is not on hugetlbfs, without creating it', () => {
    const engine = openEngine();
    const p = path.join(os.tmpdir(), `not-huge-${process.pid}`);
    expect(() => engine.mapRegion({ name: 'x', path: p, size: 2 * MiB })).toThrow(expect.objectContaining({ code: 'ERR_NOT_HUGETLBFS' }));
    expect(fs.existsSync(p)).toBe(false);
  });

  it('refuses a size or offset that is not a multiple of the huge page size', () => {
    const engine = openEngine();
    const p = hugeFile('align');
    expect(() => engine.mapRegion({ name: 'x', path: p, size: 3 * MiB })).toThrow(expect.objectContaining({ code: 'ERR_SIZE_ALIGNMENT' }));
    expect(() => engine.mapRegion({ name: 'x', path: p, size: 2 * MiB, offset: 4096 })).toThrow(expect.objectContaining({ code: 'ERR_SIZE_ALIGNMENT' }));
    expect(() => engine.mapRegion({ name: 'x', path: p, size: 0 })).toThrow(expect.objectContaining({ code: 'ERR_SIZE_ALIGNMENT' }));
    expect(fs.existsSync(p)).toBe(false);
    expect(mapsOf(p)).toBe(0);
  });

  it.each([
    [{ size: -1 }, 'ERR_OUT_OF_RANGE'],
    [{ size: NaN }, 'ERR_OUT_OF_RANGE'],
    [{ size: 2 ** 60 }, 'ERR_OUT_OF_RANGE'],
    [{ size: '2M' }, 'ERR_INVALID_ARG'],
    [{ name: '' }, 'ERR_INVALID_ARG'],
    [{ guestPhysAddr: -1n }, 'ERR_OUT_OF_RANGE'],
    [{ consumers: ['gpu'] }, 'ERR_INVALID_ARG'],
    [{ share: 'yes' }, 'ERR_INVALID_ARG'],
  ])('mapRegion(%o) -> %s', (bad, code) => {
    const engine = openEngine();
    const p = hugeFile('bad');
    expect(() => engine.mapRegion({ name: 'x', path: p, size: 2 * MiB, ...(bad as object) } as never)).toThrow(expect.objectContaining({ code }));
    expect(fs.existsSync(p)).toBe(false);
  });

  it('refuses overlapping regions (guest physical and file ranges) and duplicate names', () => {
    const engine = openEngine();
    const p = hugeFile('ov');
    engine.mapRegion({ name: 'a', path: p, size: 4 * MiB, guestPhysAddr: 0n });
    expect(() => engine.mapRegion({ name: 'b', path: hugeFile('ov2'), size: 2 * MiB, guestPhysAddr: 2n * BigInt(MiB) })).toThrow(
      expect.objectContaining({ code: 'ERR_REGION_OVERLAP' }),
    );
    expect(() => engine.mapRegion({ name: 'c', path: p, size: 2 * MiB, offset: 2 * MiB, guestPhysAddr: 1n << 33n })).toThrow(
      expect.objectContaining({ code: 'ERR_REGION_OVERLAP' }),
    );
    expect(() => engine.mapRegion({ name: 'a', path: hugeFile('dup'), size: 2 * MiB, guestPhysAddr: 1n << 34n })).toThrow(
      expect.objectContaining({ code: 'ERR_REGION_EXISTS' }),
    );
    expect(mapsOf(p)).toBe(1);
  });

  it('refuses offsets outside the region for read, write and injectPoison', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'a', path: hugeFile('range'), size: 2 * MiB });
    fillPattern(region, 1);
    const before = region.read(0, 2 * MiB);
    expect(() => region.read(2 * MiB, 1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => region.read(2 * MiB - 1, 2)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => region.write(-1, Buffer.alloc(1))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => region.write(2 * MiB - 1, Buffer.alloc(2))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => engine.injectPoison(region, 2 * MiB, { mode: 'simulate' })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => engine.injectPoison(region, 1.5, { mode: 'simulate' })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => engine.injectPoison(region, 0, { mode: 'bogus' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(region.read(0, 2 * MiB).equals(before)).toBe(true);
    expect(engine.lostPages()).toEqual([]);
  });

  it('madvise injection where MADV_HWPOISON is unusable fails with errno and syscall', () => {
    const engine = openEngine();
    const region = engine.mapRegion({ name: 'a', path: hugeFile('madv'), size: 2 * MiB });
    let usable = true;
    try {
      engine.injectPoison(region, 0, { mode: 'madvise' });
    } catch (e) {
      usable = false;
      expect(e).toMatchObject({ code: 'ERR_HWPOISON_UNAVAILABLE', syscall: 'madvise' });
      expect(typeof (e as { errno: number }).errno).toBe('number');
    }
    // On a machine with real poison support the call works instead (the lab covers that case).
    // auto prefers a userfaultfd poison marker, then hwpoison.
    if (usable) expect(engine.lostPageGuard).toBe(engine.stats().userfaultfd.kind !== 'none' ? 'uffd' : 'hwpoison');
  });

  it('a closed engine refuses every call; close is idempotent', () => {
    const engine = RasEngine.open({ reserveBytes: 0 });
    const p = hugeFile('closed');
    const region = engine.mapRegion({ name: 'a', path: p, size: 2 * MiB });
    engine.close();
    engine.close();
    expect(mapsOf(p)).toBe(0);
    expect(() => engine.mapRegion({ name: 'b', path: hugeFile('closed2'), size: 2 * MiB })).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
    expect(() => engine.injectPoison(region, 0, { mode: 'simulate' })).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
    expect(() => region.read(0, 1)).toThrow(expect.objectContaining({ code: 'ERR_REGION_CLOSED' }));
    expect(() => engine.stats()).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
  });

  it('a region of another engine is refused', () => {
    const a = openEngine();
    const b = openEngine();
    const region = a.mapRegion({ name: 'a', path: hugeFile('own'), size: 2 * MiB });
    expect(() => b.injectPoison(region, 0, { mode: 'simulate' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });
});
