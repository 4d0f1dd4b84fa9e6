// Issue 22 item 2: a manifest that is malformed, of an unknown version, or names guest memory no
// mapped region covers is refused with ERR_BAD_MANIFEST and changes nothing (ledger, journal bytes,
// page states, memory).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LostManifest } from '../src/index';
import { native } from '../src/native';
import { fillPattern, verifyPattern } from '../src/testing';
import { hugeFile, MiB, openEngine, SUB } from './helpers';

const GPA = 0x4000_0000n;
const hex = (v: bigint) => '0x' + v.toString(16);

function good(): LostManifest {
  return {
    format: 'hugetlb-ras-lost',
    version: 1,
    regions: [
      {
        name: 'ram',
        guestPhysAddr: hex(GPA),
        size: 8 * MiB,
        hugePageSize: 2 * MiB,
        lost: [
          { guestPhysAddr: hex(GPA + BigInt(3 * SUB)), size: SUB },
          { guestPhysAddr: hex(GPA + BigInt(2 * MiB)), size: 2 * MiB },
        ],
      },
    ],
  };
}

type Mutate = (m: any) => unknown;
const BAD: [string, Mutate][] = [
  ['not an object', () => 'manifest'],
  ['null', () => null],
  ['an array', () => []],
  ['a class instance', (m) => Object.assign(new (class X {})(), m)],
  ['wrong format', (m) => ({ ...m, format: 'hugetlb-ras' })],
  ['no format', ({ format: _f, ...m }) => m],
  ['unknown version', (m) => ({ ...m, version: 2 })],
  ['version as a string', (m) => ({ ...m, version: '1' })],
  ['unknown top-level key', (m) => ({ ...m, extra: 1 })],
  ['regions not an array', (m) => ({ ...m, regions: {} })],
  ['region not an object', (m) => ({ ...m, regions: [1] })],
  ['unknown region key', (m) => (m.regions[0].foo = 'bar', m)],
  ['region without lost', (m) => (delete m.regions[0].lost, m)],
  ['region name not a string', (m) => ((m.regions[0].name = 5), m)],
  ['guestPhysAddr a number', (m) => ((m.regions[0].guestPhysAddr = 0x4000_0000), m)],
  ['guestPhysAddr uppercase hex', (m) => ((m.regions[0].guestPhysAddr = '0X40000000'), m)],
  ['guestPhysAddr a bigint', (m) => ((m.regions[0].guestPhysAddr = GPA), m)],
  ['guestPhysAddr past 64 bits', (m) => ((m.regions[0].guestPhysAddr = '0x10000000000000000'), m)],
  ['hugePageSize 4096', (m) => ((m.regions[0].hugePageSize = 4096), m)],
  ['size not a multiple of the huge page size', (m) => ((m.regions[0].size = 8 * MiB + SUB), m)],
  ['size 0', (m) => ((m.regions[0].size = 0), m)],
  ['size fractional', (m) => ((m.regions[0].size = 8.5 * MiB), m)],
  ['frame not an object', (m) => ((m.regions[0].lost[0] = '0x40003000'), m)],
  ['unknown frame key', (m) => ((m.regions[0].lost[0].cause = 'recovered'), m)],
  ['frame without size', (m) => (delete m.regions[0].lost[0].size, m)],
  ['frame size 8192', (m) => ((m.regions[0].lost[0].size = 2 * SUB), m)],
  ['frame not 4 KiB aligned', (m) => ((m.regions[0].lost[0].guestPhysAddr = hex(GPA + 100n)), m)],
  ['whole frame not huge-page aligned', (m) => ((m.regions[0].lost[1].guestPhysAddr = hex(GPA + BigInt(2 * MiB + SUB))), m)],
  ['frames descending', (m) => (m.regions[0].lost.reverse(), m)],
  ['a duplicate frame', (m) => (m.regions[0].lost.splice(1, 0, { ...m.regions[0].lost[0] }), m)],
  ['a frame inside a whole frame', (m) => (m.regions[0].lost.push({ guestPhysAddr: hex(GPA + BigInt(2 * MiB + SUB)), size: SUB }), m)],
  ['a frame before its region', (m) => (m.regions[0].lost.unshift({ guestPhysAddr: hex(GPA - BigInt(SUB)), size: SUB }), m)],
  ['a frame past its region', (m) => (m.regions[0].lost.push({ guestPhysAddr: hex(GPA + BigInt(8 * MiB)), size: SUB }), m)],
  ['overlapping regions', (m) => (m.regions.push({ ...m.regions[0], name: 'other', lost: [] }), m)],
  // Well formed, but this engine maps no such memory (the last frame, after good ones).
  [
    'a frame no mapped region covers',
    (m) => (m.regions.push({ name: 'hi', guestPhysAddr: hex(GPA + BigInt(64 * MiB)), size: 2 * MiB, hugePageSize: 2 * MiB, lost: [{ guestPhysAddr: hex(GPA + BigInt(64 * MiB)), size: SUB }] }), m),
  ],
  [
    'a frame that straddles two mapped regions',
    // The source's huge pages were placed differently: a whole 2 MiB frame across two regions here.
    (m) => ({ ...m, regions: [{ name: 'big', guestPhysAddr: hex(GPA + BigInt(7 * MiB)), size: 2 * MiB, hugePageSize: 2 * MiB, lost: [{ guestPhysAddr: hex(GPA + BigInt(7 * MiB)), size: 2 * MiB }] }] }),
  ],
];

