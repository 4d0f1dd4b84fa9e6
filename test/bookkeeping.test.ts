// The lost-subpage bookkeeping alone (native/state/region.cc), on region descriptors with no memory
// behind them (testBookkeeping): the layout for any number of subpages per huge page, and what a
// region holds when nothing or little is lost. Not timed.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native';

const KiB = 1024;
const MiB = 1 << 20;
const GiB = 1 << 30;
const TiB = 2 ** 40;
const SUB = 4 * KiB;

describe('lost-subpage bookkeeping', () => {
  it('64 KiB huge pages (16 subpages, arm64): each page keeps its own bits; clearing one page leaves its neighbours', () => {
    const marks = [0 * 64 * KiB + 3 * SUB, 1 * 64 * KiB + 0 * SUB, 1 * 64 * KiB + 15 * SUB, 5 * 64 * KiB + 7 * SUB];
    const r = native.testBookkeeping(8 * 64 * KiB, 64 * KiB, marks, [0]);
    expect(r.newlyMarked).toBe(4);
    // page 0 cleared; pages 1 and 5 untouched
    expect(r.lost).toEqual([64 * KiB, 64 * KiB + 15 * SUB, 5 * 64 * KiB + 7 * SUB]);
    expect(r.lostInPageOfMark).toEqual([0, 2, 2, 1]);
  });

  it('128 KiB huge pages (32 subpages) keep each page apart too', () => {
    const marks = [31 * SUB, 128 * KiB, 2 * 128 * KiB + 31 * SUB];
    const r = native.testBookkeeping(4 * 128 * KiB, 128 * KiB, marks, [1]);
    expect(r.lost).toEqual([31 * SUB, 2 * 128 * KiB + 31 * SUB]);
    expect(r.lostInPageOfMark).toEqual([1, 0, 1]);
  });

  it('2 MiB and 1 GiB pages: the last subpage of a page and the first of the next are apart', () => {
    for (const huge of [2 * MiB, GiB]) {
      const marks = [huge - SUB, huge, 3 * huge + 100 * SUB];
      const r = native.testBookkeeping(4 * huge, huge, marks, [1]);
      expect(r.lost).toEqual([huge - SUB, 3 * huge + 100 * SUB]);
      const again = native.testBookkeeping(4 * huge, huge, [...marks, huge - SUB], []);
      expect(again.newlyMarked).toBe(3); // the same subpage twice is new once
      expect(again.lost).toEqual(marks);
    }
  });

  it('a region of 1 TiB of 1 GiB pages with nothing lost holds less than 1 MiB; one loss adds a page, not 32 KiB per huge page', () => {
    const none = native.testBookkeeping(TiB, GiB, [], []);
    expect(none.bookkeepingBytes).toBeLessThan(MiB);
    expect(none.lost).toEqual([]);
    const one = native.testBookkeeping(TiB, GiB, [517 * GiB + 12345 * SUB], []);
    expect(one.lost).toEqual([517 * GiB + 12345 * SUB]);
    expect(one.bookkeepingBytes - none.bookkeepingBytes).toBeLessThanOrEqual(8 * KiB);
  });

  it('a region of 1 TiB of 2 MiB pages with nothing lost holds less than 1 MiB', () => {
    const none = native.testBookkeeping(TiB, 2 * MiB, [], []);
    expect(none.bookkeepingBytes).toBeLessThan(MiB);
  });

  it('100 000 lost subpages over 1 000 huge pages: every one is found, in order, and clearing pages forgets exactly theirs', () => {
    const marks: number[] = [];
    for (let i = 0; i < 100_000; i++) marks.push((i % 1000) * 2 * MiB + Math.floor(i / 1000) * SUB);
    const clear = [0, 17, 999];
    const r = native.testBookkeeping(1000 * 2 * MiB, 2 * MiB, marks, clear);
    expect(r.newlyMarked).toBe(100_000);
    const want = marks.filter((m) => !clear.includes(Math.floor(m / (2 * MiB)))).sort((a, b) => a - b);
    expect(r.lost).toEqual(want);
  });
});
