// Issue 22 item 2: exportLost() at a source with lost memory, through JSON, importLost() at a fresh
// destination over fresh files with the same guest-physical ranges and other names: the same lost
// frames by guest-physical address, and nothing else.
import { describe, expect, it } from 'vitest';
import type { LostManifest } from '../src/index';
import { native, PageState } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const RAM = 0x0n;
const HIGH = 0x1_0000_0000n;

describe('exportLost -> JSON -> importLost', () => {
  it('round trip: the destination has the same lost frames by guest-physical address', async () => {
    const src = openEngine();
    const low = src.mapRegion({ name: 'pc.ram', path: hugeFile('src-lo'), size: 6 * MiB, guestPhysAddr: RAM });
    const shared = src.mapRegion({ name: 'pc.shared', path: hugeFile('src-sh'), size: 4 * MiB, guestPhysAddr: HIGH, share: true });
    fillPattern(low, 1);
    fillPattern(shared, 1);
    src.injectPoison(low, 3 * SUB, { mode: 'simulate' });
    src.injectPoison(low, 4 * MiB + 77 * SUB, { mode: 'simulate' });
    src.injectPoison(shared, 2 * MiB + 9 * SUB, { mode: 'simulate' }); // refused: the whole huge page
    await src.whenIdle({ timeoutMs: 10_000 });
    src.injectPoison(low, 4 * SUB, { mode: 'simulate' }); // split-poison: a split page loses another frame
    await src.whenIdle({ timeoutMs: 10_000 });
    const m = src.exportLost();
    expect(m).toEqual({
      format: 'hugetlb-ras-lost',
      version: 1,
      regions: [
        {
          name: 'pc.ram',
          guestPhysAddr: '0x0',
          size: 6 * MiB,
          hugePageSize: 2 * MiB,
          lost: [
            { guestPhysAddr: '0x3000', size: SUB },
            { guestPhysAddr: '0x4000', size: SUB },
            { guestPhysAddr: '0x' + (4 * MiB + 77 * SUB).toString(16), size: SUB },
          ],
        },
        { name: 'pc.shared', guestPhysAddr: '0x100000000', size: 4 * MiB, hugePageSize: 2 * MiB, lost: [{ guestPhysAddr: '0x100200000', size: 2 * MiB }] },
      ],
    });
    const wire: unknown = JSON.parse(JSON.stringify(m));
    const key = (p: { guestPhysAddr: bigint; size: number }) => `${p.guestPhysAddr.toString(16)}/${p.size}`;
    const srcLost = src.lostPages().map(key);
    src.close();

    const dst = openEngine();
    const a = dst.mapRegion({ name: 'ram-below-4g', path: hugeFile('dst-lo'), size: 6 * MiB, guestPhysAddr: RAM });
    const b = dst.mapRegion({ name: 'ram-shared', path: hugeFile('dst-sh'), size: 4 * MiB, guestPhysAddr: HIGH, share: true });
    fillPattern(a, 1); // the data arrived before the import
    expect(dst.importLost(wire)).toEqual({ imported: 4, alreadyLost: 0 });
    expect(dst.lostPages().map(key)).toEqual(srcLost);
    expect(new Set(dst.lostPages().map((p) => p.cause))).toEqual(new Set(['imported']));
    expect([...native.pageStates(a.id)]).toEqual([PageState.Split, PageState.Normal, PageState.Split]);
    expect([...native.pageStates(b.id)]).toEqual([PageState.Normal, PageState.Lost]);
    const v = verifyPattern(a, 1);
    expect(v.wrongBytes).toBe(0);
    expect(v.unreadableOffsets).toEqual([3 * SUB, 4 * SUB, 4 * MiB + 77 * SUB]);
    // The destination exports what it imported: the manifest travels on unchanged but for the names.
    const again = dst.exportLost();
    const rename = (x: LostManifest) => x.regions.map((r) => ({ ...r, name: '' }));
    expect(rename(again)).toEqual(rename(m));
  });

  it('an engine with nothing lost exports every region with an empty list, and imports it as nothing', () => {
    const engine = openEngine();
    engine.mapRegion({ name: 'r', path: hugeFile('empty'), size: 2 * MiB, guestPhysAddr: 0x10_0000n * 2n });
    const m = engine.exportLost();
    expect(m.regions).toEqual([{ name: 'r', guestPhysAddr: '0x200000', size: 2 * MiB, hugePageSize: 2 * MiB, lost: [] }]);
    expect(engine.importLost(m)).toEqual({ imported: 0, alreadyLost: 0 });
    expect(engine.lostPages()).toEqual([]);
  });
});