describe('importLost refuses a bad manifest and changes nothing', () => {
  it.each(BAD)('%s: ERR_BAD_MANIFEST', async (_what, mutate) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ras-manifest-'));
    const journalPath = path.join(dir, 'journal');
    try {
      const engine = openEngine({ journalPath });
      // 8 MiB at GPA, and a region right after it whose file is elsewhere (the straddle case).
      const region = engine.mapRegion({ name: 'dst', path: hugeFile('man'), size: 8 * MiB, guestPhysAddr: GPA });
      engine.mapRegion({ name: 'dst2', path: hugeFile('man2'), size: 2 * MiB, guestPhysAddr: GPA + BigInt(8 * MiB) });
      fillPattern(region, 9);
      engine.injectPoison(region, 6 * MiB + SUB, { mode: 'simulate' });
      await engine.whenIdle({ timeoutMs: 10_000 });
      {
        const ledger = JSON.stringify(engine.lostPages(), (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
        const journal = fs.readFileSync(journalPath);
        const states = [...native.pageStates(region.id)];
        const m = mutate(good());
        expect(() => engine.importLost(m)).toThrow(expect.objectContaining({ code: 'ERR_BAD_MANIFEST' }));
        expect(JSON.stringify(engine.lostPages(), (_k, v) => (typeof v === 'bigint' ? v.toString() : v))).toBe(ledger);
        expect(fs.readFileSync(journalPath).equals(journal)).toBe(true);
        expect([...native.pageStates(region.id)]).toEqual(states);
        const v = verifyPattern(region, 9);
        expect(v.wrongBytes).toBe(0);
        expect(v.unreadableOffsets).toEqual([6 * MiB + SUB]);
        // The good manifest is taken by the same engine: the refusal was the input's, not the state's.
        expect(engine.importLost(good())).toEqual({ imported: 2, alreadyLost: 0 });
      }
      engine.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a region of the manifest with no lost frames need not be mapped here', () => {
    const engine = openEngine();
    engine.mapRegion({ name: 'dst', path: hugeFile('man'), size: 8 * MiB, guestPhysAddr: GPA });
    const m = good();
    m.regions.push({ name: 'unmapped', guestPhysAddr: '0x800000000', size: 2 * MiB, hugePageSize: 2 * MiB, lost: [] });
    expect(engine.importLost(m)).toEqual({ imported: 2, alreadyLost: 0 });
  });

  it('a closed or handed-over engine refuses before reading the manifest', () => {
    const engine = openEngine();
    engine.close();
    expect(() => engine.importLost(good())).toThrow(expect.objectContaining({ code: 'ERR_ENGINE_CLOSED' }));
  });
});
