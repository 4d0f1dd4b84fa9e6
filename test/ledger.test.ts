// Unit tests of the ledger (src/ledger/ledger.ts): merging, ordering, queries. No addon, no huge pages.
import { describe, expect, it } from 'vitest';
import { Ledger, type LostCause, type LostPage } from '../src/ledger/ledger';

const SUB = 4096;
const HUGE = 2 << 20;
const BASE = 0x1_0000_0000n;
const HOST = 0x7f00_0000_0000n;

function page(region: string, offset: number, size = SUB, cause: LostCause = 'recovered', base = BASE): LostPage {
  return {
    region,
    guestPhysAddr: base + BigInt(offset),
    hostAddress: HOST + BigInt(offset),
    offset,
    size,
    cause,
    hugePageIndex: Math.floor(offset / HUGE),
  };
}

const offsets = (l: Ledger) => l.all().map((p) => [p.region, p.offset, p.size]);

describe('ledger: merging', () => {
  it('records a loss once: the same frame again is not new', () => {
    const l = new Ledger();
    expect(l.add(page('ram', 0x3000))).toBe(true);
    expect(l.add(page('ram', 0x3000, SUB, 'split-poison'))).toBe(false);
    expect(l.all()).toEqual([page('ram', 0x3000)]); // the first record wins
  });

  it('a subpage inside a huge page already lost whole is not new', () => {
    const l = new Ledger();
    expect(l.add(page('ram', HUGE, HUGE, 'refused'))).toBe(true);
    expect(l.add(page('ram', HUGE + 0x5000))).toBe(false);
    expect(l.add(page('ram', 2 * HUGE - SUB))).toBe(false);
    expect(offsets(l)).toEqual([['ram', HUGE, HUGE]]);
  });

  it('a whole lost huge page absorbs the subpages recorded in it, and only those', () => {
    const l = new Ledger();
    l.add(page('ram', HUGE - SUB)); // previous huge page: stays
    l.add(page('ram', HUGE + 0x1000));
    l.add(page('ram', HUGE + 0x7000));
    l.add(page('ram', 2 * HUGE)); // next huge page: stays
    expect(l.add(page('ram', HUGE, HUGE, 'refused'))).toBe(true);
    expect(offsets(l)).toEqual([
      ['ram', HUGE - SUB, SUB],
      ['ram', HUGE, HUGE],
      ['ram', 2 * HUGE, SUB],
    ]);
  });

  it('regions are separate: the same offset in two regions is two losses', () => {
    const l = new Ledger();
    expect(l.add(page('a', 0x2000))).toBe(true);
    expect(l.add(page('b', 0x2000, SUB, 'recovered', BASE + 0x1000_0000n))).toBe(true);
    expect(l.all()).toHaveLength(2);
  });
});

describe('ledger: ordering', () => {
  it('all() is sorted by guest physical address, across regions, whatever the order of adds', () => {
    const l = new Ledger();
    l.add(page('high', 0x1000, SUB, 'recovered', 0x8_0000_0000n));
    l.add(page('low', 0x9000, SUB, 'recovered', 0x0n));
    l.add(page('low', 0x1000, SUB, 'recovered', 0x0n));
    l.add(page('mid', 0, HUGE, 'refused', 0x1_0000_0000n));
    expect(l.all().map((p) => p.guestPhysAddr)).toEqual([0x1000n, 0x9000n, 0x1_0000_0000n, 0x8_0000_1000n]);
    expect(l.all().map((p) => p.region)).toEqual(['low', 'low', 'mid', 'high']);
  });

  it('all() is a copy: changing it does not change the ledger', () => {
    const l = new Ledger();
    l.add(page('ram', 0));
    l.all().pop();
    expect(l.all()).toHaveLength(1);
  });
});

describe('ledger: queries', () => {
  it('contains() is true for any byte of a lost frame, false next to it and in other regions', () => {
    const l = new Ledger();
    l.add(page('ram', 0x4000));
    l.add(page('ram', HUGE, HUGE, 'refused'));
    expect(l.contains('ram', 0x4000)).toBe(true);
    expect(l.contains('ram', 0x4fff)).toBe(true);
    expect(l.contains('ram', 0x3fff)).toBe(false);
    expect(l.contains('ram', 0x5000)).toBe(false);
    expect(l.contains('ram', HUGE + 0x12345)).toBe(true);
    expect(l.contains('ram', 2 * HUGE)).toBe(false);
    expect(l.contains('other', 0x4000)).toBe(false);
  });

  it('clearRange() forgets the losses inside the range, counts them, keeps those it only partly covers', () => {
    const l = new Ledger();
    l.add(page('ram', 0x1000));
    l.add(page('ram', HUGE + 0x1000));
    l.add(page('ram', HUGE + 0x2000));
    l.add(page('ram', 2 * HUGE, HUGE, 'refused'));
    l.add(page('other', HUGE + 0x1000));
    expect(l.clearRange('ram', HUGE, HUGE)).toBe(2);
    expect(offsets(l)).toEqual([
      ['ram', 0x1000, SUB],
      ['other', HUGE + 0x1000, SUB],
      ['ram', 2 * HUGE, HUGE],
    ]);
    // Half of the lost huge page: it stays lost.
    expect(l.clearRange('ram', 2 * HUGE, HUGE / 2)).toBe(0);
    expect(l.contains('ram', 2 * HUGE)).toBe(true);
    expect(l.clearRange('nowhere', 0, HUGE)).toBe(0);
    // Cleared memory can be lost again.
    expect(l.add(page('ram', HUGE + 0x1000))).toBe(true);
  });

  it('forget() drops one region only', () => {
    const l = new Ledger();
    l.add(page('a', 0));
    l.add(page('b', 0, SUB, 'recovered', 0x10_0000_0000n));
    l.forget('a');
    l.forget('never-mapped');
    expect(l.all().map((p) => p.region)).toEqual(['b']);
    expect(l.contains('a', 0)).toBe(false);
  });

  it('an empty ledger has nothing', () => {
    const l = new Ledger();
    expect(l.all()).toEqual([]);
    expect(l.contains('ram', 0)).toBe(false);
  });
});
